"""The staged values a store keeps per record: one compact JSON array per row, in the field
order its delivery names (`delivery.payload_fields`), read back as a frame.

PRIVACY: what goes in is restricted (docs/privacy.md, "The store"): the partner's kept fields
after de-identification (coded values, country names, years, whole-year ages), and only values
the mapping used when the record was harmonized; a value it did not know or could not read is
kept as the INVALID marker (it may be a name typed into the wrong column), which harmonizes
as it did (unknown, unreadable) and never counts as a consent. Never a record id, a name, a
date, a free-text note.

An array rather than an object per row: the field names are said once per delivery, not once
per row (a third of a payload's bytes at 250k rows). Built column by column in Arrow: each
distinct value is JSON-escaped once, then the arrays are joined row by row in C; read back with
Arrow's JSON reader.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ctdc_harmonizer.columns import REJECT, REJECT_COLUMN
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.text import arrow_text

ARRAY = "v"  # the one member a payload is wrapped in to be read as a JSON line


def stored_fields(config: PartnerConfig) -> list[str]:
    """What the store keeps of a staged row: the partner's kept fields, and the reader's reject
    reason and column (a row it could not read whole stays rejected when harmonized again)."""
    return [*config.kept_fields, REJECT, REJECT_COLUMN]


def fields_text(fields: list[str]) -> str:
    """`delivery.payload_fields`: the order of a delivery's payload arrays."""
    return json.dumps(fields)


def _element(values: pd.Series, before: str = "", after: str = "") -> pa.Array:
    """One JSON value per row: the text quoted, `null` for a missing value; `before` and
    `after` around it. Each distinct value is quoted once, then taken onto the rows."""
    encoded = pc.dictionary_encode(arrow_text(values).combine_chunks())
    distinct = encoded.dictionary.to_pylist()
    quoted = [before + json.dumps(value) + after for value in distinct]
    quoted.append(before + "null" + after)  # what a missing value (a null index) takes
    return pa.array(quoted, type=pa.string()).take(encoded.indices.fill_null(len(distinct)))


def encode_payloads(frame: pd.DataFrame, fields: list[str]) -> pa.Array:
    """One JSON array per row holding `fields` in order (text or null), as Arrow strings.
    The brackets come with the first and the last values (a second pass over every row's
    text to add them cost as much as the join)."""
    if frame.empty:
        return pa.array([], type=pa.string())
    if not fields:
        return pa.array(["[]"] * len(frame), type=pa.string())
    last = len(fields) - 1
    elements = [
        _element(frame[name], "[" if i == 0 else "", "]" if i == last else "")
        for i, name in enumerate(fields)
    ]
    if len(elements) == 1:
        return elements[0]
    return pc.binary_join_element_wise(*elements, ", ")


def decode_payloads(
    payloads: pa.Array | pa.ChunkedArray, stored: list[str], fields: list[str]
) -> pd.DataFrame:
    """The frame of `fields` (Arrow-backed text, missing as NA) that payloads written in the
    order `stored` hold; a field not stored (the mapping kept more fields since) is missing."""
    import pyarrow.json as pajson

    if isinstance(payloads, pa.ChunkedArray):
        payloads = payloads.combine_chunks()
    count = len(payloads)
    if count == 0:
        return pd.DataFrame({name: pd.Series([], dtype="string[pyarrow]") for name in fields})
    # Each array wrapped as {"v": [...]} and followed by a newline, then the Arrow buffer
    # itself: JSON lines, no copy through Python strings.
    lines = pc.binary_join_element_wise('{"' + ARRAY + '": ', payloads, "}\n", "")
    offsets = lines.buffers()[1]
    ends = pa.Array.from_buffers(pa.int32(), count + 1, [None, offsets], offset=lines.offset)
    data = lines.buffers()[2][ends[0].as_py() : ends[-1].as_py()]
    schema = pa.schema([(ARRAY, pa.list_(pa.string()))])
    arrays = pajson.read_json(
        pa.BufferReader(data), parse_options=pajson.ParseOptions(explicit_schema=schema)
    ).column(ARRAY)
    lengths = pc.list_value_length(arrays)
    if pc.any(pc.not_equal(lengths, len(stored))).as_py():
        raise CtdcError(
            f"{count} stored payload(s) of which some do not hold the {len(stored)} field(s) "
            "their delivery names; the store is inconsistent"
        )
    position = {name: i for i, name in enumerate(stored)}
    out = {}
    for name in fields:
        if name in position:
            column = pc.list_element(arrays, position[name])
            out[name] = pd.Series(pd.array(column, dtype="string[pyarrow]"))
        else:
            out[name] = pd.Series(pd.NA, index=range(count), dtype="string[pyarrow]")
    return pd.DataFrame(out)
