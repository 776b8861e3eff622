"""The steps of the annual update: what the CLI runs in a row and the DAG runs as tasks.

Each step takes the typed `RunPlan` and returns a small typed result (run/results.py) of paths
and counts, all that may travel through XCom or a log line. Frames stay in the run's work folder
(run/workdir.py), which owns every intermediate file; the logic lives in the stage packages
(ingest, harmonize, privacy, release, warehouse) and a step only wires them.
"""

from __future__ import annotations

import logging
import shutil

import pandas as pd

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.columns import FILE, PARTNER, PSEUDONYM, ROW, Outcome
from ctdc_harmonizer.errors import CoverageError, CtdcError
from ctdc_harmonizer.harmonize import contracts
from ctdc_harmonizer.harmonize.coverage import coverage_message, coverage_report
from ctdc_harmonizer.harmonize.mapper import map_partner
from ctdc_harmonizer.harmonize.unmapped import restrict_unmapped
from ctdc_harmonizer.ingest.deidentify import deidentify
from ctdc_harmonizer.ingest.duplicates import duplicate_rows
from ctdc_harmonizer.ingest.extract import read_extract
from ctdc_harmonizer.ingest.files import find_extract_files
from ctdc_harmonizer.ingest.withdrawals import load_withdrawals, match_keys
from ctdc_harmonizer.privacy import combine as privacy_combine
from ctdc_harmonizer.privacy import keys as privacy_keys
from ctdc_harmonizer.privacy import registry
from ctdc_harmonizer.privacy import stage as privacy_stage
from ctdc_harmonizer.release import folder as release_folder
from ctdc_harmonizer.release.combine import combine_partners
from ctdc_harmonizer.release.metadata import release_metadata
from ctdc_harmonizer.release.reconcile import partner_files, reconcile
from ctdc_harmonizer.run import locks, storage
from ctdc_harmonizer.run.plan import RunPlan
from ctdc_harmonizer.run.results import (
    Checked,
    Combined,
    Finished,
    HandedOff,
    Mapped,
    PurgeCounts,
    ReleaseWritten,
    Staged,
    WarehouseLoaded,
)
from ctdc_harmonizer.run.storage import WorkStorageUnavailableError
from ctdc_harmonizer.run.workdir import COMBINED, OVERLAPS, RECONCILIATION, PartnerWork

log = logging.getLogger(__name__)
EMPTY_WITHDRAWN = pd.DataFrame({"pseudonym": [], "partner": []}, dtype="string")


def warehouse_url(plan: RunPlan, url: str | None = None) -> str:
    """The warehouse of this run: the CLI's --warehouse, else $CTDC_WAREHOUSE_URL, else the
    SQLite file in the out folder."""
    from ctdc_harmonizer.warehouse.schema import default_warehouse_url

    return url or plan.warehouse_url or default_warehouse_url(plan.out)


# --- one partner's chain --------------------------------------------------------------------


