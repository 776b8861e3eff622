"""Pulled deliveries are recorded when they arrive: delivery_received.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

One row per file copied from a partner's drop (deliveries/pull.py), before any is read:
partner, file name, SHA-256, size, the drop's modification time, when it was received, from
where (kind, Airflow connection id and path: never a credential), by which convention it was
complete (manifest | stability), and what became of the copies: the plain copy in the landing
folder (deleted once its release is committed) and the encrypted one (kept until
`encrypted_until`, then deleted). The delivery and delivery_file rows a commit writes name the
same partner and SHA-256; a file whose SHA-256 is recorded here is not pulled again.

Frozen history: self-contained, imports nothing from ctdc_harmonizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_received",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("partner", sa.String(64), nullable=False, index=True),
        sa.Column("file_name", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("source_mtime", sa.Float, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("complete_by", sa.String(16), nullable=False),
        sa.Column("landing_deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("encrypted_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("encrypted_deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("partner", "file_name", "sha256", name="uq_delivery_received_file"),
    )


def downgrade() -> None:
    op.drop_table("delivery_received")
