"""Withdrawals: survivors who asked for their data to be removed, erased before anything else.

A partner delivers `withdrawals.csv` (the name in any case: `Withdrawals.csv` too) in its
landing folder, next to its extract. Each line names one survivor, in one of two ways:

- **by record id** (partners whose partner.yaml names `record_id`, e.g. iom, hotline): a
  column `record_id` holding the partner's case id;
- **by identifying fields** (partners without a case id, e.g. the HTCDS template): the
  columns named in partner.yaml `withdrawals: {match_on: [...]}`, e.g. first name, second
  name and date of birth, as the NGO holds them. Both sides are normalised the same way by
  `identity_key` and matched exactly, in the reading step, before those fields are dropped.

Every record that matches is erased (all records of the same person) and counted under
`erased`. A withdrawals file the pipeline cannot apply is an ExtractError, never skipped:
a partner without record id or match fields, a missing column, an unreadable file, an
empty or unreadable cell, and a line that matches no delivered record. Messages name the
partner, the file, the column and the line; never a value.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.safety import os_reason
from ctdc_harmonizer.text import is_in, per_distinct

WITHDRAWALS_FILE = "withdrawals.csv"
RECORD_ID_COLUMN = "record_id"
# Joins the normalised parts of an identity key; cannot occur in normalised text.
KEY_SEPARATOR = "\x1f"
# Unicode combining marks (accents) left after NFKD decomposition: é -> e + U+0301.
_COMBINING = r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"


def is_withdrawals_file(path: str | Path) -> bool:
    """A partner's withdrawals file, whatever the case of its name; never an extract."""
    return Path(path).name.casefold() == WITHDRAWALS_FILE


# --- the normaliser: one key per person, for matching (and, later, for pseudonyms) --------


def _fold(text: pd.Series) -> pd.Series:
    text = (
        text.astype("string")
        .str.normalize("NFKD")
        .str.replace(_COMBINING, "", regex=True)
        .str.casefold()
        .str.replace(r"\s+", " ", regex=True)
        .str.strip()
    )
    return text.where(text != "")


def normalized_text(values: pd.Series) -> pd.Series:
    """Names as comparable text: Unicode NFKD with accents stripped, case-folded, spaces
    collapsed. `Zoë  Núñez`, `ZOE NUNEZ` and ` zoe nunez ` are equal; empty is missing.
    Names repeat (first names above all): each distinct value is folded once."""
    return per_distinct(values, _fold)


def _parse_text_dates(text: pd.Series, fmt: str) -> pd.Series:
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    if fmt:
        parsed = parsed.fillna(pd.to_datetime(text, errors="coerce", format=fmt))
    return parsed


def normalized_date(values: pd.Series, fmt: str = "") -> pd.Series:
    """Dates as ISO `YYYY-MM-DD` text: Excel date cells, ISO 8601 text, or text in the
    field's declared `format` (fields.csv). Unreadable, a bare number, or empty is missing."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    elif values.dtype == object:  # spreadsheet cells: date objects and text side by side
        kinds = values.map(type)
        distinct = kinds.unique()  # a handful of cell types: judged once each
        text = kinds.map({kind: issubclass(kind, str) for kind in distinct})
        cells = kinds.map({kind: issubclass(kind, dt.date) for kind in distinct})  # no numbers
        parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
        parsed[text] = _parse_text_dates(values[text].astype("string").str.strip(), fmt)
        parsed[cells] = pd.to_datetime(values[cells], errors="coerce")
    else:  # text: each distinct value parsed once (dates of birth repeat)
        return per_distinct(values.astype("string"), lambda text: _iso_text(text, fmt))
    return parsed.dt.strftime("%Y-%m-%d").astype("string")


def _iso_text(text: pd.Series, fmt: str) -> pd.Series:
    parsed = _parse_text_dates(text.astype("string").str.strip(), fmt)
    return parsed.dt.strftime("%Y-%m-%d").astype("string")


def identity_key(frame: pd.DataFrame, fields: Sequence) -> pd.Series:
    """One text key per row from the identifying fields (FieldSpec: name, role, format):
    dates normalised by `normalized_date`, everything else by `normalized_text`, joined
    by KEY_SEPARATOR. Missing when any part is missing, so a partial identity matches
    nothing. Vectorised; the key itself is an identifier and must never be logged."""
    parts = [
        normalized_date(frame[spec.name], spec.format)
        if spec.role == "date"
        else normalized_text(frame[spec.name])
        for spec in fields
    ]
    key = parts[0]
    for part in parts[1:]:
        key = key + KEY_SEPARATOR + part
    return key.astype("string")


# --- the withdrawals file ------------------------------------------------------------------


@dataclass(frozen=True)
class Withdrawals:
    """A partner's withdrawal requests, read and checked; `keys` is indexed by line number."""

    partner: str
    file: str
    by_record_id: bool
    columns: tuple[str, ...]  # the extract fields a record is matched on
    fields: tuple  # their FieldSpecs (identity matching)
    keys: pd.Series