def stage_partner(plan: RunPlan, partner: str) -> Staged:
    """Read + de-identify every file of a partner; erase withdrawals; merge duplicates.

    Identifiers (names, dates of birth, record ids, notes) do not leave this step: what it
    writes holds codes, years, ages and keyed hashes only.
    """
    config = plan.partner_config(partner)
    landing = plan.landing_path
    work = plan.work.partner(partner)
    withdrawals = load_withdrawals(config, landing)  # None when none were delivered
    key = privacy_keys.pseudonym_key()
    frames, keys, private, files = [], [], [], {}
    for path in find_extract_files(config, landing):
        result = read_extract(config, path, also=privacy_stage.read_columns(config, withdrawals))
        keys.append(match_keys(withdrawals, result.frame))  # before identifiers are dropped
        private.append(privacy_stage.private_columns(config, result.frame, key))
        frames.append(deidentify(config, result.frame))
        files[result.file] = {
            "sha256": result.sha256,
            "rows_read": len(result.frame),
            "blank_rows_skipped": result.blank_rows,
            "undeclared_columns_dropped": result.dropped_columns,
        }
    staged = pd.concat(frames, ignore_index=True)
    fate = pd.Series("", index=staged.index, dtype="string")
    hashes = pd.concat(private, ignore_index=True)
    erased, withdrawn, erased_by_registry = privacy_stage.apply_withdrawals(
        warehouse_url(plan), config, withdrawals, keys, hashes, key
    )
    fate[erased] = Outcome.ERASED
    if config.record_id:
        # The same case delivered twice (or cross-referenced between systems): one copy stays.
        fate[duplicate_rows(staged[config.record_id], live=fate == "")] = Outcome.DUPLICATES_MERGED
        staged = staged.drop(columns=[config.record_id])
    removed = staged.loc[fate != "", [FILE, ROW]].assign(outcome=fate[fate != ""], reason="")
    staged = staged.loc[fate == ""].reset_index(drop=True)
    work.write_frame(work.PRIVATE, hashes.loc[(fate == "").to_numpy()].reset_index(drop=True))
    work.write_frame(work.WITHDRAWN, withdrawn)
    staged_path = work.write_frame(work.STAGED, staged)
    work.write_frame(work.REMOVED, removed)
    work.write_json(work.STAGE_INFO, {"partner": partner, "files": files})
    result = Staged(
        partner=partner,
        files=len(files),
        rows_read=int(sum(f["rows_read"] for f in files.values())),
        erased=int((fate == Outcome.ERASED).sum()),
        duplicates_merged=int((fate == Outcome.DUPLICATES_MERGED).sum()),
        erased_by_registry=erased_by_registry,
        staged=staged_path,
    )
    log.info(
        "partner %s: %d file(s), %d rows read, %d erased, %d duplicates merged",
        partner,
        result.files,
        result.rows_read,
        result.erased,
        result.duplicates_merged,
    )
    return result


def check_contract(plan: RunPlan, partner: str) -> Checked:
    """The staged frame honours the partner's field contract (pandera, no values reported)."""
    config = plan.partner_config(partner)
    work = plan.work.partner(partner)
    staged = work.read_frame(work.STAGED)
    contracts.validate(
        contracts.staged_schema(config), staged, where=f"partner '{partner}' staged extract"
    )
    return Checked(partner=partner, rows=len(staged))


def map_to_codebook(plan: RunPlan, partner: str) -> Mapped:
    """Harmonize a partner's staged rows; apply the coverage gate."""
    config = plan.partner_config(partner)
    work = plan.work.partner(partner)
    staged = work.read_frame(work.STAGED)
    result = map_partner(staged, config, default_codebook(), year_max=plan.release_year)
    harmonized = result.harmonized.assign(**{PARTNER: partner})
    kept = (result.outcomes["outcome"] == Outcome.HARMONIZED).to_numpy()  # same order as staged
    hashes = work.read_frame(work.PRIVATE).loc[kept].reset_index(drop=True)
    harmonized = pd.concat([harmonized, hashes], axis=1)  # PRIVACY: pseudonym + linkage keys
    harmonized_path = work.write_frame(work.HARMONIZED, harmonized)
    work.write_frame(work.OUTCOMES, result.outcomes)
    # Only the restricted list ever reaches a file (k rows, coded fields, not shifted).
    restricted = restrict_unmapped(
        result.unmapped,
        result.unknown_rows,
        len(staged),
        config.coded_fields,
        config.unmapped_min_rows,
    )
    work.write_table(work.UNMAPPED, restricted)
    work.write_table(work.ISSUES, result.issues)
    coverage = coverage_report(result.unknown_rows, len(staged), config)
    work.write_json(work.COVERAGE, coverage)
    mapped = Mapped(
        partner=partner,
        harmonized=len(result.harmonized),
        rejected=int((result.outcomes["outcome"] == Outcome.REJECTED).sum()),
        excluded=int((result.outcomes["outcome"] == Outcome.EXCLUDED).sum()),
        unmapped_values=len(result.unmapped),
        harmonized_path=harmonized_path,
    )
    log.info(
        "partner %s: %d harmonized, %d rejected, %d excluded, %d unmapped value(s)",
        partner,
        mapped.harmonized,
        mapped.rejected,
        mapped.excluded,
        mapped.unmapped_values,
    )
    if coverage["failing_fields"]:
        raise CoverageError(coverage_message(coverage, result.unmapped, config))
    return mapped


