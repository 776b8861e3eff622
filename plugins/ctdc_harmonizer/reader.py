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


def _read_raw(config: PartnerConfig, path: Path) -> tuple[pd.DataFrame, int]:
    """The file as an object frame plus the row number of its first data row."""
    spec = config.reader
    try:
        if spec.format == "excel":
            # Rows above the header and between header and data (HTCDS: a label row) are skipped.
            skip = list(range(spec.header_row - 1)) + list(
                range(spec.header_row, spec.data_start_row - 1)
            )
            frame = pd.read_excel(
                path, sheet_name=spec.sheet, header=0, skiprows=skip, dtype=object, engine="calamine"
            )
            return frame, spec.data_start_row
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
        return frame, 1
    except UnicodeDecodeError as exc:
        raise ExtractError(config.code, path.name, f"not readable as {spec.encoding}") from None
    except Exception as exc:  # every reader library raises its own types
        # The library's message may quote file content, so only its type is kept.
        raise ExtractError(
            config.code, path.name, f"cannot be read as {spec.format} ({type(exc).__name__})"
        ) from None


def _as_strings(column: pd.Series) -> pd.Series:
    """Object cells (str, int, float, list from JSON) as trimmed pandas strings."""
    if column.map(type).eq(list).any():
        column = column.where(~column.map(type).eq(list), column.str.join(";"))
    text = column.astype("string").str.strip()
    # Excel hands whole numbers back as floats: 34.0 -> 34.
    return text.str.replace(r"^(-?\d+)\.0$", r"\1", regex=True)


def read_extract(config: PartnerConfig, path: Path) -> ReadResult:
    """Read one file: declared columns only, nulls normalized, row numbers attached."""
    raw, first_row = _read_raw(config, path)
    raw.columns = [str(c).strip() for c in raw.columns]
    raw[ROW] = range(first_row, first_row + len(raw))
    declared = [f.name for f in config.fields]
    for spec in config.fields:
        if spec.required and spec.name not in raw.columns:
            raise ExtractError(config.code, path.name, "required column is missing", column=spec.name)
    present = [name for name in declared if name in raw.columns]
    # Unnamed and undeclared columns are dropped unread: they may hold anything.
    dropped = len([c for c in raw.columns if c not in present and c != ROW])
    frame = pd.DataFrame({ROW: raw[ROW].to_numpy()})
    date_fields = {f.name for f in config.fields_with_role("date")}
    nulls = list(config.null_values)
    for name in present:
        if name in date_fields:
            frame[name] = raw[name].where(~raw[name].astype("string").str.strip().isin(nulls))
        else:
            frame[name] = _as_strings(raw[name]).replace(nulls, pd.NA)
    for spec in config.fields:
        if spec.name not in frame.columns:
            frame[spec.name] = pd.Series(pd.NA, index=frame.index, dtype="string")
    data_columns = [c for c in frame.columns if c != ROW]
    blank = frame[data_columns].isna().all(axis=1)
    frame = frame.loc[~blank].reset_index(drop=True)
    frame.insert(0, FILE, path.name)
    return ReadResult(frame, path.name, sha256_of(path), int(blank.sum()), dropped)


def _parse_dates(values: pd.Series, fmt: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    text = values.astype("string")
    parsed = pd.to_datetime(text, errors="coerce", format=fmt or "ISO8601")
    # Excel cells already typed as dates arrive as datetime objects.
    is_stamp = values.map(lambda v: isinstance(v, pd.Timestamp)).astype(bool)
    if is_stamp.any():
        parsed = parsed.where(~is_stamp, pd.to_datetime(values.where(is_stamp), errors="coerce"))
    return parsed


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
