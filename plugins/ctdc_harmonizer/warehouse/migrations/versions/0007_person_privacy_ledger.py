"""Privacy loss per person across releases: who was in each DP fit, at what epsilon and delta.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

One row per person (keyed pseudonym, or the record's keyed identity where the partner gives no
record id) and fit attempt, written before pac-synth's fit runs. A person's cumulative privacy
loss is the sum over the attempts not closed as failed in privacy_budget_ledger (basic
composition). Restricted, like case_record.pseudonym. Not append-only: a withdrawn person's
rows are deleted with the rest of their records (docs/privacy.md, "Privacy loss per person").

Frozen history: self-contained, imports nothing from ctdc_harmonizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "privacy_person_ledger"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("attempt_id", sa.String(32), nullable=False),
        sa.Column("release_label", sa.String(64), nullable=False),
        sa.Column("person", sa.String(64), nullable=False),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("delta", sa.Float, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(f"ix_{TABLE}_attempt_id", TABLE, ["attempt_id"])
    op.create_index(f"ix_{TABLE}_person", TABLE, ["person"])
    op.create_index(f"ix_{TABLE}_release_label", TABLE, ["release_label"])


def downgrade() -> None:
    for column in ("release_label", "person", "attempt_id"):
        op.drop_index(f"ix_{TABLE}_{column}", table_name=TABLE)
    op.drop_table(TABLE)
