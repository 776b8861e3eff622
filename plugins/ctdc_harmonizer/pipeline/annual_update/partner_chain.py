"""The partner chain of the annual update: stage -> check the contract -> harmonize -> check
the codebook -> compare with the store. One chain per partner with work in this run (a
delivery, or a mapping change that re-harmonizes its history); carried partners have none.

Each step takes the plan and the previous step's typed result, writes only its own files
in the partner's work folder (run/workdir.py) and returns a small typed result. Stage
libraries are imported inside the steps: the DAG file imports this module to build its
tasks, and parsing must stay light.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from ctdc_harmonizer.pipeline.results import (
    CheckedHarmonized,
    CheckedStaged,
    HarmonizedPartner,
    PartnerChanges,
    StagedPartner,
)
from ctdc_harmonizer.run.plan import ReleasePlan

if TYPE_CHECKING:  # the heavy libraries stay out of the DAG file's parse
    import pandas as pd

    from ctdc_harmonizer.codebook import Codebook
    from ctdc_harmonizer.mapping.spec import PartnerConfig

log = logging.getLogger(__name__)
CELL_ISSUES_LOGGED = 20  # a workbook's unreadable cells named one by one in the log


def stage_partner(plan: ReleasePlan, partner: str) -> StagedPartner:
    """Read and de-identify the partner's delivered files; erase withdrawals; merge
    duplicates; add the stored records to harmonize again when its mapping changed.

    Identifiers (names, dates of birth, record ids, notes) do not leave this step: what it
    writes holds codes, years, ages and keyed hashes only."""
    from collections import Counter

    import pandas as pd

    from ctdc_harmonizer.columns import (
        CASE_ID,
        CONTENT,
        DELIVERY_FILE_ID,
        FILE,
        FROM_DELIVERY,
        FROM_STORE,
        HELD_BACK,
        IDENTITY,
        ORIGIN,
        PSEUDONYM,
        RELEASABLE_FROM,
        ROW,
        STAGED_ID,
        Outcome,
    )
    from ctdc_harmonizer.errors import ExtractError
    from ctdc_harmonizer.ingest.deidentify import deidentify
    from ctdc_harmonizer.ingest.duplicates import duplicate_rows
    from ctdc_harmonizer.ingest.extract import read_delivery
    from ctdc_harmonizer.ingest.withdrawals import load_withdrawals, match_keys
    from ctdc_harmonizer.ingest.workbook import CELL_PROBLEMS
    from ctdc_harmonizer.privacy import keys as privacy_keys
    from ctdc_harmonizer.privacy import stage as privacy_stage
    from ctdc_harmonizer.privacy.linkage import LINK_COLUMNS
    from ctdc_harmonizer.store.identity import content_keys, identity_keys, row_text
    from ctdc_harmonizer.store.payload import stored_fields
    from ctdc_harmonizer.store.records import current_records, may_be_released, staged_rows
    from ctdc_harmonizer.warehouse.connection import warehouse

    config = plan.partner_config(partner)
    entry = plan.partner_plans[partner]
    work = plan.work.partner(partner)
    landing = plan.landing_path
    key = privacy_keys.pseudonym_key()
    withdrawals = load_withdrawals(config, landing) if entry.withdrawals is not None else None
    frames, match, private, files = [], [], [], {}
    unreadable: dict[str, dict[str, int]] = {}  # file -> reason -> cells (metadata.json)
    if entry.files:
        # Every file parsed and checked on its own, then handled as one frame: the cost of a
        # delivery does not grow with its number of files.
        read = read_delivery(
            config,
            [landing / partner / planned.name for planned in entry.files],
            also=privacy_stage.read_columns(config, withdrawals),
        )
        rows_read = read.frame[FILE].value_counts()
        for planned, result in zip(entry.files, read.files, strict=True):
            if result.sha256 != planned.sha256:
                raise ExtractError(
                    partner,
                    planned.name,
                    "changed since the run was planned (still being delivered?): run again "
                    "once the delivery is complete",
                )
            for issue in result.cell_issues[:CELL_ISSUES_LOGGED]:  # locations, never values
                log.warning(
                    "%s: file '%s', sheet '%s', cell %s (column '%s'): %s (%s)",
                    partner,
                    result.file,
                    issue.sheet,
                    issue.cell,
                    issue.column,
                    issue.reason,
                    CELL_PROBLEMS[issue.reason],
                )
            if len(result.cell_issues) > CELL_ISSUES_LOGGED:
                log.warning(
                    "%s: file '%s': %d more unreadable cells",
                    partner,
                    result.file,
                    len(result.cell_issues) - CELL_ISSUES_LOGGED,
                )
            if result.cell_issues:
                reasons = Counter(issue.reason for issue in result.cell_issues)
                unreadable[result.file] = dict(sorted(reasons.items()))
            files[result.file] = {
                "sha256": result.sha256,
                "size_bytes": planned.size_bytes,
                "rows_read": int(rows_read.get(result.file, 0)),
                "blank_rows_skipped": result.blank_rows,
                "undeclared_columns_dropped": result.dropped_columns,
            }
        match.append(match_keys(withdrawals, read.frame))  # before identifiers are dropped
        private.append(privacy_stage.private_columns(config, read.frame, key))
        frames.append(deidentify(config, read.frame))
    kept = config.kept_fields
    empty_staged = pd.DataFrame(  # no file read (a withdrawal, or a mapping change, only)
        {FILE: pd.Series([], dtype="string"), ROW: pd.Series([], dtype="int64")}
        | {name: pd.Series([], dtype="string") for name in [*kept, config.record_id] if name}
    )
    staged = pd.concat(frames, ignore_index=True) if frames else empty_staged
    hashes = (
        pd.concat(private, ignore_index=True)
        if private
        else pd.DataFrame(
            {PSEUDONYM: pd.Series([], dtype="string")}
            | {name: pd.Series([], dtype="UInt64") for name in LINK_COLUMNS}
        )
    )
    fate = pd.Series("", index=staged.index, dtype="string")
    url = plan.warehouse()
    erased, withdrawn, erased_by_registry = privacy_stage.apply_withdrawals(
        url, config, withdrawals, match, hashes, key
    )
    fate[erased] = Outcome.ERASED
    if config.record_id:
        # The same case delivered twice (or cross-referenced between systems): the last
        # delivered copy stays, as a revision would.
        fate[duplicate_rows(staged[config.record_id], live=fate == "")] = Outcome.DUPLICATES_MERGED
        staged = staged.drop(columns=[config.record_id])
    live = (fate == "").to_numpy()
    removed = staged.loc[~live, [FILE, ROW]].assign(outcome=fate[~live])
    staged = staged.loc[live].reset_index(drop=True)
    hashes = hashes.loc[live].reset_index(drop=True)
    text = row_text(staged, kept)
    keys = pd.DataFrame(
        {
            ORIGIN: FROM_DELIVERY,
            IDENTITY: identity_keys(partner, hashes[PSEUDONYM], text, key),
            CONTENT: content_keys(text, key),
            PSEUDONYM: hashes[PSEUDONYM].astype("string"),
            **{name: hashes[name].astype("UInt64") for name in LINK_COLUMNS},
            STAGED_ID: pd.Series(pd.NA, index=staged.index, dtype="Int64"),
            CASE_ID: pd.Series(pd.NA, index=staged.index, dtype="Int64"),
            DELIVERY_FILE_ID: pd.Series(pd.NA, index=staged.index, dtype="Int64"),
        }
    )
    stored_rows = 0
    erased_stored = pd.DataFrame({STAGED_ID: [], CASE_ID: [], IDENTITY: []})
    if plan.base:
        with warehouse(url, f"reading partner '{partner}' from the store") as db:
            stored = current_records(db, partner, plan.base)
            gone = set(withdrawn["pseudonym"].dropna())
            is_gone = stored[PSEUDONYM].isin(gone).to_numpy()
            erased_stored = stored.loc[is_gone, [STAGED_ID, CASE_ID, IDENTITY]]
            stored = stored.loc[~is_gone]
            # Harmonized again: the whole history when the mapping or the codebook changed,
            # else the records held back (a later release year may let them in).
            again = stored[stored[STAGED_ID].notna()]
            if not entry.reharmonize:
                # Under the same mapping and codebook only the release year can change a
                # held-back record's outcome: only those it may release now are redone.
                redo = again[HELD_BACK].to_numpy(dtype=bool) & may_be_released(
                    again[RELEASABLE_FROM], int(plan.release_year or 0), entry.held_back
                )
                again = again[redo]
            if entry.mode == "full" and entry.files:
                again = again.iloc[:0]  # the delivery replaces or retires every record
            else:
                again = again[~again[IDENTITY].isin(set(keys[IDENTITY]))]
            if len(again):
                values = staged_rows(
                    db, partner, again[STAGED_ID].astype(int).tolist(), stored_fields(config)
                )
                stored_rows = len(values)
                staged = pd.concat([staged, values.drop(columns=[STAGED_ID])], ignore_index=True)
                again_keys = again[
                    [
                        IDENTITY,
                        CONTENT,
                        PSEUDONYM,
                        *LINK_COLUMNS,
                        STAGED_ID,
                        CASE_ID,
                        DELIVERY_FILE_ID,
                    ]
                ].assign(**{ORIGIN: FROM_STORE})
                keys = pd.concat([keys, again_keys[keys.columns]], ignore_index=True)
    staged_path = work.write_frame(work.STAGED, staged)
    work.write_frame(work.KEYS, keys)
    work.write_frame(work.REMOVED, removed)
    work.write_frame(work.WITHDRAWN, withdrawn)
    work.write_frame(work.ERASED_STORED, erased_stored)
    work.write_json(
        work.STAGE_INFO,
        {
            "partner": partner,
            "files": files,
            "not_read": entry.not_read,
            "unreadable_cells": unreadable,
            "withdrawals": entry.withdrawals.model_dump() if entry.withdrawals else None,
            "received_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
    result = StagedPartner(
        partner=partner,
        files=len(files),
        rows_read=int(sum(f["rows_read"] for f in files.values())),
        erased=int((fate == Outcome.ERASED).sum()),
        duplicates_merged=int((fate == Outcome.DUPLICATES_MERGED).sum()),
        erased_by_registry=erased_by_registry,
        stored_rows=stored_rows,
        work=str(work.root),
    )
    log.info(
        "partner %s: %d file(s), %d rows read, %d erased, %d duplicates merged; %d stored "
        "record(s) to harmonize again, %d stored record(s) of withdrawn people",
        partner,
        result.files,
        result.rows_read,
        result.erased,
        result.duplicates_merged,
        stored_rows,
        len(erased_stored),
    )
    del staged_path
    return result


def check_staged_contract(plan: ReleasePlan, staged: StagedPartner) -> CheckedStaged:
    """The staged rows honour the partner's field contract (pandera, no values reported)."""
    from ctdc_harmonizer.harmonize import contracts
    from ctdc_harmonizer.run.workdir import PartnerWork

    config = plan.partner_config(staged.partner)
    work = PartnerWork(staged.work, staged.partner)
    frame = work.read_frame(work.STAGED)
    contracts.validate(
        contracts.staged_schema(config), frame, where=f"partner '{staged.partner}' staged extract"
    )
    return CheckedStaged(staged=staged, rows=len(frame))


