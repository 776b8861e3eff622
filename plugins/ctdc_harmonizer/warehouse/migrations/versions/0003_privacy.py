"""Privacy: case_record.pseudonym, the withdrawal registry and the privacy audit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

- case_record.pseudonym: the record's keyed pseudonym (HMAC-SHA-256, hex), indexed; not
  part of the ctdc_release_v3 view, never released.
- withdrawal_registry: one row per withdrawn person (pseudonym, partner, date), never an
  id or a name; every later run erases and purges matching records.
- privacy_audit: what a purge removed from which stored release (counts only).

Frozen history: self-contained, imports nothing from ctdc_harmonizer (the tables are
modelled by `ctdc_harmonizer.warehouse.models`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("case_record") as batch:
        batch.add_column(sa.Column("pseudonym", sa.String(64), nullable=True))
    op.create_index("ix_case_record_pseudonym", "case_record", ["pseudonym"])
    op.create_table(
        "withdrawal_registry",
        sa.Column("pseudonym", sa.String(64), primary_key=True),
        sa.Column("partner", sa.String(64), nullable=False),
        sa.Column("recorded_on", sa.Date, nullable=False),
    )
    op.create_table(
        "privacy_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("release_label", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("privacy_audit")
    op.drop_table("withdrawal_registry")
    op.drop_index("ix_case_record_pseudonym", table_name="case_record")
    with op.batch_alter_table("case_record") as batch:
        batch.drop_column("pseudonym")
