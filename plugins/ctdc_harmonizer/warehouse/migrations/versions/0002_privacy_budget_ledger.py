"""Privacy-budget ledger of the DP synthesis (append-only).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

One row per event of a fit attempt ('started' before pac-synth's fit, then 'spent' or
'failed'). Triggers refuse UPDATE and DELETE on SQLite and PostgreSQL: the ledger only grows.

Frozen history: self-contained, imports nothing from ctdc_harmonizer (the table is modelled
by `ctdc_harmonizer.warehouse.models.PrivacySpend`; the triggers exist only here).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEDGER_TABLE = "privacy_budget_ledger"
REFUSE = "privacy_budget_ledger is append-only"


def upgrade() -> None:
    op.create_table(
        LEDGER_TABLE,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("attempt_id", sa.String(32), nullable=False),
        sa.Column("release_label", sa.String(64), nullable=False),
        sa.Column("dataset_sha256", sa.String(64), nullable=False),
        sa.Column("params_sha256", sa.String(64), nullable=False),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("delta", sa.Float, nullable=False),
        sa.Column("reporting_length", sa.Integer, nullable=False),
        sa.Column("params_json", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("aggregates_sha256", sa.String(64), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('started', 'spent', 'failed')", name="ck_privacy_budget_outcome"
        ),
    )
    op.create_index(f"ix_{LEDGER_TABLE}_attempt_id", LEDGER_TABLE, ["attempt_id"])
    op.create_index(f"ix_{LEDGER_TABLE}_release_label", LEDGER_TABLE, ["release_label"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {LEDGER_TABLE}_no_{action.lower()} BEFORE {action} "
                f"ON {LEDGER_TABLE} BEGIN SELECT RAISE(ABORT, '{REFUSE}'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            f"CREATE FUNCTION {LEDGER_TABLE}_refuse() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{REFUSE}'; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {LEDGER_TABLE}_append_only BEFORE UPDATE OR DELETE "
            f"ON {LEDGER_TABLE} FOR EACH ROW EXECUTE FUNCTION {LEDGER_TABLE}_refuse()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {LEDGER_TABLE}_no_{action}")
    elif dialect == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {LEDGER_TABLE}_append_only ON {LEDGER_TABLE}")
        op.execute(f"DROP FUNCTION IF EXISTS {LEDGER_TABLE}_refuse()")
    op.drop_index(f"ix_{LEDGER_TABLE}_release_label", table_name=LEDGER_TABLE)
    op.drop_index(f"ix_{LEDGER_TABLE}_attempt_id", table_name=LEDGER_TABLE)
    op.drop_table(LEDGER_TABLE)
