"""The annual update as steps over files: what the CLI runs in a row and the DAG runs as tasks.

Each step reads its inputs from disk and returns a small dict of paths and
counts, which is all that may travel through XCom or a log line. Frames stay
on disk, under the run's work folder, and never hold a direct identifier.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from ctdc_harmonizer import contracts
from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.config import PartnerConfig, available_partners, load_partner
from ctdc_harmonizer.errors import CoverageError, CtdcError
from ctdc_harmonizer.harmonize import EXCLUDED, HARMONIZED, REJECTED, map_partner
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.privacy import combine as privacy_combine
from ctdc_harmonizer.privacy import keys as privacy_keys
from ctdc_harmonizer.privacy import registry
from ctdc_harmonizer.privacy import stage as privacy_stage
from ctdc_harmonizer.privacy.pseudonyms import PSEUDONYM
from ctdc_harmonizer.reader import FILE, ROW, deidentify, find_extract_files, read_extract
from ctdc_harmonizer.reconcile import ERASED, MERGED, reconcile
from ctdc_harmonizer.withdrawals import load_withdrawals, match_keys

log = logging.getLogger(__name__)
PARTNER_COLUMN = "_partner"


def _json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def release_year_of(release: str, default: int) -> int:
    """The year a release label names (`2025`, `ctdc-2025`, `demo-2025-rc1`), else default."""
    digits = pd.Series([release]).str.extract(r"((?:19|20)\d{2})")[0].iloc[0]
    return int(digits) if isinstance(digits, str) else default


def harmonize_file(config: PartnerConfig, path: str | Path, year_max: int):
    """Read, de-identify and map one delivered file in memory (no release, no warehouse):
    for a data officer checking a mapping against a file, and for tests."""
    result = read_extract(config, Path(path))
    return map_partner(deidentify(config, result.frame), config, default_codebook(), year_max)


def partner_config(partner: str, mappings: str | Path | None = None) -> PartnerConfig:
    return load_partner(Path(mappings or mappings_dir()) / partner)


def plan_run(
    landing: str,
    out: str,
    release: str,
    partners: list[str] | None = None,
    mappings: str | None = None,
    release_year: int | None = None,
    warehouse_url: str | None = None,
) -> dict:
    """Check the run's inputs before any work: partners known, mappings valid, landing present."""
    root = Path(mappings or mappings_dir())
    known = available_partners(root)
    named = [p.strip() for p in partners or [] if p.strip()]
    # Not naming partners means "every partner that delivered": one that did not send an
    # extract this year is skipped (and listed in the plan), not an error.
    chosen = named or [p for p in known if (Path(landing) / p).is_dir()]
    if not chosen:
        raise CtdcError(f"no partner folder found in {landing} (mapped: {', '.join(known)})")
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise CtdcError(
            f"unknown partner(s) {', '.join(unknown)}; mapping folders exist for {', '.join(known)}"
        )
    for partner in chosen:
        partner_config(partner, root)  # raises MappingError naming file and line
        if not (Path(landing) / partner).is_dir():
            raise CtdcError(
                f"partner '{partner}': landing folder {Path(landing) / partner} not found"
            )
    if not release or "/" in release or release.startswith("."):
        raise CtdcError("release label must be a plain name such as 2025 or ctdc-2025")
    privacy_keys.pseudonym_key()  # PRIVACY: no key, no run (the key itself stays out of the plan)
    year = release_year or release_year_of(release, pd.Timestamp.now().year)
    work = Path(out) / ".work" / release
    if work.exists():
        shutil.rmtree(work)  # a rerun starts from scratch: same inputs, same outputs
    work.mkdir(parents=True)
    plan = {
        "release": release,
        "release_year": year,
        "landing": str(Path(landing).resolve()),
        "out": str(Path(out).resolve()),
        "mappings": str(root.resolve()),
        "work_dir": str(work.resolve()),
        "release_dir": str((Path(out) / release).resolve()),
        "partners": chosen,
        "partners_without_delivery": sorted(set(known) - set(chosen)) if not named else [],
    }
    _json(work / "plan.json", plan)
    # PRIVACY: the CLI's --warehouse, where the withdrawal registry lives; in memory only
    # (never in plan.json: a URL may hold a password). The DAG uses $CTDC_WAREHOUSE_URL.
    if warehouse_url:
        plan["warehouse_url"] = warehouse_url
    log.info("planned release %s for %d partner(s)", release, len(chosen))
    return plan


def plan_scheduled_run(
    release: str, landing: str, out: str, partners: list[str] | None, run_date
) -> dict:
    """plan_run with the DAG's defaults: an empty param means the default.

    The release is labelled by the year before the run date (a run on 1 January 2026
    is the 2025 release; a manual run later in 2026 is a 2026 update); landing and out
    come from $CTDC_LANDING / $CTDC_OUT, else from under $AIRFLOW_HOME/ctdc/.
    """
    home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "ctdc"
    label = release or str((pd.Timestamp(run_date) - pd.Timedelta(days=1)).year)
    landing = landing or os.environ.get("CTDC_LANDING") or str(home / "landing")
    out = out or os.environ.get("CTDC_OUT") or str(home / "releases")
    return plan_run(landing, out, label, partners or None)