def harmonize_partner(plan: ReleasePlan, checked: CheckedStaged) -> HarmonizedPartner:
    """Harmonize the partner's staged rows under today's mapping; apply the coverage gate to
    the delivered ones; keep, for the store, the staged values the mapping used."""
    import numpy as np
    import pandas as pd

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.columns import FROM_DELIVERY, ORIGIN, RELEASABLE_FROM, Outcome
    from ctdc_harmonizer.errors import CoverageError
    from ctdc_harmonizer.harmonize.coverage import coverage_message, coverage_report
    from ctdc_harmonizer.harmonize.mapper import map_partner
    from ctdc_harmonizer.harmonize.unmapped import restrict_unmapped
    from ctdc_harmonizer.run.workdir import PartnerWork
    from ctdc_harmonizer.store.payload import encode_payloads, stored_fields

    partner = checked.staged.partner
    config = plan.partner_config(partner)
    codebook = default_codebook()
    work = PartnerWork(checked.staged.work, partner)
    staged = work.read_frame(work.STAGED)
    origin = work.read_frame(work.KEYS, columns=[ORIGIN])[ORIGIN]
    delivered = (origin == FROM_DELIVERY).to_numpy()
    # Delivered and stored rows are mapped apart: the coverage gate and the unmapped list
    # speak of this delivery only (stored values the mapping did not know were never kept).
    parts = {
        kind: map_partner(
            staged.loc[mask].reset_index(drop=True), config, codebook, plan.release_year
        )
        for kind, mask in (("delivered", delivered), ("stored", ~delivered))
        if mask.any() or kind == "delivered"
    }
    positions = {"delivered": np.flatnonzero(delivered), "stored": np.flatnonzero(~delivered)}
    outcomes = pd.concat(
        [r.outcomes.assign(_staged_row=positions[k]) for k, r in parts.items()], ignore_index=True
    )
    outcomes = outcomes.sort_values("_staged_row", kind="stable").reset_index(drop=True)
    outcomes[ORIGIN] = origin.to_numpy()
    harmonized = []
    for kind, result in parts.items():
        kept_rows = positions[kind][(result.outcomes["outcome"] == Outcome.HARMONIZED).to_numpy()]
        harmonized.append(result.harmonized.assign(_staged_row=kept_rows))
    harmonized = (
        pd.concat(harmonized, ignore_index=True).sort_values("_staged_row").reset_index(drop=True)
    )
    work.write_frame(work.HARMONIZED, harmonized)
    work.write_frame(work.OUTCOMES, outcomes)
    work.write_frame(
        work.RELEASABLE,
        pd.DataFrame({RELEASABLE_FROM: releasable_from(staged, outcomes, config, codebook)}),
    )
    # PRIVACY: what the store keeps of each delivered row: a value the mapping could not use
    # (unknown to it, unreadable) may be anything, a name typed in the wrong column: it is
    # kept as the INVALID marker only (harmonize/mapper.py, MappingResult.storable_values).
    ours = parts["delivered"]
    fields = stored_fields(config)
    values = ours.storable_values(staged.loc[delivered], fields)
    # The Arrow text kept as it is ("str", the dtype a frame infers for it): handed to the
    # frame bare, it became a Python string per row first (~0.25 s at 250k rows).
    payloads = encode_payloads(values, fields)
    payloads = pd.array(payloads, dtype="str") if len(payloads) else payloads
    work.write_frame(work.PAYLOADS, pd.DataFrame({"payload": payloads}))
    restricted = restrict_unmapped(
        ours.unmapped,
        ours.unknown_rows,
        int(delivered.sum()),
        config.coded_fields,
        config.unmapped_min_rows,
    )
    work.write_table(work.UNMAPPED, restricted)
    work.write_table(work.ISSUES, pd.concat([r.issues for r in parts.values()], ignore_index=True))
    coverage = coverage_report(ours.unknown_rows, int(delivered.sum()), config)
    work.write_json(work.COVERAGE, coverage)
    counts = outcomes["outcome"].value_counts()
    mapped = HarmonizedPartner(
        partner=partner,
        harmonized=int(counts.get(Outcome.HARMONIZED, 0)),
        rejected=int(counts.get(Outcome.REJECTED, 0)),
        excluded=int(counts.get(Outcome.EXCLUDED, 0)),
        unmapped_values=len(ours.unmapped),
        work=str(work.root),
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
        raise CoverageError(coverage_message(coverage, ours.unmapped, config))
    return mapped


# A year bound no registration year reaches: what a row's outcome would be without the bound.
NO_YEAR_BOUND = 9999


def releasable_from(
    staged: pd.DataFrame, outcomes: pd.DataFrame, config: PartnerConfig, codebook: Codebook
) -> pd.Series:
    """Per staged row (`outcomes` in staged order): for a row rejected only because its year
    of registration lies after the release year (`year_out_of_range`), the year from which
    it may be released (its year, when the mapping harmonizes it without the release year's
    bound); NA for every other row (a reason the release year does not change, or
    harmonized). The store keeps it with the held-back record, so that a later release
    harmonizes it again only when its year comes (run/plan.py)."""
    import numpy as np
    import pandas as pd

    from ctdc_harmonizer.columns import YEAR_OUT_OF_RANGE, Outcome
    from ctdc_harmonizer.harmonize.mapper import YEAR_VARIABLE, map_partner

    years = pd.Series(pd.NA, index=range(len(outcomes)), dtype="Int64")
    late = (outcomes["reason"] == YEAR_OUT_OF_RANGE).to_numpy(dtype=bool)
    if late.any():
        unbounded = map_partner(
            staged.loc[late].reset_index(drop=True), config, codebook, NO_YEAR_BOUND
        )
        now = (unbounded.outcomes["outcome"] == Outcome.HARMONIZED).to_numpy(dtype=bool)
        years.iloc[np.flatnonzero(late)[now]] = (
            unbounded.harmonized[YEAR_VARIABLE].astype("Int64").to_numpy()
        )
    return years


def check_codebook_contract(plan: ReleasePlan, harmonized: HarmonizedPartner) -> CheckedHarmonized:
    """The partner's harmonized rows satisfy the pandera schema generated from the codebook."""
    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.harmonize import contracts
    from ctdc_harmonizer.run.workdir import PartnerWork

    codebook = default_codebook()
    work = PartnerWork(harmonized.work, harmonized.partner)
    frame = work.read_frame(work.HARMONIZED, columns=codebook.columns)
    schema = contracts.harmonized_schema_for(codebook, plan.release_year)
    contracts.validate(schema, frame, where=f"partner '{harmonized.partner}' harmonized rows")
    return CheckedHarmonized(harmonized=harmonized, rows=len(frame))


def compare_with_store(plan: ReleasePlan, checked: CheckedHarmonized) -> PartnerChanges:
    """What this partner's delivery and mapping change in the store (store/changes.py): new,
    revised, unchanged, retired, re-harmonized, held back, erased; the retirement guard."""
    from ctdc_harmonizer.pipeline.annual_update.comparison import partner_changes

    return partner_changes(plan, checked.harmonized)
