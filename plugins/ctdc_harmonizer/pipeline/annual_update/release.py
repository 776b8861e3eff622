"""The release steps of the annual update, before approval: assemble every partner's current
records, build the release folder aside, summarize it for the approver.

Nothing here changes the store or publishes anything: a rejected (or failed) run leaves the
store and every published folder as they were.
"""

from __future__ import annotations

import logging

from ctdc_harmonizer.pipeline.results import (
    AssembledRelease,
    CarriedRecords,
    PartnerChanges,
    PartnerReceipts,
    ReleaseFolder,
    ReleaseSummary,
)
from ctdc_harmonizer.run.plan import ReleasePlan

log = logging.getLogger(__name__)
# A released row that is a version new in this release (its quality checked by Great
# Expectations now); the others are versions an earlier release checked, unchanged since.
NEW_VERSION = "_new_version"


def _release_columns(codebook) -> list[str]:
    """What the release and the linkage take of a partner's records (no pseudonym, store key
    or held-back record is copied into the combined table)."""
    from ctdc_harmonizer.columns import FILE, IDENTITY
    from ctdc_harmonizer.privacy.linkage import LINK_COLUMNS

    return [IDENTITY, FILE, *LINK_COLUMNS, *codebook.columns]


def read_carried_records(plan: ReleasePlan, partners: list[PartnerChanges]) -> CarriedRecords:
    """The records current at the base release of every partner without work this run,
    as the release takes them (coded columns as categories), into the work folder: the last
    read of the store before the commit, which the command line starts while the release is
    still being assembled (a reader waiting on that writer would wait for ever)."""
    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.store.records import carried_parquet
    from ctdc_harmonizer.warehouse.connection import warehouse

    codebook = default_codebook()
    changed = {p.partner for p in partners}
    carried = [p for p in sorted(plan.partner_plans) if p not in changed]
    work, counts = plan.work, {}
    if plan.base and carried:
        keep = _release_columns(codebook)
        with warehouse(plan.warehouse(), "reading the store") as db:
            for partner in carried:
                # The snapshot's Parquet as stored: the assembly decodes what it takes.
                parquet, counts[partner] = carried_parquet(db, partner, plan.base, keep, codebook)
                work.write_bytes(work.carried(partner), parquet)
    return CarriedRecords(release=plan.release, partners=counts, work=str(work.root))


def assemble_release(
    plan: ReleasePlan, partners: list[PartnerChanges], carried: CarriedRecords
) -> AssembledRelease:
    """Every partner's current records (changed partners from their chains, carried ones
    as read_carried_records read them) in one table, in the release's order; people found at
    two partners counted (merged under the linkage policy); both ledgers reconciled. It
    never opens the store: `ctdc run` assembles the release while the commit holds the
    store's write transaction."""
    import pandas as pd

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.columns import (
        CASE_ID,
        FILE,
        FROM_DELIVERY,
        HELD_BACK,
        IDENTITY,
        ORIGIN,
        PARTNER,
        REJECT_REPORT_COLUMNS,
        ROW,
        Outcome,
    )
    from ctdc_harmonizer.privacy import combine as privacy_combine
    from ctdc_harmonizer.privacy.linkage import LINK_COLUMNS
    from ctdc_harmonizer.release.reconcile import delivery_files, reconcile, record_ledger
    from ctdc_harmonizer.run.workdir import PartnerWork
    from ctdc_harmonizer.store.identity import release_order
    from ctdc_harmonizer.store.records import empty_records, release_records_from

    codebook = default_codebook()
    changed = {p.partner: PartnerWork(p.work, p.partner) for p in partners}
    frames, counts = [], {}
    # Only what the release and the linkage need, taken per partner before the concat.
    keep = _release_columns(codebook)
    # A release column holds a few dozen codes: as categories, taken per partner, a million
    # rows take a few MB instead of some 300 MB of text (held until the concat, then copied).
    coded = [v.name for v in codebook.variables if v.type != "year"]
    for partner in sorted(plan.partner_plans):
        if partner in changed:
            work = changed[partner]
            records = work.read_frame(work.CURRENT, columns=[HELD_BACK, CASE_ID, *keep])
            # A version new in this release has no case record id yet.
            records[NEW_VERSION] = records.pop(CASE_ID).isna().to_numpy()
            counts[partner] = work.read_json(work.CHANGE_COUNTS)
        else:
            if partner in carried.partners:  # carried forward: their records as they are
                parquet = plan.work.read_bytes(plan.work.carried(partner))
                records = release_records_from(parquet, keep, codebook)
            else:
                records = empty_records(codebook)[[HELD_BACK, *keep]]
            counts[partner] = {"previous": len(records), "current": len(records)}
            counts[partner]["held_back"] = int(records[HELD_BACK].sum())
            records[NEW_VERSION] = False
        released_rows = ~records[HELD_BACK].astype(bool).to_numpy()
        if released_rows.any():
            taken = [*keep, NEW_VERSION]
            part = records.loc[released_rows, taken] if not released_rows.all() else records[taken]
            frames.append(
                part.astype(dict.fromkeys(coded, "category")).assign(**{PARTNER: partner})
            )
        del records
    records = (
        pd.concat(_same_categories(frames, coded), ignore_index=True, copy=False)
        if frames
        else pd.DataFrame(columns=[*keep, NEW_VERSION, PARTNER]).astype(
            dict.fromkeys(coded, "category")
        )
    )
    del frames
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
    columns = [PARTNER, IDENTITY, *codebook.columns, NEW_VERSION]
    table = pd.DataFrame(
        {name: records[name].take(kept).reset_index(drop=True) for name in columns}
    )
    del records
    released = table[PARTNER].value_counts()
    merged_by = merged[PARTNER].value_counts()
    ledgers, rejects, unmapped, issues, coverage = {}, [], [], [], {}
    for partner, entry in sorted(plan.partner_plans.items()):
        files, unreadable = None, {}
        if partner in changed:
            work = changed[partner]
            if work.exists(work.STAGE_INFO):
                unreadable = work.read_json(work.STAGE_INFO).get("unreadable_cells", {})
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
            "unreadable_cells": unreadable,
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


