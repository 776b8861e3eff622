"""Read a partner's delivered files and de-identify them on the spot.

This module is the only place that sees direct identifiers. What leaves it is a
frame of coded values, countries, numbers, years and ages: names, phones,
e-mails, addresses, case-worker names, notes and dates are gone. Birthdates
become whole-year ages at the reference date, other dates become years.
"""

from __future__ import annotations

import csv
import datetime
import fnmatch
import hashlib
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from ctdc_harmonizer.config import PartnerConfig
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.text import nfc, normalize_series, normalize_token, per_distinct
from ctdc_harmonizer.withdrawals import is_withdrawals_file

ROW = "_row"  # the row number a partner's data officer sees in the file (1-based)
FILE = "_file"
INVALID = "<invalid>"  # marks a value that was present but unreadable (the value itself is gone)
MAX_AGE = 120
# A row the reader could not read whole (e.g. one JSON record holding an object where text is
# expected) is kept, its unreadable cell emptied, and carries a reason code and the column:
# the mapper turns it into a rejected outcome, so the row is counted, never lost.
REJECT = "_reject"
REJECT_COLUMN = "_reject_column"
WRONG_TYPE = "wrong_type"
REJECT_REASONS = [WRONG_TYPE]
SYMLINK_PROBLEM = (
    "is a symbolic link: files are read only from inside the landing folder "
    "(copy the file in instead)"
)


@dataclass(frozen=True)
class ReadResult:
    frame: pd.DataFrame
    file: str
    sha256: str
    blank_rows: int
    dropped_columns: int


