"""The release folder, built complete and aside before anything is published.

`build_release` writes, into an empty staging folder on the out folder's file system, the
harmonized table (CSV and Parquet), the reconciliation, the reports (restricted unmapped values,
value issues, rejects: never a value), coverage, overlaps, the Great Expectations results and
metadata.json. release/publish.py then loads the warehouse and renames the folder into place.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.columns import (
    FILE,
    ISSUE_COLUMNS,
    REJECT_REPORT_COLUMNS,
    ROW,
    UNMAPPED_REPORT_COLUMNS,
    Outcome,
)
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.fileio import sha256_of, write_json
from ctdc_harmonizer.release.metadata import MARKER
from ctdc_harmonizer.release.quality import categorical, validate_release
from ctdc_harmonizer.safety import write_report_csv

# Written after the load from the release's own table, with its own manifest: not part of the
# identity recorded in the warehouse (it would otherwise read as a mismatch).
DERIVED_FOLDERS = ("handoff",)
TABLE_CSV, TABLE_PARQUET = "harmonized.csv", "harmonized.parquet"
RECONCILIATION, COVERAGE, OVERLAPS = "reconciliation.json", "coverage.json", "overlaps.json"
UNMAPPED, VALUE_ISSUES, REJECTS = "unmapped.csv", "value_issues.csv", "rejects.csv"


@dataclass
class ReleaseContent:
    """Everything a release folder holds, gathered from the run's work folder. `build_release`
    lets go of the table once it is written (a million records are a few hundred MiB)."""

    release: str
    release_year: int
    harmonized: pd.DataFrame  # the codebook columns, in codebook order
    reconciliation: dict
    unmapped: list[pd.DataFrame]  # per partner, already restricted
    issues: list[pd.DataFrame]  # per partner
    outcomes: dict[str, pd.DataFrame]  # per partner, every staged row's outcome
    coverage: dict[str, dict]  # per partner
    overlaps: dict | None
    metadata: dict


def _report_rows(frames: list[pd.DataFrame], columns: list[str], order: list[str]):
    frames = [f.astype({"count": int}) for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns].sort_values(order, kind="stable")


def rejects_report(outcomes: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Partner, file, row, column and reason of every rejected row (never its values)."""
    parts = []
    for partner, frame in sorted(outcomes.items()):
        rejected = frame[frame["outcome"] == Outcome.REJECTED]
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
    return pd.concat(parts, ignore_index=True)[REJECT_REPORT_COLUMNS].sort_values(
        ["partner", "file", "row"]
    )


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


def check_replaceable(target: Path) -> None:
    """Only a folder this pipeline wrote (it holds metadata.json) is ever replaced."""
    if target.exists() and not (target / MARKER).is_file():
        raise CtdcError(f"{target} exists and is not a release folder; not replacing it")


def build_release(content: ReleaseContent, staging: Path, codebook: Codebook) -> dict:
    """Write the complete release folder into `staging` (emptied first). Refuses a release
    whose counts do not reconcile or whose table fails a critical codebook expectation.
    Returns the quality summary."""
    if not content.reconciliation["invariant_holds"]:
        raise CtdcError(
            f"release {content.release}: row counts do not reconcile; see the run's "
            "reconciliation.json in its work folder"
        )
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    table = content.harmonized
    table.to_csv(staging / TABLE_CSV, index=False, na_rep="", encoding="utf-8")
    table.to_parquet(staging / TABLE_PARQUET, index=False)
    # Validated as categories (a few codes per column): the text table can go now.
    validated = categorical(table)
    content.harmonized = table = None
    write_json(staging / RECONCILIATION, content.reconciliation)
    order = ["partner", "field", "note", "source_value"]
    unmapped = _report_rows(content.unmapped, UNMAPPED_REPORT_COLUMNS, order)
    write_report_csv(unmapped, staging / UNMAPPED)
    issues = _report_rows(content.issues, ISSUE_COLUMNS, ISSUE_COLUMNS[:-1])
    write_report_csv(issues, staging / VALUE_ISSUES)
    write_report_csv(rejects_report(content.outcomes), staging / REJECTS)
    write_json(staging / COVERAGE, content.coverage)
    if content.overlaps is not None:  # PRIVACY: counts only, small cells hidden
        write_json(staging / OVERLAPS, content.overlaps)
    # Dataset-level quality (Great Expectations) on what is about to be released.
    quality = validate_release(validated, codebook, content.release_year, staging)
    if not quality["success"]:
        failed = quality["failed"] - quality["warnings"]
        raise CtdcError(
            f"release {content.release}: {failed} codebook expectation(s) failed; "
            f"see {staging / quality['summary']}"
        )
    write_json(staging / MARKER, {**content.metadata, "quality": quality})
    return quality
