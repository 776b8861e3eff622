"""The release folder and the warehouse load, published together.

`write` builds the complete release folder aside, in the run's private work folder (on the
same file system as the out folder). `load` loads the warehouse in one transaction that
records the folder's content hash (`folder_sha256` in the data_release row's metadata),
and only after the commit renames the folder into place. So a crash leaves either the old
release (folder and warehouse) or a new warehouse load whose hash the folder does not
match, which `release_state` (the plan step and `ctdc check`) detects and reports. A folder
holding part of a release never appears under its release name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from ctdc_harmonizer import __version__
from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.config import load_partner
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.harmonize import ISSUE_COLUMNS, REJECTED
from ctdc_harmonizer.quality import validate_release
from ctdc_harmonizer.reader import FILE, ROW, sha256_of
from ctdc_harmonizer.safety import UNMAPPED_REPORT_COLUMNS, write_report_csv

log = logging.getLogger(__name__)

MARKER = "metadata.json"  # a folder holding it is a release this pipeline may replace


def _csv_frames(
    work: Path, partners: list[str], name: str, columns: list[str], order: list[str]
) -> pd.DataFrame:
    frames = [
        pd.read_csv(work / p / name, dtype=str, keep_default_na=False).astype({"count": int})
        for p in partners
    ]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns].sort_values(order, kind="stable")


def _rejects(work: Path, partners: list[str]) -> pd.DataFrame:
    parts = []
    for partner in partners:
        outcomes = pd.read_parquet(work / partner / "outcomes.parquet")
        rejected = outcomes[outcomes["outcome"] == REJECTED]
        parts.append(
            pd.DataFrame(
                {
                    "partner": partner,
                    "file": rejected[FILE],
                    "row": rejected[ROW],
                    "column": rejected["column"],
                    "reason": rejected["reason"],
                }
            )
        )
    return pd.concat(parts, ignore_index=True).sort_values(["partner", "file", "row"])


def metadata(plan: dict, rows: int, recon: dict) -> dict:
    codebook = default_codebook()
    codebook_bytes = Path(codebook.source_path).read_bytes()
    partners = {}
    for partner in sorted(plan["partners"]):
        config = load_partner(Path(plan["mappings"]) / partner)
        partners[partner] = {
            "name": config.name,
            "datasource": config.datasource,
            "mapping_sha256": config.mapping_hash,
            "files": {f: e["sha256"] for f, e in recon["partners"][partner]["files"].items()},
        }
    return {
        "release": plan["release"],
        "release_year": plan["release_year"],
        "rows": rows,
        "pipeline": {"package": "ctdc-harmonizer", "version": __version__},
        "codebook": {
            "title": codebook.title,
            "version": codebook.version,
            "file": Path(codebook.source_path).name,
            "sha256": hashlib.sha256(codebook_bytes).hexdigest(),
        },
        "columns": codebook.columns,
        "partners": partners,
        "null": "empty cell",
        "binary_true": "1",
    }


def write(plan: dict) -> dict:
    """Build the complete release folder aside (`<work>/release`); `load` publishes it."""
    codebook = default_codebook()
    work = Path(plan["work_dir"])
    target = Path(plan["release_dir"])
    if target.exists() and not (target / MARKER).is_file():
        raise CtdcError(f"{target} exists and is not a release folder; not replacing it")
    partners = sorted(plan["partners"])
    recon = json.loads((work / "reconciliation.json").read_text(encoding="utf-8"))
    if not recon["invariant_holds"]:
        where = work / "reconciliation.json"
        raise CtdcError(f"release {plan['release']}: row counts do not reconcile; see {where}")
    combined = pd.read_parquet(work / "combined.parquet")
    harmonized = combined[codebook.columns]

    staging = work / "release"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    harmonized.to_csv(staging / "harmonized.csv", index=False, na_rep="", encoding="utf-8")
    harmonized.to_parquet(staging / "harmonized.parquet", index=False)
    (staging / "reconciliation.json").write_text(
        json.dumps(recon, indent=2, sort_keys=True), encoding="utf-8"
    )
    write_report_csv(
        _csv_frames(
            work,
            partners,
            "unmapped.csv",
            UNMAPPED_REPORT_COLUMNS,
            ["partner", "field", "note", "source_value"],
        ),
        staging / "unmapped.csv",
    )
    write_report_csv(
        _csv_frames(work, partners, "issues.csv", ISSUE_COLUMNS, ISSUE_COLUMNS[:-1]),
        staging / "value_issues.csv",
    )
    write_report_csv(_rejects(work, partners), staging / "rejects.csv")
    coverage = {
        p: json.loads((work / p / "coverage.json").read_text(encoding="utf-8")) for p in partners
    }
    (staging / "coverage.json").write_text(
        json.dumps(coverage, indent=2, sort_keys=True), encoding="utf-8"
    )
    # PRIVACY: the overlap matrix across partners (counts only, small cells hidden).
    if (work / "overlaps.json").exists():
        shutil.copyfile(work / "overlaps.json", staging / "overlaps.json")
    # Dataset-level quality (Great Expectations) on what is about to be released.
    quality = validate_release(harmonized, codebook, int(plan["release_year"]), staging)
    if not quality["success"]:
        failed = quality["failed"] - quality["warnings"]
        raise CtdcError(
            f"release {plan['release']}: {failed} codebook expectation(s) failed; "
            f"see {staging / quality['summary']}"
        )
    meta = metadata(plan, len(harmonized), recon)
    meta["quality"] = quality
    meta["partners_without_delivery"] = plan.get("partners_without_delivery", [])
    meta["unmapped_partner_folders"] = plan.get("unmapped_partner_folders", [])
    (staging / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    return {
        "release": plan["release"],
        "release_dir": str(target),
        "staged_dir": str(staging),
        "folder_sha256": folder_digest(staging),
        "rows": len(harmonized),
        "totals": recon["totals"],
        "quality": quality,
    }


# Written after the load from the release's own table, with its own manifest: not part of the
# identity recorded in the warehouse (it would otherwise read as a mismatch).
DERIVED_FOLDERS = ("handoff",)


def folder_digest(folder: str | Path) -> str:
    """sha256 over every file's relative path and content hash: the release's identity."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = (
        p
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] not in DERIVED_FOLDERS
    )
    for path in sorted(files):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_of(path)}\n".encode())
    return digest.hexdigest()


