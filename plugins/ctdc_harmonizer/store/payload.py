"""The staged values a store keeps per record: one JSON object per row, read back as a frame.

PRIVACY: what goes in is restricted (docs/privacy.md, "The store"): the partner's kept fields
after de-identification (coded values, country names, years, whole-year ages), and only values
the mapping used when the record was harmonized; a value it did not know or could not read is
kept as the INVALID marker (it may be a name typed into the wrong column), which harmonizes
as it did (unknown, unreadable) and never counts as a consent. Never a record id, a name, a
date, a free-text note.

Built column by column in Arrow: each distinct value is JSON-escaped once, then the objects are
joined row by row in C; read back with Arrow's JSON reader.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ctdc_harmonizer.columns import REJECT, REJECT_COLUMN
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.text import arrow_text, per_distinct


def stored_fields(config: PartnerConfig) -> list[str]:
    """What the store keeps of a staged row: the partner's kept fields, and the reader's reject
    reason and column (a row it could not read whole stays rejected when harmonized again)."""
    return [*config.kept_fields, REJECT, REJECT_COLUMN]


def _member(name: str, values: pd.Series) -> pa.ChunkedArray:
    """`"name": <value>` per row (`null` for a missing value)."""
    quoted = per_distinct(values.astype("string"), lambda d: d.map(json.dumps).astype("string"))
    text = arrow_text(quoted).fill_null("null")
    return pc.binary_join_element_wise(json.dumps(name) + ": ", text, "")


def encode_payloads(frame: pd.DataFrame, fields: list[str]) -> pa.Array:
    """One JSON object per row holding `fields` (text or null), as an Arrow string array."""
    if frame.empty:
        return pa.array([], type=pa.string())
    members = [_member(name, frame[name]) for name in fields]
    if not members:
        return pa.array(["{}"] * len(frame), type=pa.string())
    joined = pc.binary_join_element_wise(*members, ", ")
    return pc.binary_join_element_wise("{", joined, "}", "").combine_chunks()


def decode_payloads(payloads: pa.Array | pa.ChunkedArray, fields: list[str]) -> pd.DataFrame:
    """The frame of `fields` (Arrow-backed text, missing as NA) the payloads hold; a field a
    payload lacks (the mapping kept more fields since) is missing."""
    import pyarrow.json as pajson

    if isinstance(payloads, pa.ChunkedArray):
        payloads = payloads.combine_chunks()
    count = len(payloads)
    if count == 0:
        return pd.DataFrame({name: pd.Series([], dtype="string[pyarrow]") for name in fields})
    # Each object followed by a newline, then the Arrow buffer itself: JSON lines, no copy
    # through Python strings.
    lines = pc.binary_join_element_wise(payloads, "", "\n")
    offsets = lines.buffers()[1]
    ends = pa.Array.from_buffers(pa.int32(), count + 1, [None, offsets], offset=lines.offset)
    data = lines.buffers()[2][ends[0].as_py() : ends[-1].as_py()]
    schema = pa.schema([(name, pa.string()) for name in fields])
    table = pajson.read_json(
        pa.BufferReader(data),
        parse_options=pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"
        ),
    )
    return pd.DataFrame(
        {name: pd.Series(pd.array(table.column(name), dtype="string[pyarrow]")) for name in fields}
    )