def stage_partner(plan: dict, partner: str) -> dict:
    """Read + de-identify every file of a partner; erase withdrawals; merge duplicates.

    Identifiers (names, dates of birth, record ids, notes) do not leave this function.
    """
    config = partner_config(partner, plan["mappings"])
    landing = Path(plan["landing"])
    work = Path(plan["work_dir"]) / partner
    work.mkdir(parents=True, exist_ok=True)
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
        plan, config, withdrawals, keys, hashes, key
    )
    fate[erased] = ERASED
    if config.record_id:
        ids = staged[config.record_id].astype("string").str.strip()
        # The same case delivered twice (or cross-referenced between systems): the last copy stays.
        live = fate == ""
        dup = ids.notna() & ids[live].duplicated(keep="last").reindex(ids.index, fill_value=False)
        fate[dup & live] = MERGED
        staged = staged.drop(columns=[config.record_id])
    removed = staged.loc[fate != "", [FILE, ROW]].assign(outcome=fate[fate != ""], reason="")
    staged = staged.loc[fate == ""].reset_index(drop=True)
    hashes.loc[(fate == "").to_numpy()].reset_index(drop=True).to_parquet(
        work / privacy_stage.PRIVATE_FILE, index=False
    )
    withdrawn.to_parquet(work / privacy_stage.WITHDRAWN_FILE, index=False)
    staged.to_parquet(work / "staged.parquet", index=False)
    removed.to_parquet(work / "removed.parquet", index=False)
    _json(work / "stage.json", {"partner": partner, "files": files})
    counts = {
        "partner": partner,
        "files": len(files),
        "rows_read": int(sum(f["rows_read"] for f in files.values())),
        "erased": int((fate == ERASED).sum()),
        "duplicates_merged": int((fate == MERGED).sum()),
        "erased_by_registry": erased_by_registry,
        "staged": str(work / "staged.parquet"),
    }
    log.info(
        "partner %s: %d file(s), %d rows read, %d erased, %d duplicates merged",
        partner,
        counts["files"],
        counts["rows_read"],
        counts["erased"],
        counts["duplicates_merged"],
    )
    return counts


def check_contract(plan: dict, partner: str) -> dict:
    """The staged frame honours the partner's field contract (pandera, no values reported)."""
    config = partner_config(partner, plan["mappings"])
    staged = pd.read_parquet(Path(plan["work_dir"]) / partner / "staged.parquet")
    contracts.validate(
        contracts.staged_schema(config), staged, where=f"partner '{partner}' staged extract"
    )
    return {"partner": partner, "rows": len(staged)}


def map_to_codebook(plan: dict, partner: str) -> dict:
    """Harmonize a partner's staged rows; apply the coverage gate."""
    config = partner_config(partner, plan["mappings"])
    codebook = default_codebook()
    work = Path(plan["work_dir"]) / partner
    staged = pd.read_parquet(work / "staged.parquet")
    result = map_partner(staged, config, codebook, year_max=int(plan["release_year"]))
    harmonized = result.harmonized.assign(**{PARTNER_COLUMN: partner})
    kept = (result.outcomes["outcome"] == HARMONIZED).to_numpy()  # same order as staged
    hashes = pd.read_parquet(work / privacy_stage.PRIVATE_FILE).loc[kept].reset_index(drop=True)
    harmonized = pd.concat([harmonized, hashes], axis=1)  # PRIVACY: pseudonym + linkage keys
    harmonized.to_parquet(work / "harmonized.parquet", index=False)
    result.outcomes.to_parquet(work / "outcomes.parquet", index=False)
    result.unmapped.to_csv(work / "unmapped.csv", index=False)
    result.issues.to_csv(work / "issues.csv", index=False)
    coverage = coverage_report(result.unknown_rows, len(staged), config)
    _json(work / "coverage.json", coverage)
    counts = {
        "partner": partner,
        "harmonized": len(result.harmonized),
        "rejected": int((result.outcomes["outcome"] == REJECTED).sum()),
        "excluded": int((result.outcomes["outcome"] == EXCLUDED).sum()),
        "unmapped_values": len(result.unmapped),
        "harmonized_path": str(work / "harmonized.parquet"),
    }
    log.info(
        "partner %s: %d harmonized, %d rejected, %d excluded, %d unmapped value(s)",
        partner,
        counts["harmonized"],
        counts["rejected"],
        counts["excluded"],
        counts["unmapped_values"],
    )
    if coverage["failing_fields"]:
        raise CoverageError(coverage_message(coverage, result.unmapped, config))
    return counts


def coverage_report(unknown_rows: pd.DataFrame, rows: int, config: PartnerConfig) -> dict:
    """Per field, the share of rows carrying a value the mapping does not know."""
    fields = []
    for item in unknown_rows.itertuples(index=False):  # one entry per field, not per record
        share = item.rows / rows if rows else 0.0
        fields.append({"field": item.field, "rows": int(item.rows), "share": round(share, 6)})
    failing = [f["field"] for f in fields if f["share"] > config.coverage_threshold]
    return {
        "partner": config.code,
        "rows": rows,
        "threshold": config.coverage_threshold,
        "fields": fields,
        "failing_fields": failing,
    }


