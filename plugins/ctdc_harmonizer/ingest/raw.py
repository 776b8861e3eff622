"""What the format readers share: the RawFile they return and the header rule."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest.workbook import CELL_REASONS

WRONG_TYPE = "wrong_type"  # a record holding a value of the wrong JSON type
NON_FINITE = "non_finite_number"  # a JSON record holding NaN, Infinity or -Infinity
# Reasons a reader rejects one record for: a wrongly typed or non-finite JSON value; a workbook
# cell of an inclusion or identity field that cannot be read exactly (ingest/workbook.py).
READER_REJECT_REASONS = [WRONG_TYPE, NON_FINITE, *CELL_REASONS]


@dataclass(frozen=True)
class RawFile:
    # The wanted columns (excel: every column), as the reader gave them: an Arrow table of
    # text (kept in Arrow so that a delivery of many files converts to pandas once), or a
    # pandas frame (a workbook whose unreadable cells were marked).
    data: pa.Table | pd.DataFrame
    columns: list[str]  # every column name in the file, in file order
    rows: np.ndarray  # per record: the physical line (sheet row) it starts on, 1-based
    blank: np.ndarray | None  # wholly empty rows (spreadsheets only)
    reject: np.ndarray | None = None  # per record: a reason code when it cannot be read whole
    reject_column: np.ndarray | None = None  # per record: the column that made it unreadable
    # Workbooks: the cells of read columns that could not be read exactly (excel.CellIssue).
    cell_issues: tuple = ()
    sha256: str | None = None  # of the bytes parsed, when the reader held them all

    @property
    def names(self) -> list[str]:
        """The wanted columns present in the file."""
        data = self.data
        return list(data.column_names if isinstance(data, pa.Table) else data.columns)

    @property
    def frame(self) -> pd.DataFrame:
        """The wanted columns as a pandas frame (profiling; a delivery converts once)."""
        return arrow_to_frame(self.data) if isinstance(self.data, pa.Table) else self.data


def header_names(cells: list, partner: str, file: str) -> list[str]:
    """Column names as a data officer reads them: trimmed (also of a byte-order mark), NFC;
    an empty name becomes 'Unnamed: i'. A name given twice is an error: which column the
    mapping means would be a guess."""
    names = [
        unicodedata.normalize("NFC", str(c)).strip().lstrip("\ufeff").strip()
        if c is not None
        else ""
        for c in cells
    ]
    names = [name or f"Unnamed: {i}" for i, name in enumerate(names)]
    seen: set[str] = set()
    for name in names:  # columns, not records
        if name in seen:
            raise ExtractError(partner, file, "column name appears more than once", column=name)
        seen.add(name)
    return names


def arrow_to_frame(table) -> pd.DataFrame:
    frame = table.to_pandas(types_mapper=lambda _: pd.StringDtype("pyarrow"))
    return frame if len(frame.columns) else pd.DataFrame(index=range(table.num_rows))
