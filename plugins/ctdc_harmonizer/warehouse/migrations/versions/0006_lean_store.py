"""A leaner store: staged payloads as JSON arrays in their delivery's field order; no index on
identity keys or pseudonyms.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

- delivery.payload_fields (new): the JSON array of field names its staged records' payloads
  hold, in order;
- staged_record.payload: a JSON array of values in that order instead of an object repeating
  every field name on every row (about a third of a payload's bytes). Existing payloads are
  converted in place, delivery by delivery: a delivery's field order is the order of the keys
  in its payloads (every payload of a delivery was written with the same fields; a key missing
  from some row becomes null there). Nothing is lost: the values, their order per field and
  their nulls are kept; only the key spelling moves to the delivery.
- the indexes on staged_record/case_record identity_key and pseudonym are dropped: no query
  looks a record up by them any more (a partner's records are read by entity and validity;
  an erasure scans the pseudonyms once), and each cost about a tenth of a load's time.

The conversion reads and rewrites every staged row through Python (a one-time cost: about a
minute per million staged rows). Reversible: the downgrade writes the objects back from the
arrays and restores the indexes.

Frozen history: self-contained, imports nothing from ctdc_harmonizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = [
    ("staged_record", "identity_key"),
    ("staged_record", "pseudonym"),
    ("case_record", "identity_key"),
    ("case_record", "pseudonym"),
]
BLOCK = 20_000  # rows per UPDATE batch

_delivery = sa.table("delivery", sa.column("id"), sa.column("payload_fields"))
_file = sa.table("delivery_file", sa.column("id"), sa.column("delivery_id"))
_staged = sa.table(
    "staged_record", sa.column("id"), sa.column("delivery_file_id"), sa.column("payload")
)


def _payloads(bind: sa.Connection, delivery: int) -> list[tuple[int, str]]:
    return list(
        bind.execute(
            sa.select(_staged.c.id, _staged.c.payload)
            .select_from(_staged.join(_file, _file.c.id == _staged.c.delivery_file_id))
            .where(_file.c.delivery_id == delivery)
            .order_by(_staged.c.id)
        )
    )


def _blocks(rows: list[dict]) -> Iterator[list[dict]]:
    for start in range(0, len(rows), BLOCK):
        yield rows[start : start + BLOCK]


def _array(values: list) -> str:
    """As the package writes one (store/payload.py): `[v1, v2, ...]`."""
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _rewrite(bind: sa.Connection, rows: list[dict]) -> None:
    update = (
        sa.update(_staged)
        .where(_staged.c.id == sa.bindparam("b_id"))
        .values(payload=sa.bindparam("b_payload"))
    )
    for block in _blocks(rows):
        bind.execute(update, block)


def upgrade() -> None:
    op.add_column("delivery", sa.Column("payload_fields", sa.Text, nullable=True))
    bind = op.get_bind()
    for (delivery,) in list(bind.execute(sa.select(_delivery.c.id).order_by(_delivery.c.id))):
        stored = _payloads(bind, delivery)
        objects = [(i, json.loads(p)) for i, p in stored]
        fields: dict[str, None] = {}  # the keys in order of first appearance
        for _, obj in objects:
            fields.update(dict.fromkeys(obj))
        names = list(fields)
        bind.execute(
            sa.update(_delivery)
            .where(_delivery.c.id == delivery)
            .values(payload_fields=json.dumps(names))
        )
        _rewrite(
            bind,
            [{"b_id": i, "b_payload": _array([obj.get(n) for n in names])} for i, obj in objects],
        )
    for table, column in INDEXES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)


def downgrade() -> None:
    bind = op.get_bind()
    deliveries = list(bind.execute(sa.select(_delivery.c.id, _delivery.c.payload_fields)))
    for delivery, names_text in deliveries:
        stored = _payloads(bind, delivery)
        if not stored:
            continue
        names = json.loads(names_text)
        _rewrite(
            bind,
            [
                {
                    "b_id": i,
                    "b_payload": json.dumps(dict(zip(names, json.loads(p), strict=True))),
                }
                for i, p in stored
            ],
        )
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("payload_fields")
