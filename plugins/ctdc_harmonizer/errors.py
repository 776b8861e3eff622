"""Errors that are safe to log: they locate a problem, never quote a value.

Every message names the partner, the file, and where known the column and the
row number. Source values are never part of a message, because a value in a
case extract may be a name, a date of birth or a note about a survivor.
"""

from __future__ import annotations


def _rebuild(cls: type, message: str, state: dict) -> Exception:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class CtdcError(Exception):
    """Base class for errors raised by the pipeline."""

    def __reduce__(self):
        # Picklable whatever the subclass's __init__ takes: they cross process boundaries.
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


class MappingError(CtdcError):
    """A partner's mapping folder is wrong: names the file, line and column."""

    def __init__(self, file: str, problem: str, line: int | None = None, column: str | None = None):
        self.file, self.line, self.column, self.problem = file, line, column, problem
        where = file
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {problem}")


class ExtractError(CtdcError):
    """A partner's delivered file cannot be processed as a whole."""

    def __init__(
        self,
        partner: str,
        file: str,
        problem: str,
        column: str | None = None,
        row: int | None = None,
    ):
        self.partner, self.file, self.column, self.row, self.problem = (
            partner,
            file,
            column,
            row,
            problem,
        )
        where = f"partner '{partner}', file '{file}'"
        if column is not None:
            where += f", column '{column}'"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {problem}")


class CoverageError(CtdcError):
    """Too many rows carry values the partner's mapping does not know."""


class ContractError(CtdcError):
    """A frame does not satisfy its data contract (column/check/count, no values)."""


class InfrastructureError(CtdcError):
    """The machine, disk or database failed, not the data: worth retrying (Airflow does)."""


class OutputError(CtdcError):
    """The out folder cannot be used: names the path and the OS reason (errno), no content."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"out folder problem at '{path}': {reason}")


class ReleaseLockedError(CtdcError):
    """Another run is writing the same release into the same out folder."""
