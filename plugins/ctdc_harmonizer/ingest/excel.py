"""Spreadsheets (the HTCDS template): fastexcel into Arrow, every cell as text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest.raw import RawFile, arrow_to_frame, header_names
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.text import normalize_token

# How fastexcel writes a date cell as text. A text cell holding exactly this is taken for a
# date too (it is one, written the way Excel shows it).
EXCEL_DATE_CELL = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"


def parse_dates(values: pd.Series, fmt: str) -> pd.Series:
    """A spreadsheet's date column as datetimes: date cells (as `EXCEL_DATE_CELL` text) and
    text cells in the field's declared format (ISO 8601 when none is declared)."""
    parsed = pd.to_datetime(values, errors="coerce", format=fmt or "ISO8601")
    if fmt:
        cells = values.where(values.str.fullmatch(EXCEL_DATE_CELL).fillna(False))
        parsed = parsed.fillna(pd.to_datetime(cells, errors="coerce", format="ISO8601"))
    return parsed


def _row(table, index: int) -> list:
    return [table.column(i)[index].as_py() for i in range(table.num_columns)]


def read_excel(config: PartnerConfig, path: Path, wanted: list[str] | None) -> RawFile:
    """Read a sheet with fastexcel straight into Arrow, every cell as text, the sheet parsed
    once: the header and template rows are its first rows, the records the rest. Only the
    wanted columns become a frame."""
    import fastexcel
    import pyarrow as pa
    import pyarrow.compute as pc

    spec = config.reader
    declared = [f.name for f in config.fields]
    sheet = fastexcel.read_excel(str(path)).load_sheet(
        spec.sheet, header_row=None, dtypes="string", eager=True
    )
    table = pa.Table.from_batches([sheet])
    if table.num_rows < spec.header_row:
        return RawFile(pd.DataFrame(), [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    cells = [None if c == "" else c for c in _row(table, spec.header_row - 1)]
    header = header_names(cells, config.code, path.name)
    last_template_row = min(spec.data_start_row - 1, table.num_rows)
    for number in range(spec.header_row + 1, last_template_row + 1):  # template rows only
        _check_template_row(config, path.name, header, _row(table, number - 1), number)
    records = table.slice(spec.data_start_row - 1).rename_columns(header)
    keep = [name for name in header if wanted is None or name in wanted]
    # Blank rows are judged on the declared columns (all columns when none are declared yet).
    checked = [name for name in header if name in declared] or header
    empty = pa.array(["", *config.null_values], type=pa.string())
    blank = np.ones(records.num_rows, dtype=bool)
    for name in checked:  # columns, not records
        column = records.column(name)
        unset = pc.or_kleene(pc.is_null(column), pc.is_in(column, value_set=empty))
        blank &= unset.to_numpy(zero_copy_only=False)
    frame = arrow_to_frame(records.select(keep))
    numbers = np.arange(spec.data_start_row, spec.data_start_row + records.num_rows)
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
            when = parse_dates(pd.Series([str(cell)], dtype="string"), dates[name].format)
            looks_like_data = pd.notna(when.iloc[0])
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
