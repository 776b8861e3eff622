"""One workbook sheet parsed in a process of its own: its cells as Arrow text, sent back
over a pipe.

fastexcel (calamine) parses the whole sheet into a dense range of cells before a column can
be selected or converted: about 3.5 KiB per 39-column row at its peak (860 MiB for a
250,000-row HTCDS export), whatever columns or types are asked for. Parsed in the partner's
worker, that peak comes on top of everything the worker has imported and holds. Parsed here,
in a process that imports only pyarrow and fastexcel, the range lives and dies with it, and
the worker receives only the Arrow table (about a fifth of the range).

PRIVACY: the cells travel through a pipe between two processes of the same run, never
through a file. A failure says only the exception's type: the reader library's message may
quote a cell.

Run as `python -m ctdc_harmonizer.ingest.sheet_process <workbook> <sheet>`; `SheetInChild`
below is the caller's side.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

FIRST_COLUMN = b"ctdc.first_column"  # schema metadata: the sheet column of the table's first
PIPE_BYTES = 1 << 20  # the pipe's buffer: fewer switches between the two processes
FAILED = 3  # exit code of a failed read; stderr then holds the exception's type name only


class SheetProcessError(Exception):
    """The child could not read the sheet (its exception's type name only)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def load_sheet(reader: Any, sheet: str) -> tuple[pa.Table, int]:
    """The sheet's cells as text (no header row: every row is data) and the 1-based sheet
    column of the table's first column, in this process (`reader`: a fastexcel reader)."""
    import pyarrow as pa

    loaded = reader.load_sheet(sheet, header_row=None, dtypes="string")
    info = loaded.available_columns()
    first_column = info[0].absolute_index + 1 if info else 1
    batch = loaded.to_arrow()
    del loaded  # the parsed range: freed before anything else is allocated
    return pa.Table.from_batches([batch]), first_column


class SheetInChild:
    """`load_sheet` in a child process (see the module's docstring), started at once: the
    caller does other work (the sheet's XML scan) while the child parses, then takes the
    `result()`. Use it as a context manager: a child not waited for is stopped on exit."""

    def __init__(self, path: Path, sheet: str):
        # The child imports this module from where this process did (an Airflow plugins
        # folder is on sys.path only once Airflow has put it there).
        package_root = str(Path(__file__).resolve().parents[2])
        paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        self._child = subprocess.Popen(
            # No warnings: stderr is for the failure's type name only.
            [sys.executable, "-W", "ignore", "-m", __name__, str(path), sheet],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        with contextlib.suppress(OSError, AttributeError, ImportError):  # Linux: 1 MiB, not 64 KiB
            import fcntl

            fcntl.fcntl(self._child.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)

    def __enter__(self) -> SheetInChild:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._child.poll() is None:  # the caller failed before taking the result
            self._child.kill()
        self._child.wait()
        for pipe in (self._child.stdout, self._child.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def result(self) -> tuple[pa.Table, int]:
        """The table and the sheet column of its first column; SheetProcessError if the
        child failed."""
        import pyarrow as pa

        child = self._child
        try:
            with pa.ipc.open_stream(child.stdout) as stream:
                table = stream.read_all()
        except (pa.ArrowInvalid, OSError):
            table = None  # nothing or a broken stream: the exit code and stderr say why
        _, errors = child.communicate()  # both pipes drained: no wait on a full pipe
        complaint = errors[:200].decode("ascii", "replace")
        code = child.returncode
        if code != 0 or table is None:
            kind = complaint.strip() if code == FAILED else f"exit code {code}"
            # Only a type name or an exit code leaves: never text the child did not vouch for.
            raise SheetProcessError(kind if re.fullmatch(r"[\w -]{1,80}", kind) else "unknown")
        first_column = int((table.schema.metadata or {}).get(FIRST_COLUMN, b"1"))
        return table.replace_schema_metadata(None), first_column


def main(argv: list[str]) -> int:
    path, sheet = argv
    try:
        import fastexcel
        import pyarrow as pa

        table, first_column = load_sheet(fastexcel.read_excel(path), sheet)
        table = table.replace_schema_metadata({FIRST_COLUMN: str(first_column).encode()})
        with pa.ipc.new_stream(sys.stdout.buffer, table.schema) as stream:
            stream.write_table(table)
    except Exception as exc:  # value-free: the type only (the message may quote a cell)
        sys.stderr.write(type(exc).__name__)
        return FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