def find_withdrawals_file(config: PartnerConfig, landing: Path) -> Path | None:
    folder = Path(landing) / config.code
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if is_withdrawals_file(p))
    if len(found) > 1:
        raise ExtractError(
            config.code,
            found[1].name,
            f"a second withdrawals file (names differ only in case): merge it into {found[0].name}",
        )
    if not found:
        return None
    path = found[0]
    if not path.resolve().is_relative_to(folder.resolve()) or not path.is_file():
        raise ExtractError(
            config.code, path.name, "not a regular file inside the partner's landing folder"
        )
    return path


def _no_method_message(config: PartnerConfig) -> str:
    return (
        "a withdrawals file was delivered but this partner's mapping has neither 'record_id' "
        "nor 'withdrawals: {match_on: [...]}' in partner.yaml, so no withdrawal can be "
        f"matched: add one of them to mappings/{config.code}/partner.yaml (mappings/README.md), "
        "or remove the withdrawn survivors' rows from the extract itself and take the "
        "withdrawals file out of the landing folder"
    )


def _encoding(config: PartnerConfig) -> str:
    """The partner's text encoding for CSV/JSON partners (UTF-8 for spreadsheets); a UTF-8
    byte-order mark, as Excel writes it, is accepted."""
    encoding = config.reader.encoding if config.reader.format != "excel" else "utf-8"
    return "utf-8-sig" if encoding.replace("_", "-").lower() in {"utf-8", "utf8"} else encoding