def sha256_of(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (the checksum every manifest records)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _os_problem(exc: OSError) -> str:
    """An OS error in a few words (its own text names paths; keep messages short)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    return type(exc).__name__


def find_extract_files(config: PartnerConfig, landing: Path) -> list[Path]:
    """The partner's delivered files in landing/<partner>/, in name order.

    The landing folder is a trust boundary: no symbolic link below it is followed. A partner
    folder or a matching file that is a link (wherever it points) is refused, so nothing is
    read from outside the folder the partners deliver into.
    """
    folder = landing / config.code
    if folder.is_symlink():
        raise ExtractError(config.code, str(folder), SYMLINK_PROBLEM)
    if not folder.is_dir():
        raise ExtractError(config.code, str(folder), "landing folder for this partner not found")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise ExtractError(
            config.code, str(folder), f"partner folder cannot be listed ({_os_problem(exc)})"
        ) from None
    files = []
    for p in entries:  # the files of one delivery, not records
        if (
            is_withdrawals_file(p)
            or p.name.startswith(("~$", "."))  # Office lock files, hidden files
            or not any(fnmatch.fnmatch(p.name, pattern) for pattern in config.reader.files)
        ):
            continue
        if p.is_symlink():
            raise ExtractError(config.code, p.name, SYMLINK_PROBLEM)
        if not p.is_file():  # a folder or a pipe named like an extract: not skipped unseen
            raise ExtractError(config.code, p.name, "matches the file patterns but is not a file")
        files.append(p)
    if not files:
        patterns = ", ".join(config.reader.files)
        raise ExtractError(config.code, str(folder), f"no file matches {patterns}")
    return files


def _header(cells: list, partner: str, file: str) -> list[str]:
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


EXCEL_CHUNK_ROWS = 50_000


def _read_excel(config: PartnerConfig, path: Path, wanted: list[str] | None) -> RawFile:
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
    header = _header(
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


@dataclass(frozen=True)
class RawFile:
    frame: pd.DataFrame  # the wanted columns (excel: every column)
    columns: list[str]  # every column name in the file, in file order
    rows: np.ndarray  # per record: the physical line (sheet row) it starts on, 1-based
    blank: np.ndarray | None  # wholly empty rows (spreadsheets only)
    reject: np.ndarray | None = None  # per record: a reason code when it cannot be read whole
    reject_column: np.ndarray | None = None  # per record: the column that made it unreadable


def _python_encoding(encoding: str) -> str:
    """Python's codec for a declared encoding; UTF-8 may start with a byte-order mark (Excel's
    'CSV UTF-8'), which pyarrow skips and Python must be told to."""
    return "utf-8-sig" if encoding.lower().replace("_", "-") in {"utf-8", "utf8"} else encoding


def _csv_header(path: Path, encoding: str, delimiter: str) -> list:
    with path.open(encoding=_python_encoding(encoding), newline="") as handle:
        return next(csv.reader(handle, delimiter=delimiter), [])


def _read_csv(config: PartnerConfig, path: Path, wanted: list[str] | None) -> RawFile:
    """pyarrow's multi-threaded parser, every column as text, only the wanted columns kept.

    When pyarrow refuses the file, or the file holds an odd number of quotes (an unclosed
    quote makes pyarrow swallow the rest of the file into one cell), a second, slow pass
    finds the line to name.
    """
    import pyarrow as pa
    from pyarrow import csv as pacsv

    spec = config.reader
    try:
        cells = _csv_header(path, spec.encoding, spec.csv_delimiter)
    except UnicodeDecodeError:  # Python decodes ahead of the header line: find the bad line
        cells = None
    if cells is None:
        _raise_csv_problem(config, path, 0)
        raise ExtractError(config.code, path.name, f"not readable as {spec.encoding}")
    header = _header(cells, config.code, path.name)
    if not header:
        return RawFile(pd.DataFrame(), [], np.zeros(0, dtype=np.int64), None)
    keep = header if wanted is None else [c for c in wanted if c in header]
    refused = None
    try:
        table = pacsv.read_csv(
            path,
            # Our own (trimmed) names, the file's header line skipped.
            read_options=pacsv.ReadOptions(
                encoding=spec.encoding, column_names=header, skip_rows=1
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
    if data.count(b'"') % 2:
        _raise_csv_problem(config, path, len(header))  # a stray quote inside a cell is fine
    return RawFile(_arrow_to_frame(table), header, _csv_lines(config, path, data, len(table)), None)


def _raise_csv_problem(config: PartnerConfig, path: Path, width: int) -> None:
    """Raise a located ExtractError for the first unreadable record, if a slow pass finds one.

    Only the line number and the field counts are reported: the csv module's messages and
    the record itself stay out of it.
    """
    data = path.read_bytes()
    try:
        data.decode(_python_encoding(config.reader.encoding))
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ExtractError(
            config.code, path.name, f"not readable as {config.reader.encoding}", row=line
        ) from None
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


def _json_kinds(config: PartnerConfig) -> dict[str, str]:
    """What JSON type each declared field holds: 'list' (a multi-valued field: an array of
    values), 'date' (a string) or 'scalar' (a string, number or boolean)."""
    kinds = {}
    for spec in config.fields:
        if spec.multi:
            kinds[spec.name] = "list"
        elif spec.role == "date":
            kinds[spec.name] = "date"
        else:
            kinds[spec.name] = "scalar"
    return kinds


def _arrow_type_fits(kind: str, arrow_type) -> bool:
    import pyarrow as pa

    t = pa.types
    nested = t.is_struct(arrow_type) or t.is_list(arrow_type) or t.is_large_list(arrow_type)
    if t.is_null(arrow_type):
        return True
    if kind == "list" or (kind == "any" and nested):
        return (t.is_list(arrow_type) or t.is_large_list(arrow_type)) and not (
            t.is_struct(arrow_type.value_type)
            or t.is_list(arrow_type.value_type)
            or t.is_large_list(arrow_type.value_type)
        )
    if kind == "date":
        return t.is_string(arrow_type) or t.is_timestamp(arrow_type) or t.is_date(arrow_type)
    return not nested


def _read_jsonl(config: PartnerConfig, path: Path, wanted: list[str] | None) -> RawFile:
    """JSON lines through pyarrow; arrays (several citizenships) become delimited text.

    When pyarrow refuses the file (a malformed line; a column whose type changes between
    records; a key given twice in a record) or a column has the wrong JSON type, the file
    is read again line by line: a malformed line or a repeated key is an error naming it,
    a record with a wrongly typed value is rejected alone (reason wrong_type).
    """
    import pyarrow as pa
    from pyarrow import json as pajson

    kinds = _json_kinds(config)
    try:
        table = pajson.read_json(path)
    except pa.ArrowInvalid:
        table = None
    clean = [_header([c], "", "")[0] for c in table.column_names] if table is not None else []
    if table is not None and len(set(clean)) == len(clean):  # else: keys padded differently
        table = table.rename_columns(clean)
        names = [
            c for c in (table.column_names if wanted is None else wanted) if c in table.column_names
        ]
        fits = all(_arrow_type_fits(kinds.get(c, "any"), table[c].type) for c in names)
        lines = _jsonl_lines(path, table.num_rows) if fits else None
        if lines is not None:
            frame = _json_frame({c: table[c] for c in names}, config, table.num_rows)
            return RawFile(frame, list(table.column_names), lines, None)
    return _read_jsonl_by_line(config, path, wanted, kinds)


def _jsonl_lines(path: Path, records: int) -> np.ndarray | None:
    """The physical line of each record: blank lines are skipped by the parser, not by the
    data officer's editor."""
    data = path.read_bytes()
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    if lines == records:
        return np.arange(1, records + 1)
    with path.open("rb") as handle:  # blank lines present: find the others
        numbers = [n for n, line in enumerate(handle, start=1) if line.strip()]
    return np.array(numbers, dtype=np.int64) if len(numbers) == records else None


