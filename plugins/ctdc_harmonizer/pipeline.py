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
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from ctdc_harmonizer import contracts, locks
from ctdc_harmonizer import release as release_mod
from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.config import PartnerConfig, available_partners, load_partner
from ctdc_harmonizer.errors import CoverageError, CtdcError, OutputError
from ctdc_harmonizer.harmonize import EXCLUDED, HARMONIZED, REJECTED, map_partner
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.privacy import combine as privacy_combine
from ctdc_harmonizer.privacy import keys as privacy_keys
from ctdc_harmonizer.privacy import registry
from ctdc_harmonizer.privacy import stage as privacy_stage
from ctdc_harmonizer.privacy.pseudonyms import PSEUDONYM
from ctdc_harmonizer.reader import FILE, ROW, deidentify, find_extract_files, read_extract
from ctdc_harmonizer.reconcile import ERASED, MERGED, reconcile
from ctdc_harmonizer.safety import os_reason, restrict_unmapped, write_report_csv
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


RELEASE_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_release_label(release: str) -> None:
    """Letters, digits, '.', '_', '-'; at most 64 characters (the warehouse's label width)."""
    if not isinstance(release, str) or not RELEASE_LABEL.fullmatch(release):
        raise CtdcError(
            "release label must be a plain name such as 2025 or ctdc-2025: 1 to 64 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )


def _private_folder(path: Path) -> None:
    """Create path (and parents) readable by the pipeline's user only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def _prepare_out(out: Path) -> None:
    """The out folder is usable: a clear OutputError (path, errno name) instead of a traceback."""
    if out.exists() and not out.is_dir():
        raise OutputError(str(out), "ENOTDIR (it is a file, not a folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        _private_folder(out / ".work")
        probe = out / ".work" / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(str(exc.filename or out), os_reason(exc)) from None


def unmapped_partner_folders(landing: str | Path, known: list[str]) -> list[str]:
    """Folders in the landing that no mapping describes: reported, not read, not an error."""
    root = Path(landing)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in known
    )


def plan_run(
    landing: str,
    out: str,
    release: str,
    partners: list[str] | None = None,
    mappings: str | None = None,
    release_year: int | None = None,
    lock_owner: str | None = None,
    warehouse_url: str | None = None,
) -> dict:
    """Check the run's inputs before any work: partners known, mappings valid, landing present,
    out folder usable; then take the release's lock and reset its private work folder.

    lock_owner: None for a process lock held by this process (the CLI); an Airflow DAG run's
    id for a lease that holds across its tasks (released by `finish_run`).
    """
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
    check_release_label(release)
    privacy_keys.pseudonym_key()  # PRIVACY: no key, no run (the key itself stays out of the plan)
    # A wrong or unreachable warehouse fails here, not after every extract has been read.
    from ctdc_harmonizer.warehouse.schema import check_warehouse, default_warehouse_url

    check_warehouse(warehouse_url or default_warehouse_url(out))
    strays = unmapped_partner_folders(landing, known)
    if strays:
        log.warning(
            "landing folder(s) without a mapping, not read: %s (add mappings/<name>/ to "
            "include them)",
            ", ".join(strays),
        )
    year = release_year or release_year_of(release, pd.Timestamp.now().year)
    out_path = Path(out)
    _prepare_out(out_path)
    lock = locks.acquire(out_path, release, lock_owner)  # a rival run fails here, at once
    try:
        # Checked before this run changes anything: did the last run publish consistently?
        previous = release_mod.release_states(out_path, warehouse_url, only=release)[release]
        if previous["state"] in release_mod.BAD_STATES:
            log.warning(
                "release %s: folder and warehouse disagree (%s); this run replaces both",
                release,
                previous["state"],
            )
        work = out_path / ".work" / release
        if work.exists():
            shutil.rmtree(work)  # a rerun starts from scratch: same inputs, same outputs
        _private_folder(work)
    except BaseException as exc:
        locks.release(lock)
        if isinstance(exc, OSError):
            raise OutputError(str(exc.filename or out_path), os_reason(exc)) from None
        raise
    plan = {
        "release": release,
        "release_year": year,
        "landing": str(Path(landing).resolve()),
        "out": str(out_path.resolve()),
        "mappings": str(root.resolve()),
        "work_dir": str(work.resolve()),
        "release_dir": str((out_path / release).resolve()),
        "partners": chosen,
        "partners_without_delivery": sorted(set(known) - set(chosen)) if not named else [],
        "unmapped_partner_folders": strays,
        "previous_release_state": previous["state"],
        "lock": lock,
    }
    _json(work / "plan.json", plan)
    # PRIVACY: the CLI's --warehouse, where the withdrawal registry lives; in memory only
    # (never in plan.json: a URL may hold a password). The DAG uses $CTDC_WAREHOUSE_URL.
    if warehouse_url:
        plan["warehouse_url"] = warehouse_url
    log.info("planned release %s for %d partner(s)", release, len(chosen))
    return plan


def plan_scheduled_run(
    release: str | None,
    landing: str | None,
    out: str | None,
    partners: list[str] | None,
    run_date,
    lock_owner: str | None = None,
) -> dict:
    """plan_run with the DAG's defaults: an empty (or null) param means the default.

    The release is labelled by the year before the run date (a run on 1 January 2026
    is the 2025 release; a manual run later in 2026 is a 2026 update); landing and out
    come from $CTDC_LANDING / $CTDC_OUT, else from under $AIRFLOW_HOME/ctdc/.
    """
    home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "ctdc"
    label = release or str((pd.Timestamp(run_date) - pd.Timedelta(days=1)).year)
    named_landing = landing
    landing = landing or os.environ.get("CTDC_LANDING") or str(home / "landing")
    out = out or os.environ.get("CTDC_OUT") or str(home / "releases")
    known = available_partners()
    delivered = any((Path(landing) / p).is_dir() for p in known)
    # A yearly run before any delivery is not an error: an empty plan, the DAG stops there.
    # A landing folder named in the trigger form that does not exist is (plan_run says so).
    if not partners and not delivered and (Path(landing).is_dir() or not named_landing):
        log.info("nothing delivered: no mapped partner's folder in %s", landing)
        return {"release": label, "landing": landing, "out": out, "partners": []}
    warehouse = os.environ.get("CTDC_WAREHOUSE_URL") or None
    return plan_run(
        landing, out, label, partners or None, lock_owner=lock_owner, warehouse_url=warehouse
    )


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
    # Only the restricted list ever reaches a file (k rows, coded fields, not shifted).
    restricted = restrict_unmapped(
        result.unmapped,
        result.unknown_rows,
        len(staged),
        config.coded_fields,
        unmapped_min_rows(config),
    )
    restricted.to_csv(work / "unmapped.csv", index=False)
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


def unmapped_min_rows(config: PartnerConfig) -> int:
    """k: an unknown value is listed in the unmapped report only when this many rows hold it
    (partner.yaml `coverage.report_min_rows`, default 5)."""
    return config.unmapped_min_rows


def coverage_message(coverage: dict, unmapped: pd.DataFrame, config: PartnerConfig) -> str:
    """Which fields fail the gate, with counts and shares only, and where the values are.

    Never a value: a "category" the mapping does not know may be a name typed into the
    wrong column. The values go to the restricted report (`ctdc unmapped`), under its rules.
    """
    lines = [
        f"partner '{config.code}': values unknown to the mapping exceed the coverage threshold "
        f"({coverage['threshold']:.2%}) in {len(coverage['failing_fields'])} field(s):"
    ]
    distinct = unmapped.groupby("field").size() if len(unmapped) else pd.Series(dtype=int)
    for item in coverage["fields"]:
        if item["field"] not in coverage["failing_fields"]:
            continue
        lines.append(
            f"  - {item['field']}: {item['rows']} of {coverage['rows']} rows ({item['share']:.2%}),"
            f" {int(distinct.get(item['field'], 0))} distinct unknown value(s)"
        )
    lines.append(
        f"The values (coded fields, seen in at least {unmapped_min_rows(config)} rows) are "
        f"in the restricted report: ctdc unmapped --partner {config.code} --landing <landing> "
        f"--out <file>. Add them to mappings/{config.code}/values.csv (or countries.csv), "
        "then rerun."
    )
    return "\n".join(lines)


def unmapped_report(
    landing: str | Path,
    partner: str,
    out_file: str | Path,
    mappings: str | None = None,
    release_year: int | None = None,
) -> dict:
    """Write the restricted unmapped-values report of a partner's delivery to out_file
    (readable by its owner only): for the data officer whose run failed the coverage gate.
    Nothing else of the run is kept."""
    config = partner_config(partner, mappings)
    year = release_year or pd.Timestamp.now().year
    unmapped, unknown, rows = [], [], 0
    for path in find_extract_files(config, Path(landing)):
        result = harmonize_file(config, path, year)
        unmapped.append(result.unmapped)
        unknown.append(result.unknown_rows)
        rows += len(result.outcomes)
    merged = pd.concat(unmapped, ignore_index=True) if unmapped else pd.DataFrame()
    if len(merged):
        merged = merged.groupby(["partner", "field", "source_value"], as_index=False)["count"].sum()
    unknown_rows = pd.concat(unknown, ignore_index=True) if unknown else pd.DataFrame()
    if len(unknown_rows):
        unknown_rows = unknown_rows.groupby("field", as_index=False)["rows"].sum()
    report = restrict_unmapped(
        merged, unknown_rows, rows, config.coded_fields, unmapped_min_rows(config)
    )
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.touch(mode=0o600)
    out_file.chmod(0o600)
    write_report_csv(report, out_file)
    listed = int((report["note"] == "").sum()) if len(report) else 0
    return {"partner": partner, "report": str(out_file), "rows": rows, "values_listed": listed}


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
    """Build the release folder aside (CSV, Parquet, reconciliation, restricted unmapped
    values, metadata); `load_warehouse` publishes it together with the warehouse load."""
    locks.check(plan["lock"], plan["release"])
    info = release_mod.write(plan)
    log.info(
        "release %s staged for %s (%d rows)", plan["release"], info["release_dir"], info["rows"]
    )
    return info


def load_warehouse(plan: dict, url: str | None = None) -> dict:
    """Load the staged release into the warehouse (one transaction, idempotent per release
    label), then publish the release folder; then drop the work folder."""
    locks.check(plan["lock"], plan["release"])
    counts = release_mod.load(plan, url)
    counts["privacy"] = registry.record_and_purge(plan, url)  # PRIVACY: registry + purge
    shutil.rmtree(plan["work_dir"], ignore_errors=True)
    log.info("warehouse: %d case records for release %s", counts["case_records"], plan["release"])
    return counts


def finish_run(plan: dict) -> dict:
    """End of a run, successful or not: remove the private work folder (staged frames, the
    unmapped list) and give the release's lock back. Idempotent; the DAG's teardown task."""
    if "work_dir" not in plan:  # nothing delivered: the plan took no lock and made no folder
        return {"release": plan["release"], "work_folder_removed": False}
    work = Path(plan["work_dir"])
    removed = work.exists()
    shutil.rmtree(work, ignore_errors=True)
    locks.release(plan["lock"])
    log.info("release %s: work folder removed, lock released", plan["release"])
    return {"release": plan["release"], "work_folder_removed": removed}


def hand_off(plan: dict) -> dict:
    """Write the release's hand-off folder for synthesis (table + manifest): synthesis.handoff."""
    from ctdc_harmonizer.synthesis.handoff import write_handoff

    info = write_handoff(plan["release_dir"])
    log.info(
        "release %s handed off in %s (%d rows)", plan["release"], info["handoff"], info["rows"]
    )
    return info


def _worker_logging() -> None:
    from ctdc_harmonizer.safety import ValueFreeTracebacks

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(ValueFreeTracebacks())


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
    try:
        info = _run_planned(plan, warehouse_url, workers)
    finally:
        finish_run(plan)  # on failure too: no staged frame or unmapped list stays behind
    return info


def _run_planned(plan: dict, warehouse_url: str | None, workers: int | None) -> dict:
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
    info["unmapped_partner_folders"] = plan["unmapped_partner_folders"]
    info["handoff"] = hand_off(plan)
    return info
