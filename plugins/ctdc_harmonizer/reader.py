"""Read a partner's delivered files and de-identify them on the spot.

This module is the only place that sees direct identifiers. What leaves it is a
frame of coded values, countries, numbers, years and ages: names, phones,
e-mails, addresses, case-worker names, notes and dates are gone. Birthdates
become whole-year ages at the reference date, other dates become years.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctdc_harmonizer.config import PartnerConfig
from ctdc_harmonizer.errors import ExtractError

ROW = "_row"  # the row number a partner's data officer sees in the file (1-based)
FILE = "_file"
INVALID = "<invalid>"  # marks a value that was present but unreadable (the value itself is gone)
WITHDRAWALS_FILE = "withdrawals.csv"
MAX_AGE = 120


@dataclass(frozen=True)
class ReadResult:
    frame: pd.DataFrame
    file: str
    sha256: str
    blank_rows: int
    dropped_columns: int


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_extract_files(config: PartnerConfig, landing: Path) -> list[Path]:
    """The partner's delivered files in landing/<partner>/, in name order."""
    folder = landing / config.code
    if not folder.is_dir():
        raise ExtractError(config.code, str(folder), "landing folder for this partner not found")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.name != WITHDRAWALS_FILE
        and any(fnmatch.fnmatch(p.name, pattern) for pattern in config.reader.files)
    )
    if not files:
        patterns = ", ".join(config.reader.files)
        raise ExtractError(config.code, str(folder), f"no file matches {patterns}")
    return files


def _read_excel(
    path: Path, sheet: str | int, header_row: int, data_start_row: int
) -> tuple[pd.DataFrame, int]:
    """Read a sheet with calamine directly: pandas' wrapper converts cell by cell in Python,
    which is most of the cost on large workbooks."""
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_path(str(path))
    grid = (
        book.get_sheet_by_name(sheet) if isinstance(sheet, str) else book.get_sheet_by_index(sheet)
    ).to_python(skip_empty_area=False)
    if len(grid) < header_row:
        return pd.DataFrame(), data_start_row
    header = [
        str(c).strip() if c not in (None, "") else f"Unnamed: {i}"
        for i, c in enumerate(grid[header_row - 1])
    ]
    frame = pd.DataFrame(grid[data_start_row - 1 :], columns=header, dtype=object)
    return frame.replace("", None), data_start_row


def _read_raw(config: PartnerConfig, path: Path) -> tuple[pd.DataFrame, int]:
    """The file as an object frame plus the row number of its first data row."""
    spec = config.reader
    try:
        if spec.format == "excel":
            return _read_excel(path, spec.sheet, spec.header_row, spec.data_start_row)
        if spec.format == "csv":
            frame = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                encoding=spec.encoding,
                sep=spec.csv_delimiter,
            )
            return frame, 2
        frame = pd.read_json(path, lines=True, dtype=False, encoding=spec.encoding)
        delimiters = {f.name: f.delimiter or ";" for f in config.fields}
        for name in frame.select_dtypes(include="object").columns:
            # JSON arrays (several citizenships) become delimited text, as in CSV exports
            is_list = frame[name].map(lambda cell: isinstance(cell, list))
            if is_list.any():
                joined = frame[name].str.join(delimiters.get(name, ";"))
                frame[name] = frame[name].where(~is_list, joined)
        return frame, 1
    except UnicodeDecodeError:
        raise ExtractError(config.code, path.name, f"not readable as {spec.encoding}") from None
    except Exception as exc:  # every reader library raises its own types
        # The library's message may quote file content, so only its type is kept.
        raise ExtractError(
            config.code, path.name, f"cannot be read as {spec.format} ({type(exc).__name__})"
        ) from None


