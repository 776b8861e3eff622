"""The release folder and the warehouse load."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd

from ctdc_harmonizer import __version__
from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.config import load_partner
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.harmonize import ISSUE_COLUMNS, REJECTED, UNMAPPED_COLUMNS
from ctdc_harmonizer.quality import validate_release
from ctdc_harmonizer.reader import FILE, ROW

MARKER = "metadata.json"  # a folder holding it is a release this pipeline may replace


def _csv_frames(work: Path, partners: list[str], name: str, columns: list[str]) -> pd.DataFrame:
    frames = [
        pd.read_csv(work / p / name, dtype={"count": int}, keep_default_na=False) for p in partners
    ]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns].sort_values(columns[:-1], kind="stable")


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
    codebook = default_codebook()
    work = Path(plan["work_dir"])
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
    _csv_frames(work, partners, "unmapped.csv", UNMAPPED_COLUMNS).to_csv(
        staging / "unmapped.csv", index=False
    )
    _csv_frames(work, partners, "issues.csv", ISSUE_COLUMNS).to_csv(
        staging / "value_issues.csv", index=False
    )
    _rejects(work, partners).to_csv(staging / "rejects.csv", index=False)
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
    (staging / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")

    target = Path(plan["release_dir"])
    if target.exists():
        if not (target / MARKER).exists():
            raise CtdcError(f"{target} exists and is not a release folder; not replacing it")
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(target))
    return {
        "release": plan["release"],
        "release_dir": str(target),
        "rows": len(harmonized),
        "totals": recon["totals"],
        "quality": quality,
    }


def load(plan: dict, url: str | None = None) -> dict:
    from ctdc_harmonizer.warehouse import default_warehouse_url, load_release

    target = Path(plan["release_dir"])
    recon = json.loads((target / "reconciliation.json").read_text(encoding="utf-8"))
    meta = json.loads((target / MARKER).read_text(encoding="utf-8"))
    combined = pd.read_parquet(Path(plan["work_dir"]) / "combined.parquet")
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
                    "rows_duplicate": f["duplicates_merged"],
                }
            )
    url = url or default_warehouse_url(plan["out"])
    return load_release(url, plan["release"], combined, batches, entities, meta)
