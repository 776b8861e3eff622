"""Initial warehouse: reporting_entity, data_release, extract_batch, case_record, view.

Revision ID: 0001
Revises:
Create Date: 2025-02-01

The 27 case_record columns and the ctdc_release_v3 view are generated from the
codebook v3 YAML (schemas/ctdc_codebook_v3.yaml), never retyped here. A later
codebook version needs its own migration (new columns, new view).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ctdc_harmonizer.warehouse.columns import (
    BATCH_TABLE,
    CASE_TABLE,
    ENTITY_TABLE,
    FILE_NAME_LENGTH,
    LABEL_LENGTH,
    RELEASE_TABLE,
    RELEASE_VIEW,
    codebook_columns,
    quote_identifier,
    release_view_sql,
)

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNT_COLUMNS = [
    "rows_read",
    "rows_harmonized",
    "rows_rejected",
    "rows_excluded",
    "rows_erased",
    "rows_duplicate",
]


def upgrade() -> None:
    op.create_table(
        ENTITY_TABLE,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(LABEL_LENGTH), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("datasource_type", sa.String(LABEL_LENGTH), nullable=False),
        sa.UniqueConstraint("code", name="uq_reporting_entity_code"),
    )
    op.create_table(
        RELEASE_TABLE,
        sa.Column("label", sa.String(LABEL_LENGTH), primary_key=True),
        sa.Column("codebook_version", sa.String(LABEL_LENGTH), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("metadata_json", sa.Text, nullable=False),
    )
    op.create_table(
        BATCH_TABLE,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "release_label",
            sa.String(LABEL_LENGTH),
            sa.ForeignKey(f"{RELEASE_TABLE}.label"),
            nullable=False,
        ),
        sa.Column("entity_id", sa.Integer, sa.ForeignKey(f"{ENTITY_TABLE}.id"), nullable=False),
        sa.Column("file_name", sa.String(FILE_NAME_LENGTH), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        *(sa.Column(name, sa.Integer, nullable=False) for name in COUNT_COLUMNS),
        sa.UniqueConstraint(
            "release_label", "entity_id", "file_name", name="uq_extract_batch_release_entity_file"
        ),
    )
    op.create_table(
        CASE_TABLE,
        # Surrogate key only: no source case id is ever stored.
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "release_label",
            sa.String(LABEL_LENGTH),
            sa.ForeignKey(f"{RELEASE_TABLE}.label"),
            nullable=False,
        ),
        sa.Column("batch_id", sa.Integer, sa.ForeignKey(f"{BATCH_TABLE}.id"), nullable=False),
        sa.Column("entity_id", sa.Integer, sa.ForeignKey(f"{ENTITY_TABLE}.id"), nullable=False),
        *codebook_columns(),
    )
    op.create_index(f"ix_{CASE_TABLE}_release_label", CASE_TABLE, ["release_label"])
    op.execute(release_view_sql())


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {quote_identifier(RELEASE_VIEW)}")
    op.drop_index(f"ix_{CASE_TABLE}_release_label", table_name=CASE_TABLE)
    op.drop_table(CASE_TABLE)
    op.drop_table(BATCH_TABLE)
    op.drop_table(RELEASE_TABLE)
    op.drop_table(ENTITY_TABLE)