def _json_frame(columns: dict, config: PartnerConfig, rows: int) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.compute as pc

    delimiters = {f.name: f.delimiter or ";" for f in config.fields}
    keep = {}
    for name, column in columns.items():
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pc.binary_join(column.cast(pa.list_(pa.string())), delimiters.get(name, ";"))
        elif not pa.types.is_string(column.type):
            column = column.cast(pa.string())
        keep[name] = column
    if not keep:
        return pd.DataFrame(index=range(rows))
    return _arrow_to_frame(pa.table(keep))


def _json_text(value) -> str:
    """A JSON scalar as the text pyarrow's cast gives it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def _json_cell(value, kind: str, delimiter: str) -> tuple[str | None, bool]:
    """(the cell as text, whether its JSON type is the one the field holds). Arrays are
    joined as the fast path joins them (an array holding a null gives a null cell)."""
    if value is None:
        return None, True
    scalar = isinstance(value, (str, int, float))
    if isinstance(value, list) and kind in {"list", "any"}:
        if not all(item is None or isinstance(item, (str, int, float)) for item in value):
            return None, False
        if any(item is None for item in value):
            return None, True
        return delimiter.join(_json_text(item) for item in value), True
    if kind == "date":
        return (value, True) if isinstance(value, str) else (None, False)
    if kind == "list" or not scalar:
        return None, False
    return _json_text(value), True


class _RepeatedKeys(dict):
    """A JSON object that gives a key twice: the dict keeps the last value, `pairs` all."""

    __slots__ = ("pairs",)


def _json_object(pairs: list) -> dict:
    """object_pairs_hook: json.loads would silently keep the last of two equal keys."""
    if len({key for key, _ in pairs}) == len(pairs):
        return dict(pairs)
    obj = _RepeatedKeys(pairs)
    obj.pairs = pairs
    return obj


def _read_jsonl_by_line(
    config: PartnerConfig, path: Path, wanted: list[str] | None, kinds: dict[str, str]
) -> RawFile:
    """The slow, located path (a loop over lines): only for files the fast path refused."""
    import pyarrow as pa

    columns: dict[str, list] = {}
    seen: dict[str, None] = {}  # every key met, in file order
    keys: dict[str, str] = {}  # a key as written -> trimmed, NFC (as for CSV headers)
    delimiters = {f.name: f.delimiter or ";" for f in config.fields}
    lines, reasons, reason_columns = [], [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw, object_pairs_hook=_json_object)
            except UnicodeDecodeError:
                raise ExtractError(
                    config.code, path.name, "not readable as utf-8", row=number
                ) from None
            except ValueError:
                raise ExtractError(
                    config.code, path.name, "this line is not valid JSON", row=number
                ) from None
            if not isinstance(record, dict):
                raise ExtractError(
                    config.code,
                    path.name,
                    "this line is not a JSON object (one record per line)",
                    row=number,
                )
            index, reason, reason_column = len(lines), None, None
            met: set[str] = set()
            pairs = record.pairs if isinstance(record, _RepeatedKeys) else record.items()
            for key, value in pairs:
                name = keys.get(key) or keys.setdefault(key, _header([key], "", "")[0])
                if name in met:  # 'age' twice, or ' age' and 'age': which one is meant?
                    raise ExtractError(
                        config.code,
                        path.name,
                        "a key appears more than once in this record",
                        column=name,
                        row=number,
                    )
                met.add(name)
                seen.setdefault(name)
                if wanted is not None and name not in wanted:
                    continue
                if name not in columns:
                    columns[name] = [None] * index
                cell, fits = _json_cell(value, kinds.get(name, "any"), delimiters.get(name, ";"))
                if not fits and reason is None:
                    reason, reason_column = WRONG_TYPE, name
                columns[name].append(cell)
            for values in columns.values():
                if len(values) == index:  # the field is absent from this record
                    values.append(None)
            lines.append(number)
            reasons.append(reason)
            reason_columns.append(reason_column)
    if lines and all(reasons):
        raise ExtractError(
            config.code,
            path.name,
            "no record can be read: every record holds a value of the wrong JSON type "
            "(the first one is named here)",
            column=reason_columns[0],
            row=lines[0],
        )
    arrays = {name: pa.array(values, type=pa.string()) for name, values in columns.items()}
    return RawFile(
        _json_frame(arrays, config, len(lines)),
        list(seen),
        np.array(lines, dtype=np.int64),
        None,
        np.array(reasons, dtype=object),
        np.array(reason_columns, dtype=object),
    )


def _arrow_to_frame(table) -> pd.DataFrame:
    frame = table.to_pandas(types_mapper=lambda _: pd.StringDtype("pyarrow"))
    return frame if len(frame.columns) else pd.DataFrame(index=range(table.num_rows))


def read_raw(config: PartnerConfig, path: Path, wanted: list[str] | None = None) -> RawFile:
    """A delivered file as text columns: `wanted` ones only, or all (None; for profiling).
    Spreadsheets always come whole. Errors name partner, file, column and line, never
    content."""
    spec = config.reader
    try:
        if spec.format == "excel":
            return _read_excel(config, path, wanted)
        if spec.format == "csv":
            return _read_csv(config, path, wanted)
        return _read_jsonl(config, path, wanted)
    except ExtractError:
        raise
    except UnicodeDecodeError:
        raise ExtractError(config.code, path.name, f"not readable as {spec.encoding}") from None
    except OSError as exc:  # permission denied, a file that vanished, a folder named *.csv
        raise ExtractError(
            config.code, path.name, f"cannot be opened ({_os_problem(exc)})"
        ) from None
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
        return text.where(~normalize_series(text).isin(null_keys))

    return per_distinct(column, convert)


def read_extract(
    config: PartnerConfig, path: Path, all_columns: bool = False, also: Sequence[str] = ()
) -> ReadResult:
    """Read one file: declared columns only, nulls normalized, row numbers attached.

    Only the columns needed downstream are converted (all declared ones with
    all_columns=True, for profiling); identifier columns are checked for presence
    and never read into the frame where the format allows it, except those named in
    `also` (the fields a delivered withdrawal is matched on; deidentify drops them).
    """
    declared = [f.name for f in config.fields]
    wanted = (
        declared
        if all_columns
        else [*config.kept_fields, *([config.record_id] if config.record_id else [])]
    )
    wanted = [*wanted, *(name for name in also if name not in wanted)]
    raw = read_raw(config, path, wanted)
    for spec in config.fields:
        if spec.required and spec.name not in raw.columns:
            raise ExtractError(
                config.code, path.name, "required column is missing", column=spec.name
            )
    # Unnamed and undeclared columns are dropped unread: they may hold anything.
    dropped = len([c for c in raw.columns if c not in declared])
    nulls = list(config.null_values)
    date_fields = {f.name for f in config.fields_with_role("date")}
    rows = len(raw.frame)
    frame = pd.DataFrame({FILE: path.name, ROW: raw.rows.astype(np.int64)})
    for name in wanted:
        if name not in raw.frame.columns:
            frame[name] = pd.Series(pd.NA, index=frame.index, dtype="string")
        elif name in date_fields and raw.frame[name].dtype == object:
            frame[name] = raw.frame[name].where(~raw.frame[name].isin(nulls)).to_numpy()
        else:
            frame[name] = as_strings(raw.frame[name], nulls).to_numpy()
    for name, values in ((REJECT, raw.reject), (REJECT_COLUMN, raw.reject_column)):
        frame[name] = pd.Series(values, dtype="string") if values is not None else pd.NA
        frame[name] = frame[name].astype("string")
    blank = np.zeros(rows, dtype=bool) if raw.blank is None else raw.blank
    frame = frame.loc[~blank].reset_index(drop=True)
    if frame.empty:
        # A delivered extract without records is a failed export far more often than a year
        # without cases; published, it would read as "no cases" downstream.
        raise ExtractError(
            config.code,
            path.name,
            "no data rows: the file holds its header only; deliver the extract again, or "
            "leave the partner out of this run",
        )
    try:
        digest = sha256_of(path)
    except OSError as exc:
        raise ExtractError(
            config.code, path.name, f"cannot be opened ({_os_problem(exc)})"
        ) from None
    return ReadResult(frame, path.name, digest, int(blank.sum()), dropped)


def _parse_dates(values: pd.Series, fmt: str) -> pd.Series:
    """Dates from text (ISO 8601 unless the field declares a format) or from Excel date
    cells, which arrive as date objects and parse whatever the format."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    return pd.to_datetime(values, errors="coerce", format=fmt or "ISO8601")