def publish(staging: Path, target: Path, aside: Path) -> None:
    """Rename the complete staged folder into place (same file system: atomic renames).

    The old release is renamed aside first (then deleted): between the two renames the
    release name is absent, never half-written."""
    if aside.exists():
        shutil.rmtree(aside)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if not (target / MARKER).is_file():
            raise CtdcError(f"{target} exists and is not a release folder; not replacing it")
        os.rename(target, aside)
    os.rename(staging, target)
    shutil.rmtree(aside, ignore_errors=True)


def load(plan: dict, url: str | None = None) -> dict:
    """Load the staged release into the warehouse (one transaction, recording the folder's
    content hash), then publish the folder. See the module docstring for crash behaviour."""
    from ctdc_harmonizer.warehouse import default_warehouse_url, load_release

    work = Path(plan["work_dir"])
    staging = work / "release"
    target = Path(plan["release_dir"])
    recon = json.loads((staging / "reconciliation.json").read_text(encoding="utf-8"))
    meta = json.loads((staging / MARKER).read_text(encoding="utf-8"))
    meta["folder_sha256"] = folder_digest(staging)
    combined = pd.read_parquet(work / "combined.parquet")
    batches, entities = [], []
    for partner, entry in recon["partners"].items():
        entities.append(
            {
                "code": partner,
                "name": meta["partners"][partner]["name"],
                "datasource_type": meta["partners"][partner]["datasource"],
            }
        )
        for name, f in entry["files"].items():
            batches.append(
                {
                    "partner": partner,
                    "file": name,
                    "sha256": f["sha256"],
                    "rows_read": f["rows_read"],
                    "rows_harmonized": f["harmonized"],
                    "rows_rejected": sum(f["rejected"].values()),
                    "rows_excluded": sum(f["excluded"].values()),
                    "rows_erased": f["erased"],
                    "rows_duplicates_merged": f["duplicates_merged"],
                }
            )
    url = url or default_warehouse_url(plan["out"])
    log.info("release %s: loading the warehouse", plan["release"])
    counts = load_release(url, plan["release"], combined, batches, entities, meta)
    publish(staging, target, work / "previous-release")
    counts["folder_sha256"] = meta["folder_sha256"]
    return counts


# --- folder and warehouse agree? ---------------------------------------------------------------

CONSISTENT = "consistent"
ABSENT = "absent"
MISMATCH = "mismatch"
FOLDER_ONLY = "folder_only"
WAREHOUSE_ONLY = "warehouse_only"
UNVERIFIED = "unverified"  # loaded before hashes were recorded
UNREACHABLE = "warehouse_unreachable"
BAD_STATES = {MISMATCH, FOLDER_ONLY, WAREHOUSE_ONLY}


def warehouse_hashes(url: str) -> dict[str, str | None]:
    """release label -> folder_sha256 recorded at load time (None when not recorded)."""
    import sqlalchemy as sa

    from ctdc_harmonizer.warehouse.columns import RELEASE_TABLE

    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return {}  # do not create an empty database just to look into it
    engine = sa.create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(RELEASE_TABLE):
                return {}
            rows = conn.execute(sa.text(f"SELECT label, metadata_json FROM {RELEASE_TABLE}"))
            return {label: json.loads(meta or "{}").get("folder_sha256") for label, meta in rows}
    finally:
        engine.dispose()


def release_states(out: str | Path, url: str | None = None, only: str | None = None) -> dict:
    """Per release label in the out folder or the warehouse: does the folder's content hash
    match the one the warehouse recorded? Counts and labels only."""
    from ctdc_harmonizer.safety import describe
    from ctdc_harmonizer.warehouse import default_warehouse_url

    out = Path(out)
    folders = {p.name: p for p in (out.iterdir() if out.is_dir() else []) if (p / MARKER).is_file()}
    try:
        recorded = warehouse_hashes(url or default_warehouse_url(str(out)))
    except Exception as exc:  # a check must not crash on an unreachable database
        labels = [only] if only else sorted(folders)
        return {label: {"state": UNREACHABLE, "reason": describe(exc)} for label in labels}
    labels = [only] if only else sorted(set(folders) | set(recorded))
    states = {}
    for label in labels:
        folder, in_warehouse = folders.get(label), label in recorded
        if folder is None:
            state = WAREHOUSE_ONLY if in_warehouse else ABSENT
        elif not in_warehouse:
            state = FOLDER_ONLY
        elif recorded[label] is None:
            state = UNVERIFIED
        else:
            state = CONSISTENT if folder_digest(folder) == recorded[label] else MISMATCH
        states[label] = {"state": state}
    return states
