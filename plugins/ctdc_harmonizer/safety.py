"""The one place where values meet messages and reports.

Rules (see issue 6 and the team brief):

- a message locates a problem by partner, file, column, row and reason code, never by value.
  `CtdcError`s are built that way; every OTHER exception is described by `describe()`: its
  type, and for an OS error the path and the errno name, never `str(exc)`, because a library
  message may quote content (pandas' KeyError, a parser's "unexpected token ...");
- `boundary()` is the top of every entry point (the CLI, each Airflow task): it turns any
  exception into that value-free text;
- every report CSV goes through `write_report_csv()`, which escapes spreadsheet formulas;
- the unmapped-values report is restricted by `restrict_unmapped()` (k rows, coded fields,
  structurally wrong columns withheld).
"""

from __future__ import annotations

import errno as errno_module
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ctdc_harmonizer.errors import CtdcError, InfrastructureError

# A spreadsheet reads a cell starting with one of these as a formula (or pads it into one).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
UNMAPPED_REPORT_COLUMNS = ["partner", "field", "source_value", "count", "note"]
# A field most of whose rows are unknown, or with this many distinct unknown values, is not a
# category list with a few gaps: it holds another column's content (shifted) or free text.
SHIFTED_SHARE = 0.5
SHIFTED_DISTINCT = 25
DEFAULT_MIN_ROWS = 5  # k, as in WhiteRabbit's scan reports
CONTACT_REDACTED = "<redacted: looks like contact data>"  # harmonize.REDACTED


# --- messages -----------------------------------------------------------------------------


def os_reason(exc: OSError) -> str:
    """'EACCES (Permission denied)': the errno name and the OS's own text, no content."""
    name = errno_module.errorcode.get(exc.errno or 0, "")
    text = os.strerror(exc.errno) if exc.errno else ""
    return f"{name} ({text})" if name else type(exc).__name__


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


class RetryableStepError(Exception):
    """An infrastructure failure, re-raised without the original message (Airflow retries)."""


def airflow_boundary(step: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a pipeline step for an Airflow task.

    Data and mapping errors (every `CtdcError` that is not an `InfrastructureError`, and
    unexpected exceptions, which fail the same way again) become `AirflowFailException`:
    the task fails at once, without retry. Infrastructure errors become
    `RetryableStepError`, which keeps the task's retries. Both carry `describe()`'s
    value-free text, and `from None` keeps the original (possibly value-quoting) exception
    out of the traceback Airflow logs.
    """

    @functools.wraps(step)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return step(*args, **kwargs)
        except Exception as exc:
            message = describe(exc, step.__name__)
            if is_infrastructure(exc):
                raise RetryableStepError(message) from None
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(message) from None

    return guarded


class GuardedSteps:
    """`pipeline`, with every public function wrapped by `airflow_boundary` (for the DAG)."""

    def __init__(self, module: Any):
        self._module = module

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._module, name)
        return airflow_boundary(attribute) if callable(attribute) else attribute


def airflow_steps() -> GuardedSteps:
    from ctdc_harmonizer import pipeline

    return GuardedSteps(pipeline)


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
    path = Path(path)
    safe = frame.apply(formula_safe) if len(frame.columns) else frame
    safe.to_csv(path, index=False, encoding="utf-8", lineterminator="\r\n")
    return path


# --- the restricted unmapped-values report ----------------------------------------------------


def restrict_unmapped(
    unmapped: pd.DataFrame,
    unknown_rows: pd.DataFrame,
    rows: int,
    coded_fields: list[str],
    min_rows: int = DEFAULT_MIN_ROWS,
) -> pd.DataFrame:
    """The unmapped values a data officer may see, the rest withheld and counted.

    A value is listed only when its field is declared coded, it occurs in at least
    `min_rows` rows, and the field does not look structurally wrong (most rows unknown, or
    `SHIFTED_DISTINCT` or more distinct unknown values). Otherwise one line per field says
    how many distinct values were withheld and why; `count` is then the rows they cover.
    """
    if unmapped.empty:
        return pd.DataFrame(columns=UNMAPPED_REPORT_COLUMNS)
    frame = unmapped[["partner", "field", "source_value", "count"]].copy()
    frame["count"] = frame["count"].astype(int)
    by_field = frame.groupby("field").agg(distinct=("source_value", "size"))
    unknown = unknown_rows.set_index("field")["rows"] if len(unknown_rows) else pd.Series()
    by_field["unknown_rows"] = unknown.reindex(by_field.index).fillna(0).astype(int)
    share = by_field["unknown_rows"] / rows if rows else by_field["unknown_rows"] * 0.0
    shifted = (share > SHIFTED_SHARE) | (by_field["distinct"] >= SHIFTED_DISTINCT)
    frame["coded"] = frame["field"].isin(coded_fields)
    frame["shifted"] = frame["field"].map(shifted).fillna(False).astype(bool)
    frame["rare"] = frame["count"] < min_rows
    frame["contact"] = frame["source_value"] == CONTACT_REDACTED
    listed = frame[frame["coded"] & ~frame["shifted"] & ~frame["rare"] & ~frame["contact"]]
    withheld = frame.drop(listed.index)
    reason = pd.Series(f"value(s) seen fewer than {min_rows} times withheld", index=withheld.index)
    reason[withheld["contact"]] = "value(s) looking like contact data withheld"
    reason[withheld["shifted"]] = "distinct value(s) withheld: column looks shifted or free text"
    reason[~withheld["coded"]] = "distinct value(s) withheld: field is not declared coded"
    summary = (
        withheld.assign(reason=reason)
        .groupby(["partner", "field", "reason"], as_index=False)
        .agg(count=("count", "sum"), n=("source_value", "size"))
    )
    summary["note"] = summary["n"].astype(str) + " " + summary["reason"]
    summary["source_value"] = ""
    out = pd.concat(
        [listed.assign(note="")[UNMAPPED_REPORT_COLUMNS], summary[UNMAPPED_REPORT_COLUMNS]],
        ignore_index=True,
    )
    return out.sort_values(["partner", "field", "note", "source_value"], kind="stable")


__all__ = [
    "DEFAULT_MIN_ROWS",
    "UNMAPPED_REPORT_COLUMNS",
    "ValueFreeTracebacks",
    "airflow_boundary",
    "airflow_steps",
    "describe",
    "formula_safe",
    "os_reason",
    "restrict_unmapped",
    "write_report_csv",
]
