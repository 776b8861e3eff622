"""The one place where values meet messages and reports.

Rules (see issue 6 and the team brief):

- a message locates a problem by partner, file, column, row and reason code, never by value.
  `CtdcError`s are built that way; every OTHER exception is described by `describe()`: its
  type, and for an OS error the path and the errno name, never `str(exc)`, because a library
  message may quote content (pandas' KeyError, a parser's "unexpected token ...");
- every entry point turns any exception into that value-free text: the CLI (`cli.main`) and
  each Airflow task (pipeline/airflow.py);
- every report CSV goes through `write_report_csv()`, which escapes spreadsheet formulas;
- the unmapped-values report is restricted by harmonize/unmapped.py (k rows, coded fields,
  structurally wrong columns withheld).
"""

from __future__ import annotations

import errno as errno_module
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ctdc_harmonizer.errors import CtdcError, InfrastructureError

# A spreadsheet reads a cell starting with one of these as a formula (or pads it into one).
if TYPE_CHECKING:  # only the report writers need pandas; messages must stay light
    import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# --- messages -----------------------------------------------------------------------------


def os_reason(exc: OSError) -> str:
    """'EACCES (Permission denied)': the errno name and the OS's own text, no content."""
    name = errno_module.errorcode.get(exc.errno or 0, "")
    text = os.strerror(exc.errno) if exc.errno else ""
    return f"{name} ({text})" if name else type(exc).__name__


def printable_name(name: str) -> str:
    """A file name as a message shows it: the partner chose it, so a control character (a
    line break that would forge a log line, a terminal escape) is shown as its escape."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)


def describe(exc: BaseException, where: str = "") -> str:
    """A value-free one-line description of any exception."""
    prefix = f"{where}: " if where else ""
    if isinstance(exc, CtdcError):
        return prefix + str(exc)  # built from typed location fields only
    if isinstance(exc, OSError):
        path = f"'{exc.filename}'" if exc.filename else "a file"
        return f"{prefix}cannot use {path}: {os_reason(exc)}"
    return (
        f"{prefix}unexpected {type(exc).__name__}; details withheld because they may quote "
        "source values (rerun with the same inputs to reproduce, then inspect locally)"
    )


def is_infrastructure(exc: BaseException) -> bool:
    """Worth retrying: the machine, the disk or the database, not the data."""
    if isinstance(exc, InfrastructureError):
        return True
    if isinstance(exc, CtdcError):
        return False
    if isinstance(exc, OSError | MemoryError | TimeoutError):
        return True
    try:
        import sqlalchemy.exc as sa_exc
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return False
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)


class ValueFreeTracebacks(logging.Filter):
    """Defence in depth for the CLI's log handler: a record carrying an exception keeps the
    exception's type only, so no library message (which may quote a value) is printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} [{describe(exc)}]"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


# --- report files -------------------------------------------------------------------------


def formula_safe(values: pd.Series) -> pd.Series:
    """Text cells that a spreadsheet would evaluate get a leading apostrophe."""
    import pandas as pd

    if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
        return values
    text = values.astype("string")
    risky = text.str.startswith(FORMULA_START).fillna(False)
    if not risky.any():
        return values
    return values.where(~risky, "'" + text)


def write_report_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Every report CSV is written here: formula-safe text cells, UTF-8, no index.

    CRLF line ends (RFC 4180): with them a cell holding a bare CR or LF is quoted, so it
    cannot split a row in a reader (with "\n" pandas leaves a bare CR unquoted)."""
    from ctdc_harmonizer.fileio import named_os_errors

    path = Path(path)
    safe = frame.apply(formula_safe) if len(frame.columns) else frame
    with named_os_errors(path):
        safe.to_csv(path, index=False, encoding="utf-8", lineterminator="\r\n")
    return path


__all__ = [
    "ValueFreeTracebacks",
    "describe",
    "formula_safe",
    "is_infrastructure",
    "os_reason",
    "printable_name",
    "write_report_csv",
]
