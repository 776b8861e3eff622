"""Read one delivered file: declared columns only, nulls normalized, row numbers attached.

This stage and `ingest.deidentify` are the only places that see direct identifiers; what
leaves `deidentify` holds coded values, countries, numbers, years and ages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctdc_harmonizer.columns import FILE, REJECT, REJECT_COLUMN, ROW
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.fileio import sha256_of
from ctdc_harmonizer.ingest.delimited import read_csv
from ctdc_harmonizer.ingest.excel import read_excel
from ctdc_harmonizer.ingest.files import os_problem
from ctdc_harmonizer.ingest.jsonl import read_jsonl
from ctdc_harmonizer.ingest.raw import RawFile
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.text import nfc, normalize_series, normalize_token, per_distinct


@dataclass(frozen=True)
class ReadResult:
    frame: pd.DataFrame
    file: str
    sha256: str
    blank_rows: int
    dropped_columns: int
    cell_issues: tuple = ()  # workbook cells read as INVALID (excel.CellIssue), never values


def read_raw(config: PartnerConfig, path: Path, wanted: list[str] | None = None) -> RawFile:
    """A delivered file as text columns: `wanted` ones only, or all (None; for profiling).
    Spreadsheets always come whole. Errors name partner, file, column and line, never
    content."""
    spec = config.reader
    try:
        if spec.format == "excel":
            return read_excel(config, path, wanted)
        if spec.format == "csv":
            return read_csv(config, path, wanted)
        return read_jsonl(config, path, wanted)
    except ExtractError:
        raise
    except UnicodeDecodeError:
        raise ExtractError(config.code, path.name, f"not readable as {spec.encoding}") from None
    except OSError as exc:  # permission denied, a file that vanished, a folder named *.csv
        raise ExtractError(
            config.code, path.name, f"cannot be opened ({os_problem(exc)})"
        ) from None
    except Exception as exc:  # every reader library raises its own types
        # The library's message may quote file content, so only its type is kept.
        raise ExtractError(
            config.code, path.name, f"cannot be read as {spec.format} ({type(exc).__name__})"
        ) from None


def as_strings(column: pd.Series, nulls: list[str]) -> pd.Series:
    """Cells (str, int, float, date) as trimmed pandas strings, nulls as NA; converted once
    per distinct value. Excel hands whole numbers back as floats: 34.0 -> 34."""
    null_keys = [normalize_token(v) for v in nulls]

    def convert(text: pd.Series) -> pd.Series:
        # NFC: a country name typed on a Mac (decomposed accents) matches its usual spelling.
        text = nfc(text).str.strip()
        text = text.str.replace(r"^(-?\d+)\.0$", r"\1", regex=True)
        return text.where(~normalize_series(text).isin(null_keys))

    return per_distinct(column, convert)


def read_extract(
    config: PartnerConfig, path: Path, all_columns: bool = False, also: Sequence[str] = ()
) -> ReadResult:
    """Read one file: declared columns only, nulls normalized, row numbers attached.

    Only the columns needed downstream are converted (all declared ones with
    all_columns=True, for profiling); identifier columns are checked for presence
    and never read into the frame where the format allows it, except those named in
    `also` (the fields a delivered withdrawal is matched on; deidentify drops them).
    """
    declared = [f.name for f in config.fields]
    wanted = (
        declared
        if all_columns
        else [*config.kept_fields, *([config.record_id] if config.record_id else [])]
    )
    wanted = [*wanted, *(name for name in also if name not in wanted)]
    raw = read_raw(config, path, wanted)
    for spec in config.fields:
        if spec.required and spec.name not in raw.columns:
            raise ExtractError(
                config.code, path.name, "required column is missing", column=spec.name
            )
    # Unnamed and undeclared columns are dropped unread: they may hold anything.
    dropped = len([c for c in raw.columns if c not in declared])
    nulls = list(config.null_values)
    date_fields = {f.name for f in config.fields_with_role("date")}
    rows = len(raw.frame)
    frame = pd.DataFrame({FILE: path.name, ROW: raw.rows.astype(np.int64)})
    for name in wanted:
        if name not in raw.frame.columns:
            frame[name] = pd.Series(pd.NA, index=frame.index, dtype="string")
        elif name in date_fields and raw.frame[name].dtype == object:
            frame[name] = raw.frame[name].where(~raw.frame[name].isin(nulls)).to_numpy()
        else:
            frame[name] = as_strings(raw.frame[name], nulls).to_numpy()
    for name, values in ((REJECT, raw.reject), (REJECT_COLUMN, raw.reject_column)):
        frame[name] = pd.Series(values, dtype="string") if values is not None else pd.NA
        frame[name] = frame[name].astype("string")
    blank = np.zeros(rows, dtype=bool) if raw.blank is None else raw.blank
    frame = frame.loc[~blank].reset_index(drop=True)
    if frame.empty:
        # A delivered extract without records is a failed export far more often than a year
        # without cases; published, it would read as "no cases" downstream.
        raise ExtractError(
            config.code,
            path.name,
            "no data rows: the file holds its header only; deliver the extract again, or "
            "leave the partner out of this run",
        )
    try:
        digest = sha256_of(path)
    except OSError as exc:
        raise ExtractError(
            config.code, path.name, f"cannot be opened ({os_problem(exc)})"
        ) from None
    return ReadResult(frame, path.name, digest, int(blank.sum()), dropped, raw.cell_issues)