def check_codebook(plan: RunPlan, partner: str) -> Checked:
    """The partner's harmonized rows satisfy the pandera schema generated from the codebook."""
    codebook = default_codebook()
    work = plan.work.partner(partner)
    frame = work.read_frame(work.HARMONIZED, columns=codebook.columns)
    schema = contracts.harmonized_schema_for(codebook, plan.release_year)
    contracts.validate(schema, frame, where=f"partner '{partner}' harmonized rows")
    return Checked(partner=partner, rows=len(frame))


def partner_chain(plan: RunPlan, partner: str) -> Mapped:
    """read -> validate contract -> map -> validate against the codebook, for one partner."""
    stage_partner(plan, partner)
    check_contract(plan, partner)
    mapped = map_to_codebook(plan, partner)
    check_codebook(plan, partner)
    return mapped


# --- the release -----------------------------------------------------------------------------


def _partner_reconciliation(work: PartnerWork) -> dict[str, dict]:
    linked = work.read_frame(work.LINKED)[FILE] if work.exists(work.LINKED) else pd.Series([])
    return partner_files(
        work.read_json(work.STAGE_INFO)["files"],
        work.read_frame(work.OUTCOMES),
        work.read_frame(work.REMOVED),
        linked,
    )


def combine(plan: RunPlan) -> Combined:
    """All partners' harmonized rows in one frame, in an order unrelated to the input order;
    persons found at two partners counted (merged under the linkage policy); reconciled."""
    codebook = default_codebook()
    partners = sorted(plan.partners)
    works = {p: plan.work.partner(p) for p in partners}
    combined = combine_partners(
        [works[p].read_frame(works[p].HARMONIZED) for p in partners], plan.release
    )
    # PRIVACY: cross-partner overlaps counted (merged under policy), linkage keys dropped.
    policy = privacy_combine.linkage_policy(plan.mappings)
    linked = privacy_combine.link(combined, plan.partners, codebook.columns, policy)
    for partner, files in linked.merged_files.items():
        works[partner].write_frame(PartnerWork.LINKED, files.to_frame(FILE))
    plan.work.write_json(OVERLAPS, linked.matrix)
    combined = linked.kept[[*codebook.columns, PARTNER, FILE, PSEUDONYM]]
    combined_path = plan.work.write_frame(COMBINED, combined)
    recon = reconcile(plan.release, {p: _partner_reconciliation(works[p]) for p in partners})
    recon["overlaps"] = linked.summary
    plan.work.write_json(RECONCILIATION, recon)
    log.info(
        "release %s: %d harmonized rows from %d partner(s)",
        plan.release,
        len(combined),
        len(partners),
    )
    return Combined(
        rows=len(combined), combined=combined_path, invariant_holds=recon["invariant_holds"]
    )


def write_release(plan: RunPlan) -> ReleaseWritten:
    """Build the release folder aside (CSV, Parquet, reconciliation, restricted unmapped
    values, metadata); `load_warehouse` publishes it together with the warehouse load."""
    locks.check(plan.lock, plan.release)
    codebook = default_codebook()
    target = plan.release_path
    release_folder.check_replaceable(target)
    partners = sorted(plan.partners)
    works = {p: plan.work.partner(p) for p in partners}
    recon = plan.work.read_json(RECONCILIATION)
    harmonized = plan.work.read_frame(COMBINED, columns=codebook.columns)
    configs = {p: plan.partner_config(p) for p in partners}
    metadata = release_metadata(
        plan.release, plan.release_year, len(harmonized), recon, configs, codebook
    )
    metadata["partners_without_delivery"] = plan.partners_without_delivery or []
    metadata["unmapped_partner_folders"] = plan.unmapped_partner_folders or []
    content = release_folder.ReleaseContent(
        release=plan.release,
        release_year=plan.release_year,
        harmonized=harmonized,
        reconciliation=recon,
        unmapped=[w.read_table(w.UNMAPPED) for w in works.values()],
        issues=[w.read_table(w.ISSUES) for w in works.values()],
        outcomes={p: w.read_frame(w.OUTCOMES) for p, w in works.items()},
        coverage={p: w.read_json(w.COVERAGE) for p, w in works.items()},
        overlaps=plan.work.read_json(OVERLAPS) if plan.work.exists(OVERLAPS) else None,
        metadata=metadata,
    )
    staging = plan.staging_dir
    quality = release_folder.build_release(content, staging, codebook)
    written = ReleaseWritten(
        release=plan.release,
        release_dir=str(target),
        staged_dir=str(staging),
        folder_sha256=release_folder.folder_digest(staging),
        rows=len(harmonized),
        totals=recon["totals"],
        quality=quality,
    )
    log.info("release %s staged for %s (%d rows)", plan.release, target, written.rows)
    return written


