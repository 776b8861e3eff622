"""No single-column index on the record versions' validity (valid_from, valid_to).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Each release loads every changed partner's new versions; a first release loads all of them,
and each index on a record table is then one more pass over the whole table (about 0.3 s per
index at a million records, four indexes). What a run reads goes through the composite index
(entity_id, valid_to), which stays: a partner's current records, and its records at a base
release. The columns alone were searched only when a rerun replaces the head release (the
versions it added or closed, found once per rerun by a scan) and by the history views (which
read most of a table anyway). As migration 0006 did for identity keys and pseudonyms: loads
come every run, those reads rarely.

Reversible: the downgrade creates the four indexes again.

Frozen history: self-contained, imports nothing from ctdc_harmonizer.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = [
    ("staged_record", "valid_from"),
    ("staged_record", "valid_to"),
    ("case_record", "valid_from"),
    ("case_record", "valid_to"),
]


def upgrade() -> None:
    for table, column in INDEXES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)


def downgrade() -> None:
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])
