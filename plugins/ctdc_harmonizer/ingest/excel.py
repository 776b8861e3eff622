"""Spreadsheets (the HTCDS template): calamine, a chunk of rows at a time."""

from __future__ import annotations

import datetime
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest.raw import RawFile, header_names
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.text import normalize_token

EXCEL_CHUNK_ROWS = 50_000


def read_excel(config: PartnerConfig, path: Path, wanted: list[str] | None) -> RawFile:
    """Read a sheet with calamine, 50,000 rows at a time, keeping only the wanted columns.

    pandas' own wrapper converts cell by cell in Python, and materialising a whole sheet
    as Python objects costs gigabytes at a few hundred thousand rows.
    """
    from python_calamine import CalamineWorkbook

    spec = config.reader
    declared = [f.name for f in config.fields]
    nulls = list(config.null_values)
    book = CalamineWorkbook.from_path(str(path))
    sheet = (
        book.get_sheet_by_name(spec.sheet)
        if isinstance(spec.sheet, str)
        else book.get_sheet_by_index(spec.sheet)
    )
    rows = sheet.iter_rows()
    top = list(islice(rows, spec.data_start_row - 1))
    if len(top) < spec.header_row:
        return RawFile(pd.DataFrame(), [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    header = header_names(
        [None if c == "" else c for c in top[spec.header_row - 1]], config.code, path.name
    )
    for number in range(spec.header_row + 1, len(top) + 1):  # the template rows, not records
        _check_template_row(config, path.name, header, top[number - 1], number)
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
    numbers = np.arange(spec.data_start_row, spec.data_start_row + len(frame))
    return RawFile(frame, header, numbers, blank)


def _check_template_row(
    config: PartnerConfig, file: str, header: list[str], cells: list, number: int
) -> None:
    """A row between the header and data_start_row is skipped unread, so it must not be a
    record: when a partner deletes the HTCDS label row, the first record moves up into its
    place and would be dropped without a word.

    The rule: a label row holds names, so no cell of a declared date column holds a date
    and no cell of a declared coded or country column holds a value the mapping knows
    (values.csv, countries.csv). Almost every record has a registration date and a few
    picklist answers, while the template's labels ('Birthdate', 'Gender') are neither.
    """
    dates = {f.name: f for f in config.fields_with_role("date")}
    known = {name: set(group["key"]) for name, group in config.values.groupby("field", sort=False)}
    countries = set(config.countries["key"])
    for spec in config.fields_with_role("country"):
        known.setdefault(spec.name, set()).update(countries)
    for name, cell in zip(header, cells, strict=False):  # one row of the template
        if cell is None or cell == "":
            continue
        looks_like_data = False
        if name in dates:
            looks_like_data = isinstance(cell, (datetime.date, datetime.datetime)) or pd.notna(
                pd.to_datetime(
                    pd.Series([str(cell)]), errors="coerce", format=dates[name].format or "ISO8601"
                ).iloc[0]
            )
        elif name in known:
            looks_like_data = normalize_token(str(cell)) in known[name]
        if looks_like_data:
            raise ExtractError(
                config.code,
                file,
                f"this row lies between the header (row {config.reader.header_row}) and the "
                f"first record (row {config.reader.data_start_row}) and should hold the "
                "template's labels, but it holds a record's data: was the label row deleted?",
                column=name,
                row=number,
            )
