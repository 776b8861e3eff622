"""Read a partner's delivered files and de-identify them on the spot.

This module is the only place that sees direct identifiers. What leaves it is a
frame of coded values, countries, numbers, years and ages: names, phones,
e-mails, addresses, case-worker names, notes and dates are gone. Birthdates
become whole-year ages at the reference date, other dates become years.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from ctdc_harmonizer.config import PartnerConfig, ReaderSpec
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.text import normalize_series, normalize_token, per_distinct
from ctdc_harmonizer.withdrawals import is_withdrawals_file

ROW = "_row"  # the row number a partner's data officer sees in the file (1-based)
FILE = "_file"
INVALID = "<invalid>"  # marks a value that was present but unreadable (the value itself is gone)
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
        and not is_withdrawals_file(p)
        and not p.name.startswith(("~$", "."))  # Office lock files, hidden files
        and any(fnmatch.fnmatch(p.name, pattern) for pattern in config.reader.files)
    )
    if not files:
        patterns = ", ".join(config.reader.files)
        raise ExtractError(config.code, str(folder), f"no file matches {patterns}")
    return files


EXCEL_CHUNK_ROWS = 50_000


def _read_excel(
    path: Path, spec: ReaderSpec, wanted: list[str] | None, declared: list[str], nulls: list[str]
) -> RawFile:
    """Read a sheet with calamine, 50,000 rows at a time, keeping only the wanted columns.

    pandas' own wrapper converts cell by cell in Python, and materialising a whole sheet
    as Python objects costs gigabytes at a few hundred thousand rows.
    """
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_path(str(path))
    sheet = (
        book.get_sheet_by_name(spec.sheet)
        if isinstance(spec.sheet, str)
        else book.get_sheet_by_index(spec.sheet)
    )
    rows = sheet.iter_rows()
    top = list(islice(rows, spec.data_start_row - 1))
    if len(top) < spec.header_row:
        return RawFile(pd.DataFrame(), [], spec.data_start_row, np.zeros(0, dtype=bool))
    header = [
        str(c).strip() if c not in (None, "") else f"Unnamed: {i}"
        for i, c in enumerate(top[spec.header_row - 1])
    ]
    keep = [i for i, name in enumerate(header) if wanted is None or name in wanted]
    # Blank rows are judged on the declared columns (all columns when none are declared yet).
    checked = [i for i, name in enumerate(header) if name in declared] or list(range(len(header)))
    frames, blanks = [], []
    while chunk := list(islice(rows, EXCEL_CHUNK_ROWS)):
        cells = np.array(chunk, dtype=object).reshape(len(chunk), len(header))
        empty = (cells == "") | pd.isna(cells)  # calamine gives "" for an empty cell
        cells[empty] = None
        in_nulls = pd.DataFrame(cells[:, checked]).isin(nulls).to_numpy(dtype=bool)
        # Template sheets carry formatted but empty rows: not records.
        blanks.append((empty[:, checked] | in_nulls).all(axis=1))
        frames.append(pd.DataFrame(cells[:, keep], columns=[header[i] for i in keep]))
    frame = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[header[i] for i in keep])
    )
    blank = np.concatenate(blanks) if blanks else np.zeros(0, dtype=bool)
    return RawFile(frame, header, spec.data_start_row, blank)


@dataclass(frozen=True)
class RawFile:
    frame: pd.DataFrame  # the wanted columns (excel: every column)
    columns: list[str]  # every column name in the file, in file order
    first_row: int  # row number of the first record
    blank: np.ndarray | None  # wholly empty rows (spreadsheets only)


def _csv_header(path: Path, encoding: str, delimiter: str) -> list[str]:
    with path.open(encoding=encoding, newline="") as handle:
        return [c.strip() for c in next(csv.reader(handle, delimiter=delimiter), [])]


def _read_csv(path: Path, spec: ReaderSpec, wanted: list[str] | None) -> RawFile:
    """pyarrow's multi-threaded parser, every column as text, only the wanted columns kept."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    header = _csv_header(path, spec.encoding, spec.csv_delimiter)
    keep = header if wanted is None else [c for c in wanted if c in header]
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(encoding=spec.encoding),
        parse_options=pacsv.ParseOptions(delimiter=spec.csv_delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            strings_can_be_null=False,
            include_columns=keep,
        ),
    )
    # Row numbers count records (header = 1): a note with a line break is still one record.
    return RawFile(_arrow_to_frame(table), header, 2, None)


def _read_jsonl(
    path: Path, spec: ReaderSpec, wanted: list[str] | None, delimiters: dict
) -> RawFile:
    """JSON lines through pyarrow; arrays (several citizenships) become delimited text."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import json as pajson

    table = pajson.read_json(path)
    columns = list(table.column_names)
    keep = {}
    for name in columns if wanted is None else [c for c in wanted if c in columns]:
        column = table[name]
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pc.binary_join(column.cast(pa.list_(pa.string())), delimiters.get(name, ";"))
        elif not pa.types.is_string(column.type):
            column = column.cast(pa.string())
        keep[name] = column
    return RawFile(_arrow_to_frame(pa.table(keep)), columns, 1, None)


def _arrow_to_frame(table) -> pd.DataFrame:
    frame = table.to_pandas(types_mapper=lambda _: pd.StringDtype("pyarrow"))
    return frame if len(frame.columns) else pd.DataFrame(index=range(table.num_rows))


def read_raw(config: PartnerConfig, path: Path, wanted: list[str] | None = None) -> RawFile:
    """A delivered file as text columns: `wanted` ones only, or all (None; for profiling).
    Spreadsheets always come whole. Errors name partner and file, never content."""
    spec = config.reader
    try:
        if spec.format == "excel":
            declared = [f.name for f in config.fields]
            return _read_excel(path, spec, wanted, declared, list(config.null_values))
        if spec.format == "csv":
            return _read_csv(path, spec, wanted)
        delimiters = {f.name: f.delimiter or ";" for f in config.fields}
        return _read_jsonl(path, spec, wanted, delimiters)
    except UnicodeDecodeError:
        raise ExtractError(config.code, path.name, f"not readable as {spec.encoding}") from None
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
        text = text.str.strip().str.replace(r"^(-?\d+)\.0$", r"\1", regex=True)
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
    frame = pd.DataFrame({FILE: path.name, ROW: np.arange(raw.first_row, raw.first_row + rows)})
    for name in wanted:
        if name not in raw.frame.columns:
            frame[name] = pd.Series(pd.NA, index=frame.index, dtype="string")
        elif name in date_fields and raw.frame[name].dtype == object:
            frame[name] = raw.frame[name].where(~raw.frame[name].isin(nulls)).to_numpy()
        else:
            frame[name] = as_strings(raw.frame[name], nulls).to_numpy()
    blank = np.zeros(rows, dtype=bool) if raw.blank is None else raw.blank
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
