"""The release steps of the annual update: combine the partners, build the release folder,
load the warehouse and publish both together, hand off to synthesis.

Each step takes the typed `RunPlan` and returns a small typed result.
"""

from __future__ import annotations

import logging
import shutil
from typing import TYPE_CHECKING

import pandas as pd

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.columns import FILE, PARTNER, PSEUDONYM
from ctdc_harmonizer.privacy import combine as privacy_combine
from ctdc_harmonizer.privacy import registry
from ctdc_harmonizer.privacy.linkage import LINK_COLUMNS
from ctdc_harmonizer.release import folder as release_folder
from ctdc_harmonizer.release.combine import permutation
from ctdc_harmonizer.release.metadata import release_metadata
from ctdc_harmonizer.release.reconcile import partner_files, reconcile
from ctdc_harmonizer.run import locks
from ctdc_harmonizer.run.plan import RunPlan
from ctdc_harmonizer.run.results import (
    Combined,
    HandedOff,
    PurgeCounts,
    ReleaseWritten,
    WarehouseLoaded,
)
from ctdc_harmonizer.run.storage import WorkStorageUnavailableError
from ctdc_harmonizer.run.workdir import COMBINED, OVERLAPS, RECONCILIATION, PartnerWork

if TYPE_CHECKING:
    from ctdc_harmonizer.release.publish import ConcurrentLoad

log = logging.getLogger(__name__)
EMPTY_WITHDRAWN = pd.DataFrame({"pseudonym": [], "partner": []}, dtype="string")


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
    frames = [works[p].read_frame(works[p].HARMONIZED) for p in partners]
    combined = pd.concat(frames, ignore_index=True)
    del frames
    order = permutation(len(combined), plan.release)  # the release's row order
    # PRIVACY: cross-partner overlaps counted (merged under policy), on the keys alone; the
    # records are then taken once, in the release's order, without the linkage keys.
    keys = combined[[PARTNER, FILE, *LINK_COLUMNS]].iloc[order].reset_index(drop=True)
    completeness = combined[codebook.columns].notna().sum(axis=1).to_numpy()[order]
    policy = privacy_combine.linkage_policy(plan.mappings)
    linked = privacy_combine.link(keys, completeness, plan.partners, policy)
    for partner, files in linked.merged_files.items():
        works[partner].write_frame(PartnerWork.LINKED, files.to_frame(FILE))
    plan.work.write_json(OVERLAPS, linked.matrix)
    kept = order[~linked.merged]
    del keys, completeness  # before the copy below: the peak of a million-record run
    released = combined[[*codebook.columns, PARTNER, FILE, PSEUDONYM]]
    del combined
    # Column by column, each source column freed once taken: one copy of the table at a
    # time (a million records hold about half a GiB of text).
    combined = pd.DataFrame(
        {name: released.pop(name).take(kept).reset_index(drop=True) for name in list(released)}
    )
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
    rows = len(harmonized)
    configs = {p: plan.partner_config(p) for p in partners}
    metadata = release_metadata(plan.release, plan.release_year, rows, recon, configs, codebook)
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
    del harmonized  # the content holds it until it is written
    staging = plan.staging_dir
    quality = release_folder.build_release(content, staging, codebook)
    written = ReleaseWritten(
        release=plan.release,
        release_dir=str(target),
        staged_dir=str(staging),
        folder_sha256=release_folder.folder_digest(staging),
        rows=rows,
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
    url = plan.warehouse(url)
    counts = load_and_publish(
        plan.release,
        plan.staging_dir,
        plan.release_path,
        plan.aside_dir,
        plan.work.read_frame(COMBINED),
        url,
    )
    return _after_publication(plan, url, counts)


def start_warehouse_load(plan: RunPlan, url: str | None = None) -> ConcurrentLoad:
    """`load_warehouse` for the command line, in two halves: the rows are loaded (into a
    transaction left open) while `write_release` builds the folder in another process;
    `finish_warehouse_load` commits with the folder's hash and publishes both."""
    from ctdc_harmonizer.release.publish import ConcurrentLoad, warehouse_batches

    recon = plan.work.read_json(RECONCILIATION)
    configs = {p: plan.partner_config(p) for p in plan.partners}
    partners = {code: (c.name, c.datasource) for code, c in configs.items()}
    batches, entities = warehouse_batches(recon, partners)

    def combined() -> pd.DataFrame:
        return plan.work.read_frame(COMBINED)

    return ConcurrentLoad(plan.warehouse(url), plan.release, combined, batches, entities)


def finish_warehouse_load(
    plan: RunPlan, loading: ConcurrentLoad, url: str | None = None
) -> WarehouseLoaded:
    locks.check(plan.lock, plan.release)
    counts = loading.publish(plan.release, plan.staging_dir, plan.release_path, plan.aside_dir)
    return _after_publication(plan, plan.warehouse(url), counts)


def _after_publication(plan: RunPlan, url: str, counts: dict) -> WarehouseLoaded:
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
