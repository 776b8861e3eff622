"""Spreadsheets (the HTCDS template): fastexcel into Arrow, every cell as text."""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctdc_harmonizer.columns import INVALID
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest import sheet_process, workbook
from ctdc_harmonizer.ingest.raw import RawFile, arrow_to_frame, header_names
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.text import normalize_token

# How fastexcel writes a date cell as text. A text cell holding exactly this is taken for a
# date too (it is one, written the way Excel shows it).
EXCEL_DATE_CELL = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
# A sheet whose XML unpacks to more than this is parsed in a process of its own
# (ingest/sheet_process.py): the parser's peak, about 1.7 times the sheet's XML, stays out of
# the partner's worker. Below it (about 30,000 HTCDS rows) the parse costs less than a process.
SHEET_PROCESS_BYTES = 64 << 20


def parse_dates(values: pd.Series, fmt: str) -> pd.Series:
    """A spreadsheet's date column as datetimes: date cells (as `EXCEL_DATE_CELL` text) and
    text cells in the field's declared format (ISO 8601 when none is declared)."""
    parsed = pd.to_datetime(values, errors="coerce", format=fmt or "ISO8601")
    if fmt:
        cells = values.where(values.str.fullmatch(EXCEL_DATE_CELL).fillna(False))
        parsed = parsed.fillna(pd.to_datetime(cells, errors="coerce", format="ISO8601"))
    return parsed


@functools.lru_cache(maxsize=4096)
def _is_date(cell: str, fmt: str) -> bool:
    """Whether one cell reads as a date (parse_dates): a template's labels are the same in
    every workbook of a delivery, so each is parsed once."""
    return bool(pd.notna(parse_dates(pd.Series([cell], dtype="string"), fmt).iloc[0]))


def _row(table, index: int) -> list:
    return [table.column(i)[index].as_py() for i in range(table.num_columns)]


