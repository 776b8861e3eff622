"""The release folder, built complete and aside before anything is published.

`build_release` writes, into an empty staging folder on the out folder's file system, the
harmonized table (CSV and Parquet), the reconciliation, the reports (restricted unmapped values,
value issues, rejects: never a value), coverage, overlaps, the Great Expectations results and
metadata.json. After approval the store commits the release and the folder is renamed into place
(pipeline/annual_update/publication.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.columns import ISSUE_COLUMNS, REJECT_REPORT_COLUMNS, UNMAPPED_REPORT_COLUMNS
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.fileio import named_os_errors, sha256_of, write_json
from ctdc_harmonizer.release.metadata import MARKER
from ctdc_harmonizer.release.quality import categorical, validate_release
from ctdc_harmonizer.safety import write_report_csv

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
    rejects: pd.DataFrame  # partner, file, row, column, reason of every rejected row
    coverage: dict[str, dict]  # per partner
    overlaps: dict | None
    metadata: dict
    # the rows Great Expectations checks (the versions new in this release); None: all
    checked: np.ndarray | None = None


def _report_rows(frames: list[pd.DataFrame], columns: list[str], order: list[str]):
    frames = [f.astype({"count": int}) for f in frames if not f.empty and "count" in f]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns].sort_values(order, kind="stable")


def folder_digest(folder: str | Path) -> str:
    """sha256 over every file's relative path and content hash: the release's identity."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = (p for p in folder.rglob("*") if p.is_file())
    for path in sorted(files):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_of(path)}\n".encode())
    return digest.hexdigest()


def _arrow_text(column: pd.Series) -> pd.Series:
    """A text (or categorical) column as Arrow-backed text, decoded in C: no Python string
    per cell (a release of a million rows holds 26 million cells)."""
    values = pa.array(column, from_pandas=True)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return pd.Series(
        pd.arrays.ArrowStringArray(pa.chunked_array([values.cast(pa.string())])),
        index=column.index,
        name=column.name,
    )


def release_table(frame: pd.DataFrame, codebook: Codebook) -> pd.DataFrame:
    """The release's table with its one set of dtypes (the year Int64, every other variable
    Arrow-backed text), in codebook order: a built release and a rebuilt one write the same
    bytes."""
    return pd.DataFrame(
        {
            var.name: frame[var.name].astype("Int64")
            if var.type == "year"
            else _arrow_text(frame[var.name])
            for var in codebook.variables
        }
    )


def _csv_header(columns: list[str]) -> bytes:
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(columns)
    return line.getvalue().encode("utf-8")


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """`table` as CSV: a header, NULL as an empty cell, a cell quoted only when it must be.

    Arrow writes it (about ten times faster than pandas at a million rows) unquoted, which
    gives pandas' bytes exactly as long as no cell holds a comma, a quote or a line break
    (codebook codes never do); Arrow refuses such a cell, and pandas then writes the file."""
    if len(table.columns) < 2:  # pandas quotes an empty text when it is a row's only cell
        table.to_csv(path, index=False, na_rep="", encoding="utf-8")
        return
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    try:
        with path.open("wb") as sink:
            sink.write(_csv_header(list(table.columns)))
            pacsv.write_csv(
                arrow, sink, pacsv.WriteOptions(include_header=False, quoting_style="none")
            )
    except pa.ArrowInvalid:
        table.to_csv(path, index=False, na_rep="", encoding="utf-8")


def write_table(table: pd.DataFrame, folder: Path) -> None:
    """harmonized.csv (NULL as an empty cell) and harmonized.parquet, into `folder`."""
    _write_parquet(table, folder)
    _write_csv(table, folder)


def _write_parquet(table: pd.DataFrame, folder: Path) -> None:
    with named_os_errors(folder / TABLE_PARQUET):
        table.to_parquet(folder / TABLE_PARQUET, index=False)


def _write_csv(table: pd.DataFrame, folder: Path) -> None:
    with named_os_errors(folder / TABLE_CSV):
        write_csv(table, folder / TABLE_CSV)


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
    table = release_table(content.harmonized, codebook)
    content.harmonized = None
    _write_parquet(table, staging)
    _write_csv(table, staging)
    validated = categorical(table)  # a few codes per column: the text table can go
    table = None
    write_json(staging / RECONCILIATION, content.reconciliation)
    order = ["partner", "field", "note", "source_value"]
    unmapped = _report_rows(content.unmapped, UNMAPPED_REPORT_COLUMNS, order)
    write_report_csv(unmapped, staging / UNMAPPED)
    issues = _report_rows(content.issues, ISSUE_COLUMNS, ISSUE_COLUMNS[:-1])
    write_report_csv(issues, staging / VALUE_ISSUES)
    rejects = content.rejects.reindex(columns=REJECT_REPORT_COLUMNS).astype({"row": "int64"})
    write_report_csv(
        rejects.sort_values(["partner", "file", "row"], kind="stable"), staging / REJECTS
    )
    write_json(staging / COVERAGE, content.coverage)
    if content.overlaps is not None:  # PRIVACY: counts only, small cells hidden
        write_json(staging / OVERLAPS, content.overlaps)
    # Dataset-level quality (Great Expectations) on what is about to be released.
    with named_os_errors(staging / "quality"):  # Great Expectations writes its own files
        quality = validate_release(
            validated, codebook, content.release_year, staging, checked=content.checked
        )
    validated = None
    if not quality["success"]:
        failed = quality["failed"] - quality["warnings"]
        raise CtdcError(
            f"release {content.release}: {failed} codebook expectation(s) failed; "
            f"see {staging / quality['summary']}"
        )
    write_json(staging / MARKER, {**content.metadata, "quality": quality})
    return quality


def staged_metadata(staging: Path) -> dict:
    """The built folder's metadata.json plus its content hash: what the store records."""
    from ctdc_harmonizer.fileio import read_json

    meta = read_json(staging / MARKER)
    meta["folder_sha256"] = folder_digest(staging)
    return meta


def swap_into_place(staging: Path, target: Path, aside: Path) -> None:
    """Rename the complete built folder into place (same file system: atomic renames).

    The old folder of the release is renamed aside first (then deleted): between the two
    renames the release name is absent, never half-written."""
    if aside.exists():
        shutil.rmtree(aside)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        check_replaceable(target)
        os.rename(target, aside)
    os.rename(staging, target)
    shutil.rmtree(aside, ignore_errors=True)