def _read_table(config: PartnerConfig, path: Path) -> pd.DataFrame:
    """The file as trimmed text cells, header names trimmed, index = physical line number.
    Blank lines are skipped. A requests file is short: read with the csv module, which
    knows the line of every record."""
    encoding = _encoding(config)
    delimiter = config.reader.csv_delimiter if config.reader.format == "csv" else ","
    try:
        data = path.read_bytes()
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        shown = encoding.removesuffix("-sig")
        line = data.count(b"\n", 0, exc.start) + 1
        raise ExtractError(config.code, path.name, f"not readable as {shown}", row=line) from None
    except OSError as exc:
        raise ExtractError(config.code, path.name, f"cannot be read: {os_reason(exc)}") from None
    except LookupError as exc:
        raise ExtractError(
            config.code, path.name, f"cannot be read ({type(exc).__name__})"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    start = 1
    try:
        for cells in reader:  # requests, not case records: tens of lines
            if any(c.strip() for c in cells):
                if header is None:
                    header = [c.strip() for c in cells]
                elif len(cells) != len(header):
                    raise ExtractError(
                        config.code,
                        path.name,
                        f"line has {len(cells)} fields, the header has {len(header)}",
                        row=start,
                    )
                else:
                    rows.append([c.strip() for c in cells])
                    lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ExtractError(
            config.code, path.name, f"cannot be parsed as CSV ({type(exc).__name__})", row=start
        ) from None
    if header is None:
        raise ExtractError(config.code, path.name, "the file is empty: no header line")
    duplicated = pd.Index(header)[pd.Index(header).duplicated()]
    if len(duplicated):
        raise ExtractError(
            config.code, path.name, "column name appears twice", column=duplicated[0], row=1
        )
    return pd.DataFrame(rows, columns=header, index=pd.Index(lines, name="line"), dtype="string")


def _column_map(table: pd.DataFrame) -> dict[str, str]:
    """Column names of the file by their case-folded form (`Record_ID` = `record_id`)."""
    return {c.casefold(): c for c in table.columns}


def load_withdrawals(config: PartnerConfig, landing: Path) -> Withdrawals | None:
    """The partner's withdrawal requests (None when no withdrawals file was delivered).
    Raises ExtractError for any file that cannot be applied in full."""
    path = find_withdrawals_file(config, landing)
    return None if path is None else read_withdrawals(config, path)


def read_withdrawals(config: PartnerConfig, path: Path) -> Withdrawals:
    """One withdrawals file's requests (also what `ctdc check-delivery` checks). Raises
    ExtractError for a file that cannot be applied in full."""
    if not config.record_id and not config.withdrawal_match:
        raise ExtractError(config.code, path.name, _no_method_message(config))
    table = _read_table(config, path)
    names = _column_map(table)
    if config.record_id and RECORD_ID_COLUMN in names:
        by_record_id, wanted = True, [RECORD_ID_COLUMN]
    elif config.withdrawal_match and all(f.casefold() in names for f in config.withdrawal_match):
        by_record_id, wanted = False, list(config.withdrawal_match)
    else:
        expected = [RECORD_ID_COLUMN] if config.record_id else []
        if config.withdrawal_match:
            expected.append(" + ".join(config.withdrawal_match))
        missing = next(
            c
            for c in ([RECORD_ID_COLUMN] if config.record_id else list(config.withdrawal_match))
            if c.casefold() not in names
        )
        raise ExtractError(
            config.code,
            path.name,
            f"required column is missing (expected: {' or '.join(expected)})",
            column=missing,
            row=1,
        )
    cells = table[[names[c.casefold()] for c in wanted]].set_axis(wanted, axis=1)
    empty = cells.isna() | (cells == "")
    if empty.any().any():
        line = int(empty.any(axis=1).idxmax())
        column = str(empty.loc[line].idxmax())
        raise ExtractError(config.code, path.name, "empty value", column=column, row=line)
    if by_record_id:
        return Withdrawals(
            config.code, path.name, True, (config.record_id,), (), cells[RECORD_ID_COLUMN]
        )
    fields = tuple(config.field(name) for name in wanted)
    for spec in fields:
        if spec.role == "date":
            bad = normalized_date(cells[spec.name], spec.format).isna()
            if bad.any():
                accepted = f"YYYY-MM-DD or {spec.format}" if spec.format else "YYYY-MM-DD"
                raise ExtractError(
                    config.code,
                    path.name,
                    f"not a date ({accepted})",
                    column=spec.name,
                    row=int(bad.idxmax()),
                )
    return Withdrawals(
        config.code, path.name, False, tuple(wanted), fields, identity_key(cells, fields)
    )


# --- applying them in the reading step -------------------------------------------------------


def match_columns(withdrawals: Withdrawals | None) -> list[str]:
    """Extract fields the reader must read (only when withdrawals were delivered)."""
    return list(withdrawals.columns) if withdrawals else []


def match_keys(withdrawals: Withdrawals | None, frame: pd.DataFrame) -> pd.Series:
    """Per delivered record (a frame as read, identifiers still present), the key its
    withdrawal would carry. Computed before the identifying fields are dropped."""
    if withdrawals is None:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    if withdrawals.by_record_id:
        return frame[withdrawals.columns[0]].astype("string").str.strip()
    return identity_key(frame, withdrawals.fields)


def erased_rows(
    withdrawals: Withdrawals | None,
    keys: Sequence[pd.Series],
    honoured: pd.Series | None = None,
) -> np.ndarray:
    """Which delivered records (the files' keys, in staging order) are erased. Every
    withdrawal must match at least one record, or be `honoured` elsewhere (per line: the
    person is already in the withdrawal registry or in a stored release, privacy.registry):
    one that matches nothing anywhere is an error naming its line, because a request the
    pipeline cannot apply is never skipped."""
    delivered = pd.concat(keys, ignore_index=True) if keys else pd.Series(dtype="string")
    if withdrawals is None:
        return np.zeros(len(delivered), dtype=bool)
    requested = withdrawals.keys
    missing = ~is_in(requested, delivered)
    if honoured is not None:
        missing &= ~honoured.reindex(requested.index, fill_value=False).to_numpy(dtype=bool)
    unmatched = requested.index[missing]
    if len(unmatched):
        how = "record_id" if withdrawals.by_record_id else ", ".join(withdrawals.columns)
        raise ExtractError(
            withdrawals.partner,
            withdrawals.file,
            f"withdrawal matches no delivered record, no stored release and no registered "
            f"withdrawal ({len(unmatched)} line(s) in all); check {how} against the extract: "
            "an unapplied withdrawal is never skipped",
            row=int(unmatched[0]),
        )
    return is_in(delivered, requested)