def coverage_message(coverage: dict, unmapped: pd.DataFrame, config: PartnerConfig) -> str:
    lines = [
        f"partner '{config.code}': values unknown to the mapping exceed the coverage threshold "
        f"({coverage['threshold']:.2%}) in {len(coverage['failing_fields'])} field(s):"
    ]
    coded = set(config.coded_fields)
    for item in coverage["fields"]:
        if item["field"] not in coverage["failing_fields"]:
            continue
        lines.append(
            f"  - {item['field']}: {item['rows']} of {coverage['rows']} rows ({item['share']:.2%})"
        )
        if item["field"] in coded:  # category values of coded fields only, never free text
            for row in (
                unmapped[unmapped["field"] == item["field"]].head(20).itertuples(index=False)
            ):
                lines.append(f"      '{row.source_value}': {row.count}")
    lines.append(
        f"Add the values to mappings/{config.code}/values.csv (or countries.csv), then rerun."
    )
    return "\n".join(lines)


def check_codebook(plan: dict, partner: str) -> dict:
    """The partner's harmonized rows satisfy the pandera schema generated from the codebook."""
    codebook = default_codebook()
    frame = pd.read_parquet(Path(plan["work_dir"]) / partner / "harmonized.parquet")
    schema = contracts.harmonized_schema_for(codebook, int(plan["release_year"]))
    contracts.validate(
        schema, frame[codebook.columns], where=f"partner '{partner}' harmonized rows"
    )
    return {"partner": partner, "rows": len(frame)}


def combine(plan: dict) -> dict:
    """All partners' harmonized rows in one frame, in an order unrelated to the input order."""
    codebook = default_codebook()
    work = Path(plan["work_dir"])
    frames = [pd.read_parquet(work / p / "harmonized.parquet") for p in sorted(plan["partners"])]
    combined = pd.concat(frames, ignore_index=True)
    combined = contracts.shuffle(combined, seed_text=plan["release"])
    # PRIVACY: cross-partner overlaps counted (merged under policy), linkage keys dropped.
    combined, overlaps = privacy_combine.link(plan, combined, codebook.columns)
    combined = combined[[*codebook.columns, PARTNER_COLUMN, FILE, PSEUDONYM]]
    combined.to_parquet(work / "combined.parquet", index=False)
    recon = reconcile(plan)
    recon["overlaps"] = overlaps
    _json(work / "reconciliation.json", recon)
    log.info(
        "release %s: %d harmonized rows from %d partner(s)",
        plan["release"],
        len(combined),
        len(frames),
    )
    return {
        "rows": len(combined),
        "combined": str(work / "combined.parquet"),
        "invariant_holds": recon["invariant_holds"],
    }


def write_release(plan: dict) -> dict:
    """Write the release folder: CSV, Parquet, reconciliation, unmapped values, metadata."""
    from ctdc_harmonizer import release as release_mod

    info = release_mod.write(plan)
    log.info(
        "release %s written to %s (%d rows)", plan["release"], info["release_dir"], info["rows"]
    )
    return info


def load_warehouse(plan: dict, url: str | None = None) -> dict:
    """Load the release into the warehouse (idempotent per release label), then tidy up."""
    from ctdc_harmonizer import release as release_mod

    counts = release_mod.load(plan, url)
    counts["privacy"] = registry.record_and_purge(plan, url)  # PRIVACY: registry + purge
    shutil.rmtree(plan["work_dir"], ignore_errors=True)
    log.info("warehouse: %d case records for release %s", counts["case_records"], plan["release"])
    return counts


def _worker_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def partner_chain(plan: dict, partner: str) -> dict:
    """read -> validate contract -> map -> validate against the codebook, for one partner."""
    stage_partner(plan, partner)
    check_contract(plan, partner)
    mapped = map_to_codebook(plan, partner)
    check_codebook(plan, partner)
    return mapped


def run(
    landing: str,
    out: str,
    release: str,
    partners: list[str] | None = None,
    mappings: str | None = None,
    warehouse_url: str | None = None,
    workers: int | None = None,
) -> dict:
    """The whole annual update from the command line (what `ctdc run` does).

    Partners are independent until `combine`, so their chains run in parallel processes
    (one per core by default), as the DAG's mapped task groups do.
    """
    plan = plan_run(landing, out, release, partners, mappings, warehouse_url=warehouse_url)
    workers = workers or min(len(plan["partners"]), os.cpu_count() or 1)
    if workers > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_worker_logging
        ) as pool:
            futures = [pool.submit(partner_chain, plan, p) for p in plan["partners"]]
            for future in futures:
                future.result()  # re-raises the partner's error, in partner order
    else:
        for partner in plan["partners"]:
            partner_chain(plan, partner)
    combine(plan)
    info = write_release(plan)
    info["warehouse"] = load_warehouse(plan, warehouse_url)
    return info
