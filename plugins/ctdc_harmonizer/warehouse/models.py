"""The warehouse schema as the code expects it today: the one definition of its tables.

Every table, column, constraint and index the migrations create is declared here (ICS-TIP
units: entity, release, batch, case record; the privacy-budget ledger; the withdrawal
registry and the privacy audit). The migrations in `migrations/versions/` are history,
frozen as each was written; tests/test_warehouse_schema.py asserts that a database
migrated to head equals these models, so a schema change needs both a model change and a
new migration. The schema itself is only ever created by Alembic (`schema.migrate`), never
by `Base.metadata.create_all`.

The case_record codebook columns come from the live codebook (`columns.codebook_columns`):
a corrected codebook changes the models, and the schema test then fails until a migration
brings the database along. Not modelled, created by migrations only: the ctdc_release_v3
view (its current definition is `columns.release_view_sql()`, also checked by the test)
and the ledger's append-only triggers (0002).
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.warehouse.columns import (
    AUDIT_TABLE,
    BATCH_TABLE,
    CASE_TABLE,
    ENTITY_TABLE,
    FILE_NAME_LENGTH,
    LABEL_LENGTH,
    LEDGER_TABLE,
    REGISTRY_TABLE,
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
    # Renamed from rows_duplicate by migration 0004: the reconciliation key's name.
    rows_duplicates_merged: Mapped[int] = mapped_column(sa.Integer)


def case_record_columns(codebook: Codebook | None = None) -> list[sa.Column]:
    """Fresh columns of case_record for `codebook` (default: the live one): bookkeeping,
    the codebook variables in codebook order, the pseudonym. A function so the schema
    test can build the table for another codebook and see the difference."""
    return [
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
        *codebook_columns(codebook),
        # PRIVACY (migration 0003): keyed pseudonym (HMAC-SHA-256 hex) of the record; never
        # released, not in the ctdc_release_v3 view; matched against the withdrawal registry.
        sa.Column("pseudonym", sa.String(64), nullable=True, index=True),
    ]


# case_record's columns come from the codebook, so it is a Core Table mapped imperatively
# onto a declarative class rather than a list of annotated attributes.
case_record_table = sa.Table(CASE_TABLE, Base.metadata, *case_record_columns())


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
    # Declared for completeness (Alembic's comparison does not check CHECK constraints).
    __table_args__ = (
        sa.CheckConstraint(
            "outcome IN ('started', 'spent', 'failed')", name="ck_privacy_budget_outcome"
        ),
    )

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


class WithdrawalRegistry(Base):
    """PRIVACY (migration 0003): one row per withdrawn person, as a keyed pseudonym with the
    partner and the date; never a case id or a name (privacy/registry.py)."""

    __tablename__ = REGISTRY_TABLE

    pseudonym: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    partner: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH))
    recorded_on: Mapped[date] = mapped_column(sa.Date)


class PrivacyAudit(Base):
    """PRIVACY (migration 0003): what a purge removed from which stored release, counts only."""

    __tablename__ = AUDIT_TABLE

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    recorded_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    release_label: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH))
    action: Mapped[str] = mapped_column(sa.String(64))
    records: Mapped[int] = mapped_column(sa.Integer)
