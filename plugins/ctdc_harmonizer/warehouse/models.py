"""Declarative models of the warehouse (ICS-TIP units: entity, batch, case record).

These mirror migration 0001 for the loader's use; the schema itself is only ever
created by Alembic (see `schema.migrate`). The case_record codebook columns are
generated from the codebook, exactly as in the migration.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ctdc_harmonizer.warehouse.columns import (
    BATCH_TABLE,
    CASE_TABLE,
    ENTITY_TABLE,
    FILE_NAME_LENGTH,
    LABEL_LENGTH,
    LEDGER_TABLE,
    RELEASE_TABLE,
    codebook_columns,
)


class Base(DeclarativeBase):
    pass


class ReportingEntity(Base):
    """A contributing organisation (partner), identified by its partner code."""

    __tablename__ = ENTITY_TABLE
    __table_args__ = (sa.UniqueConstraint("code", name="uq_reporting_entity_code"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH))
    name: Mapped[str] = mapped_column(sa.String(255))
    datasource_type: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH))


class DataRelease(Base):
    """One harmonized release (e.g. '2025-02'), replaced as a whole on reload."""

    __tablename__ = RELEASE_TABLE

    label: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH), primary_key=True)
    codebook_version: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    row_count: Mapped[int] = mapped_column(sa.Integer)
    metadata_json: Mapped[str] = mapped_column(sa.Text)


class ExtractBatch(Base):
    """One delivered file of one entity, with its row accounting."""

    __tablename__ = BATCH_TABLE
    __table_args__ = (
        sa.UniqueConstraint(
            "release_label", "entity_id", "file_name", name="uq_extract_batch_release_entity_file"
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    release_label: Mapped[str] = mapped_column(
        sa.String(LABEL_LENGTH), sa.ForeignKey(f"{RELEASE_TABLE}.label")
    )
    entity_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey(f"{ENTITY_TABLE}.id"))
    file_name: Mapped[str] = mapped_column(sa.String(FILE_NAME_LENGTH))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    rows_read: Mapped[int] = mapped_column(sa.Integer)
    rows_harmonized: Mapped[int] = mapped_column(sa.Integer)
    rows_rejected: Mapped[int] = mapped_column(sa.Integer)
    rows_excluded: Mapped[int] = mapped_column(sa.Integer)
    rows_erased: Mapped[int] = mapped_column(sa.Integer)
    rows_duplicate: Mapped[int] = mapped_column(sa.Integer)


# case_record's columns come from the codebook, so it is a Core Table mapped imperatively
# onto a declarative class rather than a list of annotated attributes.
case_record_table = sa.Table(
    CASE_TABLE,
    Base.metadata,
    # Surrogate key only: no source case id is ever stored.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "release_label",
        sa.String(LABEL_LENGTH),
        sa.ForeignKey(f"{RELEASE_TABLE}.label"),
        nullable=False,
        index=True,
    ),
    sa.Column("batch_id", sa.Integer, sa.ForeignKey(f"{BATCH_TABLE}.id"), nullable=False),
    sa.Column("entity_id", sa.Integer, sa.ForeignKey(f"{ENTITY_TABLE}.id"), nullable=False),
    *codebook_columns(),
    # PRIVACY (migration 0003): keyed pseudonym (HMAC-SHA-256 hex) of the record; never
    # released, not in the ctdc_release_v3 view; matched against the withdrawal registry.
    sa.Column("pseudonym", sa.String(64), nullable=True, index=True),
)


class CaseRecord(Base):
    """One harmonized, de-identified case (27 codebook variables)."""

    __table__ = case_record_table


BOOKKEEPING_COLUMNS = ["release_label", "batch_id", "entity_id"]


class PrivacySpend(Base):
    """One row per event of a DP fit attempt: 'started' before fit, then 'spent' or 'failed'.

    Append-only (triggers refuse UPDATE and DELETE; migration 0002). Not linked to data_release
    by a foreign key: a release reloaded into the warehouse must not touch its privacy history.
    """

    __tablename__ = LEDGER_TABLE

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    attempt_id: Mapped[str] = mapped_column(sa.String(32), index=True)
    release_label: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH), index=True)
    dataset_sha256: Mapped[str] = mapped_column(sa.String(64))
    params_sha256: Mapped[str] = mapped_column(sa.String(64))
    epsilon: Mapped[float] = mapped_column(sa.Float)
    delta: Mapped[float] = mapped_column(sa.Float)
    reporting_length: Mapped[int] = mapped_column(sa.Integer)
    params_json: Mapped[str] = mapped_column(sa.Text)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    aggregates_sha256: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