def load_warehouse(plan: RunPlan, url: str | None = None) -> WarehouseLoaded:
    """Load the staged release into the warehouse (one transaction, idempotent per release
    label), then publish the release folder; record withdrawals and purge earlier releases;
    then drop the intermediates."""
    from ctdc_harmonizer.release.publish import load_and_publish

    locks.check(plan.lock, plan.release)
    url = warehouse_url(plan, url)
    counts = load_and_publish(
        plan.release,
        plan.staging_dir,
        plan.release_path,
        plan.aside_dir,
        plan.work.read_frame(COMBINED),
        url,
    )
    works = [plan.work.partner(p) for p in sorted(plan.partners)]
    withdrawn = [w.read_frame(w.WITHDRAWN) for w in works if w.exists(w.WITHDRAWN)]
    withdrawn = pd.concat(withdrawn, ignore_index=True) if withdrawn else EMPTY_WITHDRAWN
    # PRIVACY: withdrawals registered once, registered persons purged from earlier releases.
    purged = registry.record_and_purge(url, withdrawn, plan.out_path, plan.release)
    try:  # the release is published: a storage hiccup now must not fail (and rerun) the load
        plan.work.remove()
    except WorkStorageUnavailableError as exc:
        log.warning("release %s: intermediates left for the teardown: %s", plan.release, exc)
    shutil.rmtree(plan.local_path, ignore_errors=True)  # its staged folder is published now
    loaded = WarehouseLoaded(**counts, privacy=PurgeCounts(**purged))
    log.info("warehouse: %d case records for release %s", loaded.case_records, plan.release)
    return loaded


def hand_off(plan: RunPlan) -> HandedOff:
    """Write the release's hand-off folder for synthesis (table + manifest)."""
    from ctdc_harmonizer.synthesis.handoff import write_handoff

    handed = HandedOff(**write_handoff(plan.release_path))
    log.info("release %s handed off in %s (%d rows)", plan.release, handed.handoff, handed.rows)
    return handed


def finish_run(plan: RunPlan) -> Finished:
    """End of a run, successful or not: remove the private work folders (staged frames, the
    unmapped list; on shared storage the run's whole prefix) and give the release's lock back.
    Idempotent; the DAG's teardown task. A prefix the store does not let it remove fails the
    task (retried) and keeps the lock."""
    if plan.nothing_delivered:  # the plan took no lock and made no folder
        return Finished(release=plan.release, work_folder_removed=False)
    removed = plan.local_path.exists()
    shutil.rmtree(plan.local_path, ignore_errors=True)
    try:
        removed = plan.work.remove() or removed
    except CtdcError:
        # Intermediates still on the shared store: the lock is kept, so that no new run of
        # this release starts under the same prefix while this teardown retries.
        log.error(
            "release %s: intermediates under %s not removed; the release stays locked until "
            "they are (the teardown retries)",
            plan.release,
            storage.shown(plan.work_dir),
        )
        raise
    locks.release(plan.lock)
    log.info("release %s: work folder removed, lock released", plan.release)
    return Finished(release=plan.release, work_folder_removed=removed)


def release_outcome(summary: dict | None, published: dict | None, decision: dict | None) -> str:
    """How the run ended, for the data team: published, or why not (an error, so the run
    shows as failed). `decision` is the approval's recorded answer (None: nobody answered
    before the timeout, or the step was never reached)."""
    if not summary:
        raise CtdcError("release not published: an earlier step failed")
    if published:
        return f"release {summary['release']} published"
    why = f"rejected by {decision['by'] or 'the data team'}" if decision else "no approval"
    raise CtdcError(f"release {summary['release']} NOT published: {why}")