def _sheet_and_scan(
    config: PartnerConfig, path: Path, reader: Callable[[], Any]
) -> tuple[str, Callable[[], workbook.SheetScan | None], int]:
    """The data sheet (workbook.choose_sheet); how to scan it, for what its XML says that the
    cell reader does not (formulas without result, error cells, merges, where values start;
    .xlsx and .ods only); the size of its XML unpacked (0: not an .xlsx)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "xl/workbook.xml" in archive.namelist():
                sheets = workbook.xlsx_sheets(archive)
                name = workbook.choose_sheet(
                    config.code,
                    path.name,
                    [(s.name, s.visible) for s in sheets],
                    config.reader.sheet,
                )
                part = next(s.part for s in sheets if s.name == name)

                def scan_xlsx() -> workbook.SheetScan:
                    with zipfile.ZipFile(path) as archive:
                        return workbook.scan_sheet(config.code, path.name, archive, part, None)

                return name, scan_xlsx, archive.getinfo(part).file_size
            if workbook.is_ods(archive):
                name = _calamine_sheet(config, path, reader)

                def scan_ods() -> workbook.SheetScan:
                    with zipfile.ZipFile(path) as archive:
                        return workbook.scan_ods_sheet(config.code, path.name, archive, name)

                return name, scan_ods, 0
    # Not a zip: calamine says what it is.
    return _calamine_sheet(config, path, reader), lambda: None, 0


def _calamine_sheet(config: PartnerConfig, path: Path, reader: Callable[[], Any]) -> str:
    """The data sheet of an .ods, from the sheet states calamine reads."""
    states = [
        (name, reader().load_sheet(name, header_row=None, n_rows=1).visible == "visible")
        for name in reader().sheet_names
    ]
    return workbook.choose_sheet(config.code, path.name, states, config.reader.sheet)


@dataclass(frozen=True)
class CellIssue:
    """A cell of a read column the reader could not read exactly (never its value)."""

    sheet: str
    cell: str  # its reference, C17
    column: str  # the field name of its column
    row: int
    reason: str  # workbook.CELL_REASONS


def read_excel(config: PartnerConfig, path: Path, wanted: list[str] | None) -> RawFile:
    """Read the data sheet with fastexcel straight into Arrow, every cell as text, the sheet
    parsed once: the header and template rows are its first rows, the records the rest. Only
    the wanted columns become a frame.

    What a person sees is what is read (mappings/README.md, "Workbooks"): a merged range's
    value in every cell it covers; a formula through its stored result; a cell that cannot
    be read exactly is the INVALID marker, and a record whose inclusion or identity field
    holds one is rejected with the reason.
    """
    import fastexcel
    import pyarrow as pa
    import pyarrow.compute as pc

    spec = config.reader
    declared = [f.name for f in config.fields]
    workbook.check_workbook_file(config.code, path, workbook.reader_limits())
    # Opened when needed: an .xlsx parsed in a process of its own is not opened here.
    reader = functools.cache(lambda: fastexcel.read_excel(str(path)))
    sheet_name, scan_sheet, sheet_bytes = _sheet_and_scan(config, path, reader)
    if sheet_bytes > SHEET_PROCESS_BYTES:
        # The child parses the cells while this process scans the sheet's XML.
        with sheet_process.SheetInChild(path, sheet_name) as child:
            scan = scan_sheet()
            try:
                table, first_column = child.result()
            except sheet_process.SheetProcessError as exc:
                raise ExtractError(
                    config.code, path.name, f"cannot be read as excel ({exc.kind})"
                ) from None
    else:
        scan = scan_sheet()
        table, first_column = sheet_process.load_sheet(reader(), sheet_name)
    # calamine starts at the first row holding a value; sheet row = table index + 1 + top.
    top = (scan.first_row - 1) if scan is not None and scan.first_row else 0
    header_at = spec.header_row - 1 - top
    if header_at < 0 or table.num_rows <= header_at:
        return RawFile(pd.DataFrame(), [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    header_cells = [None if c == "" else c for c in _row(table, header_at)]
    header = header_names(header_cells, config.code, path.name)
    data_at = spec.data_start_row - 1 - top
    problems = _problems(config, path.name, sheet_name, scan, header, first_column)
    records = table.slice(data_at).rename_columns(header)
    records = _fill_merges(records, scan, spec.data_start_row, first_column)
    for number in range(spec.header_row + 1, spec.data_start_row):  # template rows only
        if number - 1 - top < table.num_rows:
            _check_template_row(config, path.name, header, _row(table, number - 1 - top), number)
    keep = [name for name in header if wanted is None or name in wanted]
    # Blank rows are judged on the declared columns (all columns when none are declared yet).
    checked = [name for name in header if name in declared] or header
    empty = pa.array(["", *config.null_values], type=pa.string())
    blank = np.ones(records.num_rows, dtype=bool)
    if records.num_rows:
        # The checked columns end to end, judged in one pass (not one per column: a delivery
        # of many small workbooks would pay for each).
        # Chained, not concatenated: the columns' text is not copied.
        cells = pa.chunked_array(
            [
                chunk if chunk.type == pa.string() else chunk.cast(pa.string())
                for name in checked
                for chunk in records.column(name).chunks
            ],
            type=pa.string(),
        )
        unset = pc.or_kleene(pc.is_null(cells), pc.is_in(cells, value_set=empty))
        blank = unset.to_numpy(zero_copy_only=False).reshape(len(checked), -1).all(axis=0)
    numbers = np.arange(spec.data_start_row, spec.data_start_row + records.num_rows)
    if not problems:  # the usual workbook: its columns stay in Arrow until the delivery's
        return RawFile(records.select(keep), header, numbers, blank, None, None, ())
    frame = arrow_to_frame(records.select(keep))
    reject, reject_column, issues = _apply_problems(config, frame, numbers, problems, blank)
    return RawFile(frame, header, numbers, blank, reject, reject_column, issues)


def _problems(
    config: PartnerConfig,
    file: str,
    sheet: str,
    scan: workbook.SheetScan | None,
    header: list[str],
    first_column: int,
) -> list[CellIssue]:
    """The scan's unreadable cells in the data rows, by field name; one in the header row
    is an error (the column's name is unknown). Merges that start above the first record
    and reach into the records are ambiguous for every record cell they cover."""
    if scan is None:
        return []
    spec = config.reader
    cells = dict(scan.problems)
    for merge in scan.merges:
        if merge.first_row < spec.data_start_row <= merge.last_row:
            for row in range(spec.data_start_row, merge.last_row + 1):  # a range's cells
                for column in range(merge.first_column, merge.last_column + 1):
                    cells.setdefault((row, column), workbook.AMBIGUOUS_MERGE)
    issues = []
    for (row, column), reason in sorted(cells.items()):
        index = column - first_column
        ref = f"{workbook.column_letters(column)}{row}"
        if row == spec.header_row:
            raise ExtractError(
                config.code,
                file,
                f"sheet '{sheet}', cell {ref} (a column name): {workbook.CELL_PROBLEMS[reason]}",
                row=row,
            )
        if row < spec.data_start_row or not 0 <= index < len(header):
            continue  # a label row, or a cell outside every column
        issues.append(CellIssue(sheet, ref, header[index], row, reason))
    return issues


def _fill_merges(records, scan: workbook.SheetScan | None, data_start: int, first_column: int):
    """A merged range inside the records: its value (its top-left cell's) in every cell it
    covers, as the person looking at the sheet reads it."""
    import pyarrow as pa

    if scan is None or not scan.merges or records.num_rows == 0:
        return records
    columns = {i: None for i in range(records.num_columns)}
    for merge in scan.merges:
        if merge.first_row < data_start:
            continue  # in the header rows, or ambiguous (see _problems)
        source_at = merge.first_row - data_start
        if source_at >= records.num_rows:
            continue
        last_at = min(merge.last_row - data_start, records.num_rows - 1)
        source_column = merge.first_column - first_column
        for column in range(merge.first_column, merge.last_column + 1):  # a range's columns
            index = column - first_column
            if not 0 <= index < records.num_columns or not 0 <= source_column < records.num_columns:
                continue
            if columns[index] is None:
                columns[index] = records.column(index).to_pylist()
            value = (
                columns[index][source_at]
                if source_column == index
                else records.column(source_column)[source_at].as_py()
            )
            columns[index][source_at : last_at + 1] = [value] * (last_at + 1 - source_at)
    arrays = [
        pa.array(values, type=pa.string()) if values is not None else records.column(i)
        for i, values in columns.items()
    ]
    return pa.table(arrays, names=records.column_names)


def _apply_problems(
    config: PartnerConfig,
    frame: pd.DataFrame,
    numbers: np.ndarray,
    problems: list[CellIssue],
    blank: np.ndarray,
) -> tuple[np.ndarray | None, np.ndarray | None, tuple[CellIssue, ...]]:
    """Unreadable cells of the read columns become the INVALID marker (a value was there,
    nobody knows which); a record whose inclusion or identity field holds one is rejected
    with the cell's reason, so it can never count as consenting or escape a withdrawal."""
    if not problems or not len(numbers):
        return None, None, tuple(problems)
    strict = {rule.field for rule in config.inclusion}
    strict |= {config.record_id} if config.record_id else set()
    strict |= set(config.withdrawal_match)
    dropped = {f.name for f in config.fields if f.role in ("identifier", "free_text")}
    reject = np.full(len(frame), None, dtype=object)
    reject_column = np.full(len(frame), None, dtype=object)
    for issue in problems:  # unreadable cells, not records
        at = int(issue.row - numbers[0])
        if at >= len(frame) or issue.column not in frame.columns:
            continue  # a column not read, or a row holding nothing else (named in the log)
        blank[at] = False  # a row holding an unreadable cell is not empty
        marker = None if issue.column in dropped else INVALID
        frame.iat[at, frame.columns.get_loc(issue.column)] = marker
        if issue.column in strict and reject[at] is None:
            reject[at], reject_column[at] = issue.reason, issue.column
    if all(r is None for r in reject):
        return None, None, tuple(problems)
    return reject, reject_column, tuple(problems)


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
    known = config.known_keys
    for name, cell in zip(header, cells, strict=False):  # one row of the template
        if cell is None or cell == "":
            continue
        looks_like_data = False
        if name in dates:
            looks_like_data = _is_date(str(cell), dates[name].format)
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
