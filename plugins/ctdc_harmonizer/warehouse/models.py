"""The warehouse schema as the code expects it today: the one definition of its tables.

The warehouse is the system of record (docs/architecture.md, "The store"): it keeps every
partner's records from run to run, each as versions valid over a span of releases, with the
delivery each version came from.

- ICS-TIP units: `reporting_entity` (a partner), `data_release` (a release, numbered by
  `sequence`), `delivery` and `delivery_file` (what a partner sent, when, with its counts),
  `case_record` (a harmonized record version: the 27 codebook variables);
- the restricted store: `staged_record` (a partner's de-identified record as read, the input
  of any later re-harmonization), `partner_snapshot` (each partner's current records as one
  Parquet blob: a cache of the two record tables, rebuilt from them when missing);
- `release_exclusion` (records a release's linkage merged into another partner's record);
- privacy: the privacy-budget ledger, the withdrawal registry, the privacy audit.

A record version is in release R when `valid_from <= R.sequence < valid_to` (an open
`valid_to`: still current) and no exclusion names it for R. `end_reason` says why a version
stopped being current (revised, not redelivered, re-harmonized, ...); an erased person's
versions are deleted, history included.

The migrations in `migrations/versions/` are history, frozen as each was written;
tests/warehouse/test_warehouse_schema.py asserts that a database migrated to head equals these
models, so a schema change needs both a model change and a new migration. The schema itself is only
ever created by Alembic (`schema.migrate`), never by `Base.metadata.create_all`.

The case_record codebook columns come from the live codebook (`columns.codebook_columns`): a
corrected codebook changes the models, and the schema test then fails until a migration
brings the database along. Not modelled, created by migrations only: the ctdc_release_v3 view
(its current definition is `columns.release_view_sql()`, also checked by the test) and the
ledger's append-only triggers (0002).
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.warehouse.layout import (
    AUDIT_TABLE,
    CASE_TABLE,
    DELIVERY_FILE_TABLE,
    DELIVERY_TABLE,
    ENTITY_TABLE,
    EXCLUSION_TABLE,
    FILE_NAME_LENGTH,
    KEY_LENGTH,
    LABEL_LENGTH,
    LEDGER_TABLE,
    PERSON_LEDGER_TABLE,
    PURGE_TABLE,
    REASON_LENGTH,
    RECEIVED_TABLE,
    REGISTRY_TABLE,
    RELEASE_TABLE,
    SNAPSHOT_TABLE,
    STAGED_TABLE,
    codebook_columns,
)

# Row accounting of a delivery and of each of its files (store/changes.py):
# rows_read = new + revised + unchanged + rejected + excluded + erased + duplicates_merged.
DELIVERY_COUNT_COLUMNS = [
    "rows_read",
    "rows_new",
    "rows_revised",
    "rows_unchanged",
    "rows_rejected",
    "rows_excluded",
    "rows_erased",
    "rows_duplicates_merged",
]
# The cross-partner linkage keys of a staged record (privacy/linkage.py), first 64 bits of
# their HMAC, stored as signed 64-bit integers.
LINK_KEY_COLUMNS = ["link_exact", "link_exact_swapped", "link_sound", "link_sound_swapped"]


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
    """One harmonized release (e.g. '2025'): a point-in-time snapshot of every partner's
    current records. `sequence` orders releases (1, 2, ...); `row_order` says how the release
    folder's table is ordered ('keyed': by a hash of label and identity key; 'id': by record id,
    releases made before the store, migration 0005)."""

    __tablename__ = RELEASE_TABLE
    __table_args__ = (sa.UniqueConstraint("sequence", name="uq_data_release_sequence"),)

    label: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH), primary_key=True)
    sequence: Mapped[int] = mapped_column(sa.Integer)
    codebook_version: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    row_count: Mapped[int] = mapped_column(sa.Integer)
    row_order: Mapped[str] = mapped_column(sa.String(16))
    metadata_json: Mapped[str] = mapped_column(sa.Text)


class RowAccounting:
    """Where the rows of a delivery, or of one of its files, went (counts only): declared
    once for both tables."""

    rows_read: Mapped[int] = mapped_column(sa.Integer)
    rows_new: Mapped[int] = mapped_column(sa.Integer)
    rows_revised: Mapped[int] = mapped_column(sa.Integer)
    rows_unchanged: Mapped[int] = mapped_column(sa.Integer)
    rows_rejected: Mapped[int] = mapped_column(sa.Integer)
    rows_excluded: Mapped[int] = mapped_column(sa.Integer)
    rows_erased: Mapped[int] = mapped_column(sa.Integer)
    rows_duplicates_merged: Mapped[int] = mapped_column(sa.Integer)


class Delivery(RowAccounting, Base):
    """What one partner delivered for one release: its mode, when and from where it was
    received, the mapping and codebook it was harmonized under, and where its rows went."""

    __tablename__ = DELIVERY_TABLE

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    entity_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey(f"{ENTITY_TABLE}.id"), index=True
    )
    release_label: Mapped[str] = mapped_column(
        sa.String(LABEL_LENGTH), sa.ForeignKey(f"{RELEASE_TABLE}.label"), index=True
    )
    mode: Mapped[str] = mapped_column(sa.String(16))
    received_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    source: Mapped[str] = mapped_column(sa.String(FILE_NAME_LENGTH))
    mapping_sha256: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    codebook_version: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH))
    # The order of the fields in its staged records' payloads (a JSON array of names).
    payload_fields: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    # Stored records this delivery retired (a full delivery that no longer holds them, a
    # revision that is now rejected or excluded).
    records_retired: Mapped[int] = mapped_column(sa.Integer)


class DeliveryFile(RowAccounting, Base):
    """One delivered file, with its checksum and row accounting. A file whose SHA-256 was
    already ingested for its partner is not read again."""

    __tablename__ = DELIVERY_FILE_TABLE
    __table_args__ = (
        sa.UniqueConstraint("delivery_id", "file_name", name="uq_delivery_file_delivery_name"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey(f"{DELIVERY_TABLE}.id"), index=True
    )
    file_name: Mapped[str] = mapped_column(sa.String(FILE_NAME_LENGTH))
    sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)


class DeliveryReceived(Base):
    """A file pulled from a partner's drop (deliveries/pull.py), recorded before it is read:
    checksum, size, when and from where (no credential), and what became of its copies."""

    __tablename__ = RECEIVED_TABLE
    __table_args__ = (
        sa.UniqueConstraint("partner", "file_name", "sha256", name="uq_delivery_received_file"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    partner: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH), index=True)
    file_name: Mapped[str] = mapped_column(sa.String(FILE_NAME_LENGTH))
    sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    source_mtime: Mapped[float] = mapped_column(sa.Float)
    received_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    source: Mapped[str] = mapped_column(sa.String(FILE_NAME_LENGTH))
    complete_by: Mapped[str] = mapped_column(sa.String(16))
    landing_deleted_at: Mapped[datetime | None] = mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )
    encrypted_until: Mapped[datetime | None] = mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )
    encrypted_deleted_at: Mapped[datetime | None] = mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )


def _entity_column() -> sa.Column:
    """The partner a record version belongs to."""
    return sa.Column("entity_id", sa.Integer, sa.ForeignKey(f"{ENTITY_TABLE}.id"), nullable=False)


def _reference(name: str, table: str, nullable: bool) -> sa.Column:
    """An indexed integer foreign key to `table`'s id."""
    return sa.Column(name, sa.Integer, sa.ForeignKey(f"{table}.id"), nullable=nullable, index=True)


