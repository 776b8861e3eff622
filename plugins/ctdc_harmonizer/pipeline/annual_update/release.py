"""The release steps of the annual update, before approval: assemble every partner's current
records, build the release folder aside, summarize it for the approver.

Nothing here changes the store or publishes anything: a rejected (or failed) run leaves the
store and every published folder as they were.
"""

from __future__ import annotations

import logging

from ctdc_harmonizer.pipeline.results import (
    AssembledRelease,
    PartnerChanges,
    ReleaseFolder,
    ReleaseSummary,
)
from ctdc_harmonizer.run.plan import ReleasePlan

log = logging.getLogger(__name__)


def assemble_release(plan: ReleasePlan, partners: list[PartnerChanges]) -> AssembledRelease:
    """Every partner's current records (changed partners from their chains, carried ones
    from the store) in one table, in the release's order; people found at two partners
    counted (merged under the linkage policy); both ledgers reconciled."""
    import pandas as pd

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.columns import (
        FILE,
        FROM_DELIVERY,
        HELD_BACK,
        IDENTITY,
        ORIGIN,
        PARTNER,
        PSEUDONYM,
        REJECT_REPORT_COLUMNS,
        ROW,
        Outcome,
    )
    from ctdc_harmonizer.privacy import combine as privacy_combine
    from ctdc_harmonizer.privacy.linkage import LINK_COLUMNS
    from ctdc_harmonizer.release.reconcile import delivery_files, reconcile, record_ledger
    from ctdc_harmonizer.run.workdir import PartnerWork
    from ctdc_harmonizer.store.identity import release_order
    from ctdc_harmonizer.store.records import current_records, empty_records
    from ctdc_harmonizer.warehouse.connection import warehouse

    codebook = default_codebook()
    changed = {p.partner: PartnerWork(p.work, p.partner) for p in partners}
    frames, counts = [], {}
    carried = [p for p in sorted(plan.partner_plans) if p not in changed]
    stored = {}
    if plan.base and carried:  # carried forward: their records as they are, at no cost
        with warehouse(plan.warehouse(), "reading the store") as db:
            stored = {p: current_records(db, p, plan.base, codebook) for p in carried}
    for partner in sorted(plan.partner_plans):
        if partner in changed:
            work = changed[partner]
            records = work.read_frame(work.CURRENT)
            counts[partner] = work.read_json(work.CHANGE_COUNTS)
        else:
            records = stored.get(partner, empty_records(codebook))
            counts[partner] = {"previous": len(records), "current": len(records)}
            counts[partner]["held_back"] = int(records[HELD_BACK].sum())
        if len(records):
            frames.append(records.assign(**{PARTNER: partner}))
    keep = [PARTNER, IDENTITY, FILE, PSEUDONYM, HELD_BACK, *LINK_COLUMNS, *codebook.columns]
    records = (
        pd.concat([f[keep] for f in frames], ignore_index=True)
        if frames
        else pd.DataFrame(columns=keep)
    )
    del frames
    records = records[~records[HELD_BACK].astype(bool)].reset_index(drop=True)
    order = release_order(plan.release, records[IDENTITY])
    # PRIVACY: cross-partner overlaps counted over every current record (merged under the
    # policy), on the keys alone; the records are then taken once, in the release's order.
    keys = records[[PARTNER, FILE, *LINK_COLUMNS]].iloc[order].reset_index(drop=True)
    completeness = records[codebook.columns].notna().sum(axis=1).to_numpy()[order]
    policy = privacy_combine.linkage_policy(plan.mappings)
    linked = privacy_combine.link(keys, completeness, sorted(plan.partner_plans), policy)
    merged = records[[PARTNER, IDENTITY]].iloc[order[linked.merged]].reset_index(drop=True)
    kept = order[~linked.merged]
    del keys, completeness
    columns = [PARTNER, IDENTITY, *codebook.columns]
    table = pd.DataFrame(
        {name: records[name].take(kept).reset_index(drop=True) for name in columns}
    )
    del records
    released = table[PARTNER].value_counts()
    merged_by = merged[PARTNER].value_counts()
    ledgers, rejects, unmapped, issues, coverage = {}, [], [], [], {}
    for partner, entry in sorted(plan.partner_plans.items()):
        files = None
        if partner in changed:
            work = changed[partner]
            outcomes = work.read_frame(work.OUTCOMES)
            ours = outcomes[outcomes[ORIGIN] == FROM_DELIVERY]
            if work.exists(work.DELIVERY):
                files = delivery_files(work.read_json(work.DELIVERY), ours)
            bad = ours[ours["outcome"] == Outcome.REJECTED]
            rejects.append(
                pd.DataFrame(
                    {
                        "partner": partner,
                        "file": bad[FILE],
                        "row": bad[ROW],
                        "column": bad["column"],
                        "reason": bad["reason"],
                    }
                )
            )
            unmapped.append(work.read_table(work.UNMAPPED))
            issues.append(work.read_table(work.ISSUES))
            coverage[partner] = work.read_json(work.COVERAGE)
        ledger = record_ledger(
            counts[partner], int(released.get(partner, 0)), int(merged_by.get(partner, 0))
        )
        if not ledger["previous"] and not ledger["current"] and files is None:
            continue  # a mapped partner that never delivered
        ledgers[partner] = {
            "state": entry.state,
            "mode": entry.mode,
            "status": entry.status,
            "last_delivery": plan.release if entry.files else entry.last_delivery,
            "releases_without_delivery": 0 if entry.files else entry.releases_without_delivery,
            "flagged": entry.flagged,
            "reharmonized": entry.reharmonize,
            "not_read": entry.not_read,
            "files": files,
            "records": ledger,
        }
    recon = reconcile(plan.release, ledgers)
    recon["sequence"] = plan.sequence
    recon["overlaps"] = linked.summary
    work = plan.work
    work.write_frame(work.RECORDS, table)
    work.write_frame(work.MERGED, merged)
    work.write_json(work.RECONCILIATION, recon)
    work.write_json(work.OVERLAPS, linked.matrix)
    empty = pd.DataFrame(columns=REJECT_REPORT_COLUMNS)
    work.write_table(work.REJECTS, pd.concat(rejects, ignore_index=True) if rejects else empty)
    work.write_table(
        work.UNMAPPED, pd.concat(unmapped, ignore_index=True) if unmapped else pd.DataFrame()
    )
    work.write_table(
        work.ISSUES, pd.concat(issues, ignore_index=True) if issues else pd.DataFrame()
    )
    work.write_json(work.COVERAGE, coverage)
    withdrawn = [w.read_frame(w.WITHDRAWN) for w in changed.values() if w.exists(w.WITHDRAWN)]
    work.write_frame(
        work.WITHDRAWN,
        pd.concat(withdrawn, ignore_index=True)
        if withdrawn
        else pd.DataFrame({"pseudonym": [], "partner": []}, dtype="string"),
    )
    log.info(
        "release %s: %d records from %d partner(s) (%d changed, %d carried forward)",
        plan.release,
        len(table),
        len(ledgers),
        len(changed),
        len(ledgers) - len(set(changed) & set(ledgers)),
    )
    return AssembledRelease(
        release=plan.release,
        rows=len(table),
        partners=sorted(ledgers),
        changed={p: str(w.root) for p, w in changed.items()},
        invariant_holds=recon["invariant_holds"],
        work=str(work.root),
    )