def _same_categories(frames: list, columns: list[str]) -> list:
    """The frames with each of `columns` on one set of categories (their union), so that the
    concat keeps them categorical (pandas turns differing categories back into text)."""
    for name in columns:
        union = sorted(set().union(*(frame[name].cat.categories for frame in frames)))
        for frame in frames:
            frame[name] = frame[name].cat.set_categories(union)
    return frames


def write_receipts(plan: ReleasePlan, assembled: AssembledRelease) -> PartnerReceipts:
    """Each partner that delivered gets its receipt (release/receipts.py): what became of
    its rows, counts and row numbers only, in `<out>/receipts/<release>/<partner>/`.

    Written BEFORE the approval, on purpose: a receipt reports on the delivery, not on the
    release, so the partner learns about its rejected rows and unknown values even when the
    data team rejects this release. It changes neither the store nor any release folder; a
    rerun of the release replaces the release's receipts."""
    from ctdc_harmonizer.pipeline.results import ReceiptPaths
    from ctdc_harmonizer.release import receipts
    from ctdc_harmonizer.run import locks
    from ctdc_harmonizer.run.workdir import PartnerWork, WorkDir

    locks.check(plan.lock, plan.release)
    ledgers = WorkDir(assembled.work).read_json(WorkDir.RECONCILIATION)["partners"]
    written = {}
    for partner, root in sorted(assembled.changed.items()):
        if not plan.partner_plans[partner].delivered:
            continue  # re-harmonized only: no delivery to report on
        config = plan.partner_config(partner)
        receipt = receipts.receipt_from_work(
            PartnerWork(root, partner),
            plan.release,
            config.unmapped_min_rows,
            ledger=ledgers.get(partner),
        )
        files = receipts.write_receipt(
            receipt, receipts.receipt_folder(plan.out_path, plan.release, partner)
        )
        written[partner] = ReceiptPaths(
            json_path=str(files.json_path), html_path=str(files.html_path)
        )
        log.info(
            "partner %s: receipt written (%d rows read, %d rejected, %d problem(s))",
            partner,
            receipt.totals.rows_read,
            receipt.totals.rejected,
            len(receipt.problems),
        )
    # The folder holds the receipts of the release's latest run only: a partner that
    # delivered in a replaced run of this release but not in this one keeps no receipt.
    receipts.remove_other_receipts(plan.out_path, plan.release, keep=set(written))
    return PartnerReceipts(release=plan.release, receipts=written)


def build_release_folder(plan: ReleasePlan, assembled: AssembledRelease) -> ReleaseFolder:
    """Build the complete release folder aside (CSV, Parquet, reconciliation, restricted
    reports, Great Expectations, metadata); published only after approval. It never opens
    the store: `ctdc run` builds it while the commit holds the store's write transaction
    (tests/pipeline/test_plan.py checks)."""
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
    table = work.read_frame(work.RECORDS, columns=[*codebook.columns, NEW_VERSION])
    checked = table.pop(NEW_VERSION).astype(bool).to_numpy()
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
        checked=checked,
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
    arrived = plan.arrivals.lines()
    synthesis = load_synthesis_config()
    # What the synthesis of this release would do to each person's privacy loss (issue 19).
    summary["body"] += approval_note(plan.warehouse(), synthesis.dp, synthesis.per_person)
    return ReleaseSummary(
        release=plan.release,
        rows=summary["rows"],
        partners=summary["partners"],
        not_read=summary["not_read"],
        subject=f"Commit and publish release {plan.release}?",
        # Who delivered by the deadline and who did not (the store carries them), and why.
        body="\n\n".join([summary["body"], *(["\n".join(arrived)] if arrived else [])]),
        report=folder.staged_dir,
    )