def _validity() -> list[sa.Column]:
    """When a record version is current: from release sequence `valid_from` up to (not
    including) `valid_to`; why it stopped."""
    # Not indexed alone (migration 0009): read through (entity_id, valid_to) per partner.
    return [
        sa.Column("valid_from", sa.Integer, nullable=False),
        sa.Column("valid_to", sa.Integer, nullable=True),
        sa.Column("end_reason", sa.String(REASON_LENGTH), nullable=True),
    ]


# PRIVACY (restricted, docs/privacy.md "The store"): a partner's de-identified record as read:
# coded source values the mapping knew, years, whole-year ages, the keyed pseudonym and
# linkage keys. Never a record id, a name, a date or a free-text note.
staged_record_table = sa.Table(
    STAGED_TABLE,
    Base.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _entity_column(),
    _reference("delivery_file_id", DELIVERY_FILE_TABLE, nullable=False),
    sa.Column("source_row", sa.Integer, nullable=False),
    # Which record of the partner this is, across deliveries (store/identity.py).
    # Not indexed (migration 0006): read per partner, and an erasure scans.
    sa.Column("identity_key", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("pseudonym", sa.String(KEY_LENGTH), nullable=True),
    # A keyed hash of the payload: equal payloads, unchanged record.
    sa.Column("content_key", sa.BigInteger, nullable=False),
    *(sa.Column(name, sa.BigInteger, nullable=True) for name in LINK_KEY_COLUMNS),
    # The staged values as one JSON array (text or null), in the partner's terms, in the
    # order its delivery's payload_fields names (store/payload.py).
    sa.Column("payload", sa.Text, nullable=False),
    *_validity(),
    sa.Index("ix_staged_record_entity_current", "entity_id", "valid_to"),
)


class StagedRecord(Base):
    __table__ = staged_record_table


def case_record_columns(codebook: Codebook | None = None) -> list[sa.Column]:
    """Fresh columns of case_record for `codebook` (default: the live one): provenance, the
    codebook variables in codebook order, the pseudonym, validity. A function so the schema
    test can build the table for another codebook and see the difference."""
    return [
        # Surrogate key only: no source case id is ever stored.
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _entity_column(),
        # The staged record it was harmonized from; NULL for records loaded before the store
        # existed (migration 0005), which therefore cannot be re-harmonized.
        _reference("staged_record_id", STAGED_TABLE, nullable=True),
        _reference("delivery_file_id", DELIVERY_FILE_TABLE, nullable=True),
        # Not indexed (migration 0006): read per partner with its current records.
        sa.Column("identity_key", sa.String(KEY_LENGTH), nullable=False),
        # What it was harmonized under.
        sa.Column("mapping_sha256", sa.String(64), nullable=True),
        sa.Column("codebook_version", sa.String(LABEL_LENGTH), nullable=False),
        *codebook_columns(codebook),
        # PRIVACY (migration 0003): keyed pseudonym (HMAC-SHA-256 hex) of the record; never
        # released, not in the ctdc_release_v3 view; matched against the withdrawal registry
        # by a scan (not indexed since migration 0006: erasures are rare, loads are not).
        sa.Column("pseudonym", sa.String(KEY_LENGTH), nullable=True),
        *_validity(),
        sa.Index("ix_case_record_entity_current", "entity_id", "valid_to"),
    ]


# case_record's columns come from the codebook, so it is a Core Table mapped imperatively
# onto a declarative class rather than a list of annotated attributes.
case_record_table = sa.Table(CASE_TABLE, Base.metadata, *case_record_columns())


class CaseRecord(Base):
    """One harmonized, de-identified record version (27 codebook variables)."""

    __table__ = case_record_table


class ReleaseExclusion(Base):
    """A record a release left out although it was current: its person was found at another
    partner and the linkage policy 'merge' kept the other record (privacy/combine.py)."""

    __tablename__ = EXCLUSION_TABLE

    release_label: Mapped[str] = mapped_column(
        sa.String(LABEL_LENGTH), sa.ForeignKey(f"{RELEASE_TABLE}.label"), primary_key=True
    )
    case_record_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey(f"{CASE_TABLE}.id"), primary_key=True
    )
    reason: Mapped[str] = mapped_column(sa.String(REASON_LENGTH))


