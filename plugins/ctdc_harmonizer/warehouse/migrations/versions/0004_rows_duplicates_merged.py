"""extract_batch.rows_duplicate renamed rows_duplicates_merged.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

One concept, one name: the reconciliation counts rows merged as duplicates under
`duplicates_merged`, and the batch column now says the same. Values are kept.

Frozen history: self-contained, imports nothing from ctdc_harmonizer. Batch mode because
SQLite cannot alter a column in place through Alembic: the table is recreated and its rows
copied (case_record's foreign key names the table, not the copy, so it still holds); on
PostgreSQL it is a plain ALTER TABLE ... RENAME.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rename(old: str, new: str) -> None:
    with op.batch_alter_table("extract_batch") as batch:
        batch.alter_column(
            old, new_column_name=new, existing_type=sa.Integer(), existing_nullable=False
        )


def upgrade() -> None:
    _rename("rows_duplicate", "rows_duplicates_merged")


def downgrade() -> None:
    _rename("rows_duplicates_merged", "rows_duplicate")
