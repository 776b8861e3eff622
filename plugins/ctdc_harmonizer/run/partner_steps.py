"""The partner chain of the annual update: read, check the contract, map, check the codebook.

One partner at a time (the DAG's mapped task group; the CLI's worker processes). Each step
takes the typed `RunPlan` and returns a small typed result; frames stay in the run's work
folder.
"""

from __future__ import annotations

import logging

import pandas as pd

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.columns import FILE, PARTNER, ROW, Outcome
from ctdc_harmonizer.errors import CoverageError
from ctdc_harmonizer.harmonize import contracts
from ctdc_harmonizer.harmonize.coverage import coverage_message, coverage_report
from ctdc_harmonizer.harmonize.mapper import map_partner
from ctdc_harmonizer.harmonize.unmapped import restrict_unmapped
from ctdc_harmonizer.ingest.deidentify import deidentify
from ctdc_harmonizer.ingest.duplicates import duplicate_rows
from ctdc_harmonizer.ingest.extract import read_extract
from ctdc_harmonizer.ingest.files import find_extract_files
from ctdc_harmonizer.ingest.withdrawals import load_withdrawals, match_keys
from ctdc_harmonizer.privacy import keys as privacy_keys
from ctdc_harmonizer.privacy import stage as privacy_stage
from ctdc_harmonizer.run.plan import RunPlan
from ctdc_harmonizer.run.results import Checked, Mapped, Staged

log = logging.getLogger(__name__)


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
        plan.warehouse(), config, withdrawals, keys, hashes, key
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
