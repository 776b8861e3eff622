"""JSON lines: pyarrow's reader; a slow located pass line by line only for refused files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest.encoding import check_encoding
from ctdc_harmonizer.ingest.raw import (
    NON_FINITE,
    WRONG_TYPE,
    RawFile,
    header_names,
)
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.memory import release_unused_memory

# No declared field nests deeper than an array of scalars; a record nested deeper than this
# is not an export but a hostile or broken file (and would exhaust Python's recursion).
MAX_JSON_DEPTH = 32


class _NonFinite:
    """What NaN, Infinity and -Infinity parse to: not a number anyone recorded."""


NOT_FINITE = _NonFinite()


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


def read_jsonl(config: PartnerConfig, path: Path, wanted: list[str] | None) -> RawFile:
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
    clean = [header_names([c], "", "")[0] for c in table.column_names] if table is not None else []
    if table is not None and len(set(clean)) == len(clean):  # else: keys padded differently
        table = table.rename_columns(clean)
        names = [
            c for c in (table.column_names if wanted is None else wanted) if c in table.column_names
        ]
        fits = all(
            _arrow_type_fits(kinds.get(c, "any"), table[c].type) and _finite(table[c])
            for c in names
        )
        records, keys = table.num_rows, list(table.column_names)
        columns = {c: table[c] for c in names}
        # The columns not read (identifiers, notes) and the parser's buffers are handed back
        # before the file's bytes are read again for its line numbers: all of them at once
        # were the read's peak (a 181 MB file: 770 MiB, now about 600).
        table = None
        release_unused_memory()
        lines, digest = _jsonl_lines(config, path, records) if fits else (None, None)
        if lines is not None:
            return RawFile(_json_text_table(columns, config), keys, lines, None, sha256=digest)
    return _read_jsonl_by_line(config, path, wanted, kinds)


# Files up to this size, when a delivery holds several, are parsed by pyarrow as one buffer:
# its set-up costs about a millisecond per call, more than a small file's records do.
SMALL_FILE_BYTES = 256 * 1024


def read_jsonl_files(
    config: PartnerConfig, paths: list[Path], wanted: list[str] | None
) -> list[RawFile] | None:
    """Several small files of one delivery parsed by pyarrow as one buffer, as one file
    holding their records would be (a column's type is inferred over all of them); each file
    gets back its own records, keys and physical lines. None when anything in them is unusual
    (a bad byte, a line that is not one JSON object, a key given twice, a value of the wrong
    type or not finite): each file is then read on its own, which names the problem."""
    import pyarrow as pa
    from pyarrow import json as pajson

    blobs, numbers, keys, digests = [], [], [], []
    for path in paths:
        data = path.read_bytes()
        digests.append(hashlib.sha256(data).hexdigest())
        try:
            check_encoding(config.code, path, data, "utf-8")
        except ExtractError:
            return None
        found: dict[str, None] = {}
        lines = []
        for number, line in enumerate(data.split(b"\n"), start=1):  # a small file's lines
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_json_object)
            except (ValueError, RecursionError):
                return None
            if not isinstance(record, dict) or isinstance(record, _RepeatedKeys):
                return None
            found.update(dict.fromkeys(record))
            lines.append(number)
        if not lines:
            return None
        keys.append(found)
        numbers.append(lines)
        blobs.append(data if data.endswith(b"\n") else data + b"\n")
    try:
        table = pajson.read_json(pa.BufferReader(b"".join(blobs)))
    except pa.ArrowInvalid:
        return None
    clean = [header_names([c], "", "")[0] for c in table.column_names]
    if table.num_rows != sum(map(len, numbers)) or len(set(clean)) != len(clean):
        return None
    table = table.rename_columns(clean)
    kinds = _json_kinds(config)
    names = [c for c in (clean if wanted is None else wanted) if c in clean]
    if not all(
        _arrow_type_fits(kinds.get(c, "any"), table[c].type) and _finite(table[c]) for c in names
    ):
        return None
    text = _json_text_table({c: table[c] for c in names}, config)
    files, start = [], 0
    for found, lines, digest in zip(keys, numbers, digests, strict=True):  # files
        columns = [header_names([key], "", "")[0] for key in found]
        present = set(columns)
        if len(present) != len(columns):  # ' age' and 'age': the file's own read decides
            return None
        part = text.slice(start, len(lines)).select([c for c in names if c in present])
        lines_at = np.array(lines, dtype=np.int64)
        files.append(RawFile(part, columns, lines_at, None, sha256=digest))
        start += len(lines)
    return files


def _finite(column) -> bool:
    """No NaN or infinity in a numeric column (or array of numbers): pyarrow reads them as
    numbers, the by-line path rejects their records."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
    if not pa.types.is_floating(column.type):
        return True
    return pc.all(pc.or_kleene(pc.is_finite(column), pc.is_null(column))).as_py() is not False


def _jsonl_lines(
    config: PartnerConfig, path: Path, records: int
) -> tuple[np.ndarray | None, str | None]:
    """The physical line of each record: blank lines are skipped by the parser, not by the
    data officer's editor. The whole file is checked as UTF-8 first. With the SHA-256 of the
    bytes read (the file is not read a third time for its checksum)."""
    data = path.read_bytes()
    check_encoding(config.code, path, data, "utf-8")
    digest = hashlib.sha256(data).hexdigest()
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    if lines == records:
        return np.arange(1, records + 1), digest
    del data
    with path.open("rb") as handle:  # blank lines present: find the others
        numbers = [n for n, line in enumerate(handle, start=1) if line.strip()]
    return (np.array(numbers, dtype=np.int64), digest) if len(numbers) == records else (None, None)


def _json_text_table(columns: dict, config: PartnerConfig):
    """The wanted columns as Arrow text: arrays joined with the field's delimiter."""
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
    return pa.table(keep)


def _json_text(value) -> str:
    """A JSON scalar as the text pyarrow's cast gives it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def _json_cell(value, kind: str, delimiter: str) -> tuple[str | None, str | None]:
    """(the cell as text, the reason the record cannot be read whole, if any). Arrays are
    joined as the fast path joins them (an array holding a null gives a null cell)."""
    cell, fits = _json_typed_cell(value, kind, delimiter)
    if value is NOT_FINITE or (isinstance(value, list) and any(v is NOT_FINITE for v in value)):
        return None, NON_FINITE
    return (cell, None) if fits else (None, WRONG_TYPE)


def _json_typed_cell(value, kind: str, delimiter: str) -> tuple[str | None, bool]:
    """(the cell as text, whether its JSON type is the one the field holds)."""
    if value is None or value is NOT_FINITE:
        return None, True
    scalar = isinstance(value, (str, int, float))
    if isinstance(value, list) and kind in {"list", "any"}:
        if not all(
            item is None or item is NOT_FINITE or isinstance(item, (str, int, float))
            for item in value
        ):
            return None, False
        if any(item is None or item is NOT_FINITE for item in value):
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


def _not_finite(_name: str) -> _NonFinite:
    """parse_constant: json.loads would read NaN and Infinity as floats."""
    return NOT_FINITE


def _json_depth(raw: bytes) -> int:
    """How deep a line nests arrays and objects (brackets inside strings not counted)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:  # only lines with many brackets come here (the slow, located path)
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _too_deep(config: PartnerConfig, path: Path, line: int) -> ExtractError:
    problem = f"this line nests arrays or objects deeper than {MAX_JSON_DEPTH} levels"
    return ExtractError(config.code, path.name, problem, row=line)


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
            if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and (
                _json_depth(raw) > MAX_JSON_DEPTH
            ):
                raise _too_deep(config, path, number)
            try:
                record = json.loads(raw, object_pairs_hook=_json_object, parse_constant=_not_finite)
            except RecursionError:  # the depth check above makes this unreachable; defence
                raise _too_deep(config, path, number) from None
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
                name = keys.get(key) or keys.setdefault(key, header_names([key], "", "")[0])
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
                cell, why = _json_cell(value, kinds.get(name, "any"), delimiters.get(name, ";"))
                if why is not None and reason is None:
                    reason, reason_column = why, name
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
            f"no record can be read: every record holds a value of the wrong JSON type or "
            f"a number that is not finite (the first one is named here: {reasons[0]})",
            column=reason_columns[0],
            row=lines[0],
        )
    arrays = {name: pa.array(values, type=pa.string()) for name, values in columns.items()}
    return RawFile(
        _json_text_table(arrays, config),
        list(seen),
        np.array(lines, dtype=np.int64),
        None,
        np.array(reasons, dtype=object),
        np.array(reason_columns, dtype=object),
    )