def whole_years_between(born: pd.Series, at: pd.Series) -> pd.Series:
    """Completed years from `born` to `at` (the birthday must have been reached)."""
    years = at.dt.year - born.dt.year
    before_birthday = (at.dt.month < born.dt.month) | (
        (at.dt.month == born.dt.month) & (at.dt.day < born.dt.day)
    )
    return (years - before_birthday.astype("Int64")).astype("Int64")


def deidentify(config: PartnerConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """Replace birthdates by ages and dates by years; drop every field not needed downstream.

    A value that was present but could not be read becomes the INVALID marker, so the
    mapper can count it without ever seeing it.
    """
    out = frame.copy()
    date_specs = {f.name: f for f in config.fields_with_role("date")}
    parsed = {name: _parse_dates(out[name], spec.format) for name, spec in date_specs.items()}
    present = {name: out[name].notna() for name in date_specs}
    ages: dict[str, pd.Series] = {}
    for sources in config.derive.values():
        for source in sources:
            if source.method != "birthdate":
                continue
            born, at = parsed[source.field], parsed[source.reference]
            age = whole_years_between(born, at)
            # Unreadable birthdate, or an age outside 0..MAX_AGE: present but unusable.
            bad = (present[source.field] & born.isna()) | (age < 0) | (age > MAX_AGE)
            text = age.astype("string").where(~bad.fillna(False), INVALID)
            ages[source.field] = text.where(present[source.field], pd.NA)
    for name in date_specs:
        if name in ages:
            out[name] = ages[name]
            continue
        year = parsed[name].dt.year.astype("Int64").astype("string")
        out[name] = year.where(parsed[name].notna(), INVALID).where(present[name], pd.NA)
    keep = [FILE, ROW, *[c for c in (REJECT, REJECT_COLUMN) if c in out], *config.kept_fields]
    if config.record_id:
        keep.append(config.record_id)
    return out[keep]