def _as_strings(column: pd.Series, nulls: list[str]) -> pd.Series:
    """Object cells (str, int, float) as trimmed pandas strings, nulls as NA; converted once
    per distinct value. Excel hands whole numbers back as floats: 34.0 -> 34."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    text = pd.Series(uniques, dtype=object).astype("string").str.strip()
    text = text.str.replace(r"^(-?\d+)\.0$", r"\1", regex=True).replace(nulls, pd.NA)
    spread = np.append(text.to_numpy(dtype=object, na_value=None), None)[codes]
    return pd.Series(spread, index=column.index, dtype="string")


def read_extract(config: PartnerConfig, path: Path, all_columns: bool = False) -> ReadResult:
    """Read one file: declared columns only, nulls normalized, row numbers attached.

    Only the columns needed downstream are converted (all declared ones with
    all_columns=True, for profiling); identifier columns are checked for presence
    and dropped. Wholly empty rows are not records and are counted apart.
    """
    raw, first_row = _read_raw(config, path)
    raw.columns = [str(c).strip() for c in raw.columns]
    for spec in config.fields:
        if spec.required and spec.name not in raw.columns:
            raise ExtractError(
                config.code, path.name, "required column is missing", column=spec.name
            )
    declared = [f.name for f in config.fields]
    present = [name for name in declared if name in raw.columns]
    # Unnamed and undeclared columns are dropped unread: they may hold anything.
    dropped = len([c for c in raw.columns if c not in present])
    nulls = list(config.null_values)
    blank = (raw[present].isna() | raw[present].isin(nulls)).all(axis=1).to_numpy()
    wanted = (
        declared
        if all_columns
        else [*config.kept_fields, *([config.record_id] if config.record_id else [])]
    )
    date_fields = {f.name for f in config.fields_with_role("date")}
    frame = pd.DataFrame({FILE: path.name, ROW: np.arange(first_row, first_row + len(raw))})
    for name in wanted:
        if name not in raw.columns:
            frame[name] = pd.Series(pd.NA, index=frame.index, dtype="string")
        elif name in date_fields:
            frame[name] = raw[name].where(~raw[name].isin(nulls)).to_numpy()
        else:
            frame[name] = _as_strings(raw[name], nulls).to_numpy()
    frame = frame.loc[~blank].reset_index(drop=True)
    return ReadResult(frame, path.name, sha256_of(path), int(blank.sum()), dropped)


def _parse_dates(values: pd.Series, fmt: str) -> pd.Series:
    """Dates from text (ISO 8601 unless the field declares a format) or from Excel date
    cells, which arrive as date objects and parse whatever the format."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    return pd.to_datetime(values, errors="coerce", format=fmt or "ISO8601")


def whole_years_between(born: pd.Series, at: pd.Series) -> pd.Series:
    """Completed years from `born` to `at` (the birthday must have been reached)."""
    years = at.dt.year - born.dt.year
    before_birthday = (at.dt.month < born.dt.month) | (
        (at.dt.month == born.dt.month) & (at.dt.day < born.dt.day)
    )
    return (years - before_birthday.astype("Int64")).astype("Int64")


def deidentify(config: PartnerConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """Replace birthdates by ages and dates by years; drop every field not needed downstream.

    A value that was present but could not be read becomes the INVALID marker, so the
    mapper can count it without ever seeing it.
    """
    out = frame.copy()
    date_specs = {f.name: f for f in config.fields_with_role("date")}
    parsed = {name: _parse_dates(out[name], spec.format) for name, spec in date_specs.items()}
    present = {name: out[name].notna() for name in date_specs}
    ages: dict[str, pd.Series] = {}
    for sources in config.derive.values():
        for source in sources:
            if source.method != "birthdate":
                continue
            born, at = parsed[source.field], parsed[source.reference]
            age = whole_years_between(born, at)
            # Unreadable birthdate, or an age outside 0..MAX_AGE: present but unusable.
            bad = (present[source.field] & born.isna()) | (age < 0) | (age > MAX_AGE)
            text = age.astype("string").where(~bad.fillna(False), INVALID)
            ages[source.field] = text.where(present[source.field], pd.NA)
    for name in date_specs:
        if name in ages:
            out[name] = ages[name]
            continue
        year = parsed[name].dt.year.astype("Int64").astype("string")
        out[name] = year.where(parsed[name].notna(), INVALID).where(present[name], pd.NA)
    keep = [FILE, ROW, *config.kept_fields]
    if config.record_id:
        keep.append(config.record_id)
    return out[keep]


def read_withdrawals(config: PartnerConfig, landing: Path) -> pd.Series:
    """Record ids whose survivors withdrew consent: erased before anything else happens."""
    path = landing / config.code / WITHDRAWALS_FILE
    if not path.exists():
        return pd.Series([], dtype="string")
    if not config.record_id:
        raise ExtractError(
            config.code, WITHDRAWALS_FILE, "withdrawals need 'record_id' in partner.yaml"
        )
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "record_id" not in table.columns:
        raise ExtractError(config.code, WITHDRAWALS_FILE, "required column is missing", "record_id")
    return table["record_id"].astype("string").str.strip()