class PartnerSnapshot(Base):
    """PRIVACY (restricted): one partner's current records after release `sequence`, as a
    Parquet file (harmonized values, identity and linkage keys, ids): what a release reads
    instead of the whole record tables. A cache: rebuilt from the tables when absent."""

    __tablename__ = SNAPSHOT_TABLE

    entity_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey(f"{ENTITY_TABLE}.id"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    rows: Mapped[int] = mapped_column(sa.Integer)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    parquet: Mapped[bytes] = mapped_column(sa.LargeBinary)


class PendingPurge(Base):
    """PRIVACY: an earlier release folder still to be rewritten without people erased from the
    store (written with the erasure, in the same transaction; deleted once the folder is
    rewritten): a crash between the two never leaves a withdrawn person in a folder unnoticed.
    Positions are row numbers in the folder's table, never a value."""

    __tablename__ = PURGE_TABLE

    release_label: Mapped[str] = mapped_column(
        sa.String(LABEL_LENGTH), sa.ForeignKey(f"{RELEASE_TABLE}.label"), primary_key=True
    )
    rows_before: Mapped[int] = mapped_column(sa.Integer)
    positions_json: Mapped[str] = mapped_column(sa.Text)
    recorded_by: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH))


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


class PersonSpend(Base):
    """PRIVACY (migration 0007): one row per person and DP fit attempt that included them
    (`person`: the keyed pseudonym, or the record's keyed identity where the partner gives no
    record id), with the attempt's epsilon and delta; written before the fit
    (synthesis/people.py). Restricted; a withdrawn person's rows are deleted."""

    __tablename__ = PERSON_LEDGER_TABLE

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    attempt_id: Mapped[str] = mapped_column(sa.String(32), index=True)
    release_label: Mapped[str] = mapped_column(sa.String(LABEL_LENGTH), index=True)
    person: Mapped[str] = mapped_column(sa.String(KEY_LENGTH), index=True)
    epsilon: Mapped[float] = mapped_column(sa.Float)
    delta: Mapped[float] = mapped_column(sa.Float)
    recorded_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class WithdrawalRegistry(Base):
    """PRIVACY (migration 0003): one row per withdrawn person, as a keyed pseudonym with the
    partner and the date; never a case id or a name (privacy/registry.py)."""

    __tablename__ = REGISTRY_TABLE

    pseudonym: Mapped[str] = mapped_column(sa.String(KEY_LENGTH), primary_key=True)
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
