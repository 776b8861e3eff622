"""Read one delivered file: declared columns only, nulls normalized, row numbers attached.

This stage and `ingest.deidentify` are the only places that see direct identifiers; what
leaves `deidentify` holds coded values, countries, numbers, years and ages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ctdc_harmonizer.columns import FILE, REJECT, REJECT_COLUMN, ROW
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.fileio import sha256_of
from ctdc_harmonizer.ingest import jsonl
from ctdc_harmonizer.ingest.delimited import read_csv, read_csv_files
from ctdc_harmonizer.ingest.excel import read_excel
from ctdc_harmonizer.ingest.files import os_problem
from ctdc_harmonizer.ingest.jsonl import read_jsonl
from ctdc_harmonizer.ingest.raw import RawFile
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.text import arrow_text, nfc, normalize_series, normalize_token, per_distinct


@dataclass(frozen=True)
class ReadResult:
    frame: pd.DataFrame
    file: str
    sha256: str
    blank_rows: int
    dropped_columns: int
    cell_issues: tuple = ()  # workbook cells read as INVALID (excel.CellIssue), never values


def read_raw(config: PartnerConfig, path: Path, wanted: list[str] | None = None) -> RawFile:
    """A delivered file as text columns: `wanted` ones only, or all (None; for profiling).
    Spreadsheets always come whole. Errors name partner, file, column and line, never
    content."""
    spec = config.reader
    try:
        if spec.format == "excel":
            return read_excel(config, path, wanted)
        if spec.format == "csv":
            return read_csv(config, path, wanted)
        return read_jsonl(config, path, wanted)
    except ExtractError:
        raise
    except UnicodeDecodeError:
        raise ExtractError(config.code, path.name, f"not readable as {spec.encoding}") from None
    except OSError as exc:  # permission denied, a file that vanished, a folder named *.csv
        raise ExtractError(config.code, path.name, f"cannot be opened: {os_problem(exc)}") from None
    except Exception as exc:  # every reader library raises its own types
        # The library's message may quote file content, so only its type is kept.
        raise ExtractError(
            config.code, path.name, f"cannot be read as {spec.format} ({type(exc).__name__})"
        ) from None


def as_strings(column: pd.Series, nulls: list[str]) -> pd.Series:
    """Cells (str, int, float, date) as trimmed pandas strings, nulls as NA; converted once
    per distinct value. Excel hands whole numbers back as floats: 34.0 -> 34."""
    null_keys = [normalize_token(v) for v in nulls]

    def convert(text: pd.Series) -> pd.Series:
        # NFC: a country name typed on a Mac (decomposed accents) matches its usual spelling.
        text = nfc(text).str.strip()
        text = text.str.replace(r"^(-?\d+)\.0$", r"\1", regex=True)
        return text.where(~_is_null_key(text, null_keys))

    return per_distinct(column, convert)


# Whitespace as Python's `\s` (normalize_token) sees it within ASCII, but for the space.
_ASCII_SPACES_BUT_SPACE = "[\t\n\x0b\x0c\r\x1c-\x1f]"


def _is_null_key(text: pd.Series, null_keys: list[str]) -> np.ndarray:
    """normalize_series(text).isin(null_keys) for trimmed text, without a Python call per
    value where none is needed: for ASCII text holding no whitespace but single spaces, the
    normalised key is the text lowercased (NFC, the spaces rule and trimming leave it as it
    is; casefold is lower). The rest, usually none, goes through normalize_series. Ids and
    dates (a distinct value per row) made this ~0.2 s per 250k-row column."""
    import pyarrow.compute as pc

    values = arrow_text(text).combine_chunks()
    spaces = pc.match_substring_regex(values, _ASCII_SPACES_BUT_SPACE + "|  ")
    simple = pc.and_(pc.string_is_ascii(values), pc.invert(spaces))
    simple = pc.fill_null(simple, False).to_numpy(zero_copy_only=False)
    keys = pa.array(null_keys, type=pa.string())
    found = pc.fill_null(pc.is_in(pc.ascii_lower(values), value_set=keys), False)
    found = found.to_numpy(zero_copy_only=False) & simple
    rest = np.flatnonzero(~simple & ~text.isna().to_numpy())  # a missing value: not a key
    if len(rest):
        found[rest] = normalize_series(text.iloc[rest]).isin(null_keys).to_numpy(dtype=bool)
    return found


def _wanted(config: PartnerConfig, all_columns: bool, also: Sequence[str]) -> list[str]:
    declared = [f.name for f in config.fields]
    wanted = (
        declared
        if all_columns
        else [*config.kept_fields, *([config.record_id] if config.record_id else [])]
    )
    return [*wanted, *(name for name in also if name not in wanted)]


MANY_CHUNKS = 64  # a column chained from more files' chunks is made one buffer
_NO_FRAME = pd.DataFrame()  # a file's own frame is not kept: the delivery's is


@dataclass(frozen=True)
class _Part:
    """One file as read, before its text is normalised (that is done once per delivery).
    Columns are kept as arrays, not a frame: a frame per small file costs more than its
    rows do."""

    columns: dict[str, object]  # FILE, ROW, wanted columns as the reader gave them (None:
    # absent from the file), REJECT, REJECT_COLUMN (None: no reason)
    size: int  # records (blank spreadsheet rows left out)
    converted: frozenset[str]  # columns already in their final form (spreadsheet dates)
    info: ReadResult


def _read_part(
    config: PartnerConfig, path: Path, wanted: list[str], raw: RawFile | None = None
) -> _Part:
    """Read one file (or take it as read with others: `raw`): the per-file checks (required
    columns, records present, checksum)."""
    declared = {f.name for f in config.fields}
    raw = read_raw(config, path, wanted) if raw is None else raw
    for spec in config.fields:
        if spec.required and spec.name not in raw.columns:
            raise ExtractError(
                config.code, path.name, "required column is missing", column=spec.name
            )
    # Unnamed and undeclared columns are dropped unread: they may hold anything.
    dropped = len([c for c in raw.columns if c not in declared])
    nulls = list(config.null_values)
    date_fields = {f.name for f in config.fields_with_role("date")}
    blank = raw.blank if raw.blank is not None and raw.blank.any() else None
    keep = None if blank is None else ~blank
    data = raw.data
    in_arrow = isinstance(data, pa.Table)

    def kept(values):
        if keep is None or values is None:
            return values
        return values.filter(pa.array(keep)) if in_arrow else values[keep]

    size = len(raw.rows) if keep is None else int(keep.sum())
    if size == 0:
        # A delivered extract without records is a failed export far more often than a year
        # without cases; published, it would read as "no cases" downstream.
        raise ExtractError(
            config.code,
            path.name,
            "no data rows: the file holds its header only; deliver the extract again, or "
            "leave the partner out of this run",
        )
    columns: dict[str, object] = {
        FILE: np.full(size, path.name, dtype=object),
        ROW: raw.rows.astype(np.int64) if keep is None else raw.rows.astype(np.int64)[keep],
    }
    present = set(raw.names)
    converted = set()
    for name in wanted:
        if name not in present:
            columns[name] = None
            converted.add(name)
        elif in_arrow:  # Arrow text: chained with the other files' and converted once
            columns[name] = kept(data.column(name))
        elif name in date_fields and data[name].dtype == object:
            # Spreadsheet date cells (datetimes) stay as they are, nulls only removed.
            columns[name] = kept(data[name].where(~data[name].isin(nulls)).to_numpy())
            converted.add(name)
        else:
            columns[name] = kept(data[name].array)
    columns[REJECT] = raw.reject if keep is None or raw.reject is None else raw.reject[keep]
    columns[REJECT_COLUMN] = (
        raw.reject_column if keep is None or raw.reject_column is None else raw.reject_column[keep]
    )
    try:
        digest = raw.sha256 or sha256_of(path)
    except OSError as exc:
        raise ExtractError(config.code, path.name, f"cannot be opened: {os_problem(exc)}") from None
    blank_rows = 0 if blank is None else int(blank.sum())
    info = ReadResult(_NO_FRAME, path.name, digest, blank_rows, dropped, raw.cell_issues)
    return _Part(columns, size, frozenset(converted), info)


def _arrow_chunks(piece, size: int) -> list | None:
    """A file's column as Arrow text chunks (None: it holds other cells, spreadsheet dates
    read by pandas or marked cells, and goes through pandas)."""
    if piece is None:
        return [pa.nulls(size, pa.string())]
    if isinstance(piece, pa.ChunkedArray):
        return piece.chunks
    if isinstance(piece, pa.Array):
        return [piece]
    if getattr(piece, "dtype", None) == pd.StringDtype("pyarrow"):
        return piece.__arrow_array__().chunks
    return None


def _joined(pieces: list, sizes: list[int]) -> pd.Series:
    """One column of every file: Arrow text chunks chained without a copy, and converted to
    pandas once, when every file gave Arrow text (the usual delivery), else through pandas."""
    total = sum(sizes)
    if all(piece is None for piece in pieces):
        return pd.Series(pd.NA, index=range(total), dtype="string")
    arrow = pd.StringDtype("pyarrow")
    chunked = [_arrow_chunks(piece, size) for piece, size in zip(pieces, sizes, strict=True)]
    if all(chunks is not None for chunks in chunked):
        flat = [c for chunks in chunked for c in chunks if len(c)]
        kind = flat[0].type if flat else pa.string()  # cast only what differs
        flat = [c if c.type == kind else c.cast(kind) for c in flat]
        joined = pa.chunked_array(flat, type=kind)
        if len(flat) > MANY_CHUNKS and joined.nbytes < 2**30:  # offsets stay 32-bit
            # One buffer: every later pass over the column (casts, distinct values) costs
            # per chunk, and a delivery of small files gives one per file.
            joined = pa.chunked_array([joined.combine_chunks()], type=kind)
        return pd.Series(pd.array(joined, dtype=arrow))
    series = [
        pd.Series(piece, dtype=object)
        if chunks is None
        else pd.Series(pd.array(pa.chunked_array(chunks), dtype=arrow))
        for piece, chunks in zip(pieces, chunked, strict=True)
    ]
    return pd.concat(series, ignore_index=True)


def _normalise(config: PartnerConfig, parts: list[_Part], wanted: list[str]) -> pd.DataFrame:
    """The files' rows in one frame, each text column normalised in ONE pass over the
    delivery: a delivery of 2,000 small files costs what one file of the same rows does."""
    sizes = [p.size for p in parts]
    nulls = list(config.null_values)
    data: dict[str, object] = {
        FILE: np.concatenate([p.columns[FILE] for p in parts]),
        ROW: np.concatenate([p.columns[ROW] for p in parts]),
    }
    for name in wanted:
        column = _joined([p.columns[name] for p in parts], sizes)
        done = [name in p.converted for p in parts]
        if all(done):
            data[name] = column.to_numpy() if column.dtype == object else column
            continue
        if not any(done):
            data[name] = _frame_text(as_strings(column, nulls))
            continue
        mask = np.repeat(np.array(done), sizes)
        column = column.astype(object)
        column[~mask] = as_strings(column[~mask], nulls).astype(object)
        data[name] = column.to_numpy()
    for name in (REJECT, REJECT_COLUMN):
        pieces = [
            np.full(p.size, None, dtype=object) if p.columns[name] is None else p.columns[name]
            for p in parts
        ]
        data[name] = pd.Series(np.concatenate(pieces), dtype="string")
    return pd.DataFrame(data)


def _frame_text(text: pd.Series):
    """Normalised text as the delivery's frame holds it: what the frame makes of the cells as
    Python strings (pandas' `str` text; a column without a value stays as it was made), but
    kept in Arrow: a string object per cell, 36 columns of 250k rows, was some 500 MiB on
    the reading worker's peak."""
    if text.notna().any():
        return text.astype(_FRAME_TEXT).array
    return text.to_numpy()


_FRAME_TEXT = pd.DataFrame({"text": np.array(["text"], dtype=object)})["text"].dtype


def _read_small_files(
    config: PartnerConfig, paths: list[Path], wanted: list[str]
) -> dict[Path, RawFile]:
    """A delivery's small CSV or JSON-lines files read together (delimited.read_csv_files,
    jsonl.read_jsonl_files); the others, and workbooks, are read one by one."""
    if len(paths) < 2 or config.reader.format == "excel":
        return {}
    if config.reader.format == "csv":
        return read_csv_files(config, paths, wanted)
    try:
        small = [p for p in paths if p.stat().st_size <= jsonl.SMALL_FILE_BYTES]
    except OSError:
        return {}  # each file's own read names the problem
    raws = jsonl.read_jsonl_files(config, small, wanted) if len(small) > 1 else None
    return {} if raws is None else dict(zip(small, raws, strict=True))


@dataclass(frozen=True)
class DeliveryRead:
    frame: pd.DataFrame  # every file's records, in file order (FILE, ROW name each)
    files: list[ReadResult]  # per file: name, checksum, blank rows, dropped columns


def read_delivery(
    config: PartnerConfig,
    paths: Sequence[Path],
    all_columns: bool = False,
    also: Sequence[str] = (),
) -> DeliveryRead:
    """Read several files of one delivery: each file parsed and checked on its own, then the
    text of all of them normalised at once (see read_extract for what is read)."""
    wanted = _wanted(config, all_columns, also)
    paths = [Path(path) for path in paths]
    raws = _read_small_files(config, paths, wanted)
    parts = [_read_part(config, path, wanted, raws.get(path)) for path in paths]
    if not parts:
        raise ValueError("read_delivery needs at least one file")
    return DeliveryRead(_normalise(config, parts, wanted), [p.info for p in parts])


def read_extract(
    config: PartnerConfig, path: Path, all_columns: bool = False, also: Sequence[str] = ()
) -> ReadResult:
    """Read one file: declared columns only, nulls normalized, row numbers attached.

    Only the columns needed downstream are converted (all declared ones with
    all_columns=True, for profiling); identifier columns are checked for presence
    and never read into the frame where the format allows it, except those named in
    `also` (the fields a delivered withdrawal is matched on; deidentify drops them).
    """
    read = read_delivery(config, [path], all_columns, also)
    info = read.files[0]
    return ReadResult(
        read.frame, info.file, info.sha256, info.blank_rows, info.dropped_columns, info.cell_issues
    )
