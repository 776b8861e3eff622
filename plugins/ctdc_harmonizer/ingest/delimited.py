"""Delimited text (CSV): pyarrow's parser; a slow located pass only for refused files."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest.encoding import check_encoding, python_codec
from ctdc_harmonizer.ingest.raw import RawFile, header_names
from ctdc_harmonizer.mapping.spec import PartnerConfig

_python_encoding = python_codec

# Files up to this size are parsed by Python's csv module: pyarrow's parser costs about a
# millisecond to set up per file, ten times what parsing a small file costs, and a delivery
# can be 2,000 small files. Anything the small path would judge differently goes to pyarrow.
SMALL_FILE_BYTES = 256 * 1024


def _csv_header_line(path: Path, encoding: str, delimiter: str) -> list:
    with path.open(encoding=_python_encoding(encoding), newline="") as handle:
        return next(csv.reader(handle, delimiter=delimiter), [])


def read_csv(config: PartnerConfig, path: Path, wanted: list[str] | None) -> RawFile:
    """pyarrow's multi-threaded parser, every column as text, only the wanted columns kept.

    When pyarrow refuses the file, or the file holds an odd number of quotes (an unclosed
    quote makes pyarrow swallow the rest of the file into one cell), a second, slow pass
    finds the line to name.
    """
    import pyarrow as pa
    from pyarrow import csv as pacsv

    spec = config.reader
    try:
        cells = _csv_header_line(path, spec.encoding, spec.csv_delimiter)
    except UnicodeDecodeError:  # Python decodes ahead of the header line: find the bad line
        cells = None
    if cells is None:
        _raise_csv_problem(config, path, 0)
        raise ExtractError(config.code, path.name, f"not readable as {spec.encoding}")
    header = header_names(cells, config.code, path.name)
    if not header:
        return RawFile(pd.DataFrame(), [], np.zeros(0, dtype=np.int64), None)
    keep = header if wanted is None else [c for c in wanted if c in header]
    small = read_csv_files(config, [path], wanted).get(path)
    if small is not None:
        return small
    refused = None
    try:
        table = pacsv.read_csv(
            path,
            # Our own (trimmed) names, the file's header line skipped. One thread: every column
            # is text (nothing inferred, the same table), and the parser's threads cost more
            # CPU than they save on this machine's two cores, which the partners' chains
            # already share (250k rows: ~0.3 s instead of 0.5-0.8 s, wall time no longer).
            read_options=pacsv.ReadOptions(
                encoding=spec.encoding, column_names=header, skip_rows=1, use_threads=False
            ),
            parse_options=pacsv.ParseOptions(delimiter=spec.csv_delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=False,
                include_columns=keep,
            ),
        )
    except pa.ArrowInvalid as exc:
        refused = exc
    if refused is not None:  # outside the except block: no library text chained to our error
        _raise_csv_problem(config, path, len(header))
        raise refused
    data = path.read_bytes()
    # pyarrow decodes only the columns it keeps: a bad byte in a dropped column (or anywhere
    # below the first block) would pass unseen.
    check_encoding(config.code, path, data, spec.encoding)
    if data.count(b'"') % 2:
        _raise_csv_problem(config, path, len(header))  # a stray quote inside a cell is fine
    lines = _csv_lines(config, path, data, len(table))
    # The checksum of the bytes just read: the file is not read a third time for it.
    return RawFile(table, header, lines, None, sha256=hashlib.sha256(data).hexdigest())


def _parse_small_csv(
    config: PartnerConfig, path: Path
) -> tuple[list, list[int], list[list[str]], str] | None:
    """A small file parsed as pyarrow parses it (every cell as text, empty cells as "", blank
    lines skipped): its header cells, each record with the physical line it starts on, and
    the SHA-256 of the bytes parsed.
    None when the file is not plainly well formed (a bad byte, a stray quote, a NUL, a
    record of another width, a header over several lines): the pyarrow path then reads it,
    or names the line that stops it."""
    spec = config.reader
    data = path.read_bytes()
    if data.count(b'"') % 2:
        return None
    try:
        text = data.decode(_python_encoding(spec.encoding))
    except (UnicodeDecodeError, LookupError):
        return None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=spec.csv_delimiter, strict=True)
    starts, records = [], []
    try:
        header = next(reader, None)
        if not header or reader.line_num != 1:
            return None
        start = 2
        for record in reader:  # a small file: a few records
            if record:
                if len(record) != len(header):
                    return None
                starts.append(start)
                records.append(record)
            start = reader.line_num + 1
    except csv.Error:
        return None
    return header, starts, records, hashlib.sha256(data).hexdigest()


def read_csv_files(
    config: PartnerConfig, paths: list[Path], wanted: list[str] | None
) -> dict[Path, RawFile]:
    """The small files of a delivery (SMALL_FILE_BYTES) parsed by Python's csv module, each
    wanted column built as ONE Arrow array over all of them (each file gets its slice): an
    Arrow array per file and column costs more than the cells in it. A file that is large or
    not plainly well formed is left out, for its own read (which names its problem)."""
    import pyarrow as pa

    parsed = []
    for path in paths:  # files, each parsed whole
        try:
            if path.stat().st_size > SMALL_FILE_BYTES:
                continue
            found = _parse_small_csv(config, path)
            if found is None:
                continue
            header = header_names(found[0], config.code, path.name)
        except (OSError, ExtractError):
            continue  # its own read raises this, in file order
        keep = header if wanted is None else [c for c in wanted if c in header]
        parsed.append((path, header, keep, *found[1:]))
    cells: dict[str, list[str]] = {}
    offsets: dict[tuple[Path, str], int] = {}
    for path, header, keep, _, records, _ in parsed:
        for name in keep:  # columns of one file
            column = cells.setdefault(name, [])
            offsets[path, name] = len(column)
            at = header.index(name)
            column.extend(record[at] for record in records)
    arrays = {name: pa.array(values, type=pa.string()) for name, values in cells.items()}
    read = {}
    for path, header, keep, starts, records, digest in parsed:
        table = pa.table(
            {name: arrays[name].slice(offsets[path, name], len(records)) for name in keep}
        )
        lines = np.array(starts, dtype=np.int64)
        read[path] = RawFile(table, header, lines, None, sha256=digest)
    return read


def _raise_csv_problem(config: PartnerConfig, path: Path, width: int) -> None:
    """Raise a located ExtractError for the first unreadable record, if a slow pass finds one.

    Only the line number and the field counts are reported: the csv module's messages and
    the record itself stay out of it.
    """
    data = path.read_bytes()
    check_encoding(config.code, path, data, config.reader.encoding)
    try:
        "".encode(_python_encoding(config.reader.encoding))
    except LookupError:
        return
    start = 1
    with path.open(encoding=_python_encoding(config.reader.encoding), newline="") as handle:
        reader = csv.reader(handle, delimiter=config.reader.csv_delimiter, strict=True)
        try:
            for record in reader:  # the located-error path only: the file is already refused
                if record and len(record) != width:
                    raise ExtractError(
                        config.code,
                        path.name,
                        f"this record has {len(record)} fields, the header has {width}",
                        row=start,
                    )
                start = reader.line_num + 1
        except csv.Error:
            raise ExtractError(
                config.code,
                path.name,
                "malformed quoting: a quoted cell is not closed, or text follows its closing quote",
                row=start,
            ) from None


def _csv_lines(config: PartnerConfig, path: Path, data: bytes, records: int) -> np.ndarray:
    """The physical line each data record starts on (what an editor shows): a note holding a
    line break makes a record span lines, and blank lines are skipped, not records."""
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    if lines == records + 1:  # the usual file: one line per record, none blank
        return np.arange(2, records + 2)
    starts = _record_starts(data)
    if len(starts) != records + 1:  # quotes inside unquoted cells, or '\r' line ends
        starts = _record_starts_by_parsing(config, path)
    if len(starts) != records + 1:
        raise ExtractError(config.code, path.name, "records cannot be located by line")
    return starts[1:]


def _record_starts(data: bytes) -> np.ndarray:
    """First line of every non-empty record (the header's too), vectorised: a line break ends
    a record unless an odd number of quotes precedes it (it is inside a quoted cell)."""
    if not data:
        return np.zeros(0, dtype=np.int64)
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    quotes = np.flatnonzero(buf == ord('"'))
    ends = np.searchsorted(quotes, newlines) % 2 == 0
    index = np.flatnonzero(ends)
    begin = np.concatenate(([0], newlines[index] + 1))
    end = np.concatenate((newlines[index], [len(buf)]))
    line = np.concatenate(([1], index + 2))
    length = end - begin
    only_cr = (length == 1) & (buf[np.minimum(begin, len(buf) - 1)] == ord("\r"))
    return line[(length > 0) & ~only_cr]


def _record_starts_by_parsing(config: PartnerConfig, path: Path) -> np.ndarray:
    """The same through the csv module (a loop over records): for files the vectorised rule
    cannot read, such as quotes inside unquoted cells."""
    starts, start = [], 1
    with path.open(encoding=_python_encoding(config.reader.encoding), newline="") as handle:
        reader = csv.reader(handle, delimiter=config.reader.csv_delimiter)
        for record in reader:
            if record:
                starts.append(start)
            start = reader.line_num + 1
    return np.array(starts, dtype=np.int64)