def build_release_folder(plan: ReleasePlan, assembled: AssembledRelease) -> ReleaseFolder:
    """Build the complete release folder aside (CSV, Parquet, reconciliation, restricted
    reports, Great Expectations, metadata); published only after approval."""
    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.release import folder as release_folder
    from ctdc_harmonizer.release.metadata import release_metadata
    from ctdc_harmonizer.run import locks
    from ctdc_harmonizer.run.workdir import WorkDir

    locks.check(plan.lock, plan.release)
    codebook = default_codebook()
    target = plan.release_path
    release_folder.check_replaceable(target)
    work = WorkDir(assembled.work)
    recon = work.read_json(work.RECONCILIATION)
    table = work.read_frame(work.RECORDS, columns=codebook.columns)
    rows = len(table)
    configs = {p: plan.partner_config(p) for p in assembled.partners}
    metadata = release_metadata(
        plan.release,
        plan.release_year,
        plan.sequence,
        rows,
        recon,
        configs,
        codebook,
        plan.unmapped_partner_folders or [],
    )
    content = release_folder.ReleaseContent(
        release=plan.release,
        release_year=plan.release_year,
        harmonized=table,
        reconciliation=recon,
        unmapped=[work.read_table(work.UNMAPPED)],
        issues=[work.read_table(work.ISSUES)],
        rejects=work.read_table(work.REJECTS),
        coverage=work.read_json(work.COVERAGE),
        overlaps=work.read_json(work.OVERLAPS),
        metadata=metadata,
    )
    del table  # the content holds it until it is written
    staging = plan.staging_dir
    quality = release_folder.build_release(content, staging, codebook)
    built = ReleaseFolder(
        release=plan.release,
        staged_dir=str(staging),
        release_dir=str(target),
        folder_sha256=release_folder.folder_digest(staging),
        rows=rows,
        totals={**recon["totals"], **{f"records_{k}": v for k, v in recon["records"].items()}},
        quality=quality,
    )
    log.info("release %s built aside for %s (%d rows)", plan.release, target, rows)
    return built


def summarize_release(plan: ReleasePlan, folder: ReleaseFolder) -> ReleaseSummary:
    """What the approver reads: per partner delivered (mode) / re-harmonized / carried from
    release X / discontinued, with new, revised, retired, erased and released counts and the
    change against the previous release; quality checks. Counts only, Markdown."""
    from ctdc_harmonizer.release.report import headline
    from ctdc_harmonizer.synthesis.config import load_synthesis_config
    from ctdc_harmonizer.synthesis.people import approval_note

    summary = headline(folder.staged_dir, plan.release)
    synthesis = load_synthesis_config()
    # What the synthesis of this release would do to each person's privacy loss (issue 19).
    summary["body"] += approval_note(plan.warehouse(), synthesis.dp, synthesis.per_person)
    return ReleaseSummary(
        release=plan.release,
        rows=summary["rows"],
        partners=summary["partners"],
        subject=f"Commit and publish release {plan.release}?",
        body=summary["body"],
        report=folder.staged_dir,
    )
