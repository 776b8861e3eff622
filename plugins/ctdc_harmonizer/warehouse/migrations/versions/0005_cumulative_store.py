"""The warehouse becomes the system of record: deliveries, record versions, the staged store.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

Until 0004 a release was a copy of one run's rows (case_record.release_label) with one
extract_batch per delivered file. From here on a record is kept across releases as versions:

- data_release.sequence numbers releases in the order they were made; row_order says how the
  release folder's table is ordered ('id' for the releases migrated here);
- delivery / delivery_file replace extract_batch (one delivery per partner and release, one
  file row per batch, the batch's counts; harmonized rows counted as new);
- case_record loses release_label and batch_id and gains its provenance (delivery_file_id,
  staged_record_id, identity_key, mapping_sha256, codebook_version) and its validity
  (valid_from, valid_to, end_reason);
- staged_record (the restricted de-identified rows a re-harmonization starts from),
  release_exclusion, partner_snapshot and pending_purge are new, empty;
- the ctdc_release_v3 view is defined over the validity spans.

What the upgrade reconstructs: every release keeps its rows (each migrated row is valid in
exactly the release that held it), its counts and metadata; each partner's rows in the last
release that held that partner become its current records (a partner the last release did
not hold is carried forward as copies of its rows, current from the last release on and left
out of that release by its exclusions: every migrated release keeps exactly its rows); a row's
identity key is its
pseudonym where one exists and is unique among its partner's current rows, so later deliveries
revise it, else a key made from its id. What it cannot: staged rows (the identifiers and
source values were never kept), so migrated records cannot be re-harmonized after a mapping
change until their partner delivers them again; linkage keys (overlaps are counted among
records delivered from now on); file sizes and received times (the release's own time is
used).

Frozen history: self-contained, imports nothing from ctdc_harmonizer. Not reversible: the
versions it creates cannot be folded back into per-release copies without losing history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNT_COLUMNS = [
    "rows_read",
    "rows_new",
    "rows_revised",
    "rows_unchanged",
    "rows_rejected",
    "rows_excluded",
    "rows_erased",
    "rows_duplicates_merged",
]
LINK_KEY_COLUMNS = ["link_exact", "link_exact_swapped", "link_sound", "link_sound_swapped"]
# The view over validity spans, as codebook v3 names its 27 variables.
CODEBOOK_V3 = [
    "yearOfRegistration",
    "gender",
    "ageBroad",
    "citizenship",
    "CountryOfExploitation",
    "traffickMonths",
    "meansDebtBondageEarnings",
    "meansThreats",
    "meansAbusePsyPhySex",
    "meansFalsePromises",
    "meansDrugsAlcohol",
    "meansDenyBasicNeeds",
    "meansExcessiveWorkHours",
    "meansWithholdDocs",
    "isForcedLabour",
    "isSexualExploit",
    "isOtherExploit",
    "typeOfLabourAgriculture",
    "typeOfLabourConstruction",
    "typeOfLabourDomesticWork",
    "typeOfLabourHospitality",
    "typeOfSexProstitution",
    "typeOfSexPornography",
    "recruiterRelationIntimatePartner",
    "recruiterRelationFriend",
    "recruiterRelationFamily",
    "recruiterRelationOther",
]
RELEASE_VIEW_SQL = (
    'CREATE VIEW "ctdc_release_v3" AS SELECT r."label" AS "release_label", '
    + ", ".join(f'c."{name}"' for name in CODEBOOK_V3)
    + ' FROM "case_record" c JOIN "data_release" r ON c."valid_from" <= r."sequence" '
    'AND (c."valid_to" IS NULL OR c."valid_to" > r."sequence") '
    'WHERE NOT EXISTS (SELECT 1 FROM "release_exclusion" x '
    'WHERE x."release_label" = r."label" AND x."case_record_id" = c."id")'
)


def _validity() -> list[sa.Column]:
    return [
        sa.Column("valid_from", sa.Integer, nullable=False),
        sa.Column("valid_to", sa.Integer, nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
    ]


def _create_tables() -> None:
    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entity_id", sa.Integer, sa.ForeignKey("reporting_entity.id"), nullable=False),
        sa.Column(
            "release_label", sa.String(64), sa.ForeignKey("data_release.label"), nullable=False
        ),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("mapping_sha256", sa.String(64), nullable=True),
        sa.Column("codebook_version", sa.String(64), nullable=False),
        *(sa.Column(name, sa.Integer, nullable=False) for name in COUNT_COLUMNS),
        sa.Column("records_retired", sa.Integer, nullable=False),
    )
    op.create_index("ix_delivery_entity_id", "delivery", ["entity_id"])
    op.create_index("ix_delivery_release_label", "delivery", ["release_label"])
    op.create_table(
        "delivery_file",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.Integer, sa.ForeignKey("delivery.id"), nullable=False),
        sa.Column("file_name", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        *(sa.Column(name, sa.Integer, nullable=False) for name in COUNT_COLUMNS),
        sa.UniqueConstraint("delivery_id", "file_name", name="uq_delivery_file_delivery_name"),
    )
    op.create_index("ix_delivery_file_delivery_id", "delivery_file", ["delivery_id"])
    op.create_index("ix_delivery_file_sha256", "delivery_file", ["sha256"])
    op.create_table(
        "staged_record",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entity_id", sa.Integer, sa.ForeignKey("reporting_entity.id"), nullable=False),
        sa.Column(
            "delivery_file_id", sa.Integer, sa.ForeignKey("delivery_file.id"), nullable=False
        ),
        sa.Column("source_row", sa.Integer, nullable=False),
        sa.Column("identity_key", sa.String(64), nullable=False),
        sa.Column("pseudonym", sa.String(64), nullable=True),
        sa.Column("content_key", sa.BigInteger, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=True) for name in LINK_KEY_COLUMNS),
        sa.Column("payload", sa.Text, nullable=False),
        *_validity(),
    )
    for column in ("delivery_file_id", "identity_key", "pseudonym", "valid_from", "valid_to"):
        op.create_index(f"ix_staged_record_{column}", "staged_record", [column])
    op.create_index("ix_staged_record_entity_current", "staged_record", ["entity_id", "valid_to"])
    op.create_table(
        "release_exclusion",
        sa.Column(
            "release_label", sa.String(64), sa.ForeignKey("data_release.label"), primary_key=True
        ),
        sa.Column("case_record_id", sa.Integer, sa.ForeignKey("case_record.id"), primary_key=True),
        sa.Column("reason", sa.String(32), nullable=False),
    )
    op.create_table(
        "partner_snapshot",
        sa.Column("entity_id", sa.Integer, sa.ForeignKey("reporting_entity.id"), primary_key=True),
        sa.Column("sequence", sa.Integer, primary_key=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("parquet", sa.LargeBinary, nullable=False),
    )


def _create_purges() -> None:
    op.create_table(
        "pending_purge",
        sa.Column(
            "release_label", sa.String(64), sa.ForeignKey("data_release.label"), primary_key=True
        ),
        sa.Column("rows_before", sa.Integer, nullable=False),
        sa.Column("positions_json", sa.Text, nullable=False),
        sa.Column("recorded_by", sa.String(64), nullable=False),
    )


def _number_releases(conn: sa.Connection) -> None:
    """sequence 1, 2, ... in the order the releases were made (label breaks ties)."""
    labels = conn.execute(
        sa.text('SELECT label FROM "data_release" ORDER BY created_at, label')
    ).scalars()
    for number, label in enumerate(list(labels), start=1):
        conn.execute(
            sa.text("UPDATE \"data_release\" SET sequence = :n, row_order = 'id' WHERE label = :l"),
            {"n": number, "l": label},
        )


def _deliveries_from_batches(conn: sa.Connection) -> None:
    counts = ", ".join(COUNT_COLUMNS)
    conn.execute(
        sa.text(
            f'INSERT INTO "delivery" (entity_id, release_label, mode, received_at, source, '
            f"mapping_sha256, codebook_version, {counts}, records_retired) "
            "SELECT b.entity_id, b.release_label, 'pre-store', r.created_at, 'landing folder', "
            "NULL, r.codebook_version, SUM(b.rows_read), SUM(b.rows_harmonized), 0, 0, "
            "SUM(b.rows_rejected), SUM(b.rows_excluded), SUM(b.rows_erased), "
            'SUM(b.rows_duplicates_merged), 0 FROM "extract_batch" b '
            'JOIN "data_release" r ON r.label = b.release_label '
            "GROUP BY b.entity_id, b.release_label, r.created_at, r.codebook_version"
        )
    )
    conn.execute(
        sa.text(
            f'INSERT INTO "delivery_file" (delivery_id, file_name, sha256, size_bytes, {counts}) '
            "SELECT d.id, b.file_name, b.sha256, NULL, b.rows_read, b.rows_harmonized, 0, 0, "
            "b.rows_rejected, b.rows_excluded, b.rows_erased, b.rows_duplicates_merged "
            'FROM "extract_batch" b JOIN "delivery" d '
            "ON d.entity_id = b.entity_id AND d.release_label = b.release_label"
        )
    )


def _version_case_records(conn: sa.Connection) -> None:
    """Provenance and validity of every migrated row (see the module docstring)."""
    conn.execute(
        sa.text(
            'UPDATE "case_record" SET '
            'valid_from = (SELECT r.sequence FROM "data_release" r '
            "WHERE r.label = case_record.release_label), "
            'codebook_version = (SELECT r.codebook_version FROM "data_release" r '
            "WHERE r.label = case_record.release_label), "
            'delivery_file_id = (SELECT f.id FROM "delivery_file" f '
            'JOIN "delivery" d ON d.id = f.delivery_id '
            'JOIN "extract_batch" b ON b.release_label = d.release_label '
            "AND b.entity_id = d.entity_id AND b.file_name = f.file_name "
            "WHERE b.id = case_record.batch_id), "
            "end_reason = 'pre_store_release'"
        )
    )
    conn.execute(sa.text('UPDATE "case_record" SET valid_to = valid_from + 1'))
    # Each partner's rows in the last release that held the partner stay current (a partner the
    # last release did not hold: as copies, see below).
    head = conn.execute(sa.text('SELECT MAX(sequence) FROM "data_release"')).scalar()
    latest = conn.execute(
        sa.text('SELECT entity_id, MAX(valid_from) FROM "case_record" GROUP BY entity_id')
    ).all()
    columns = ", ".join(
        f'"{name}"'
        for name in [
            "entity_id",
            "delivery_file_id",
            "codebook_version",
            *CODEBOOK_V3,
            "pseudonym",
        ]
    )
    for entity_id, sequence in latest:
        if sequence == head:
            conn.execute(
                sa.text(
                    'UPDATE "case_record" SET valid_to = NULL, end_reason = NULL '
                    "WHERE entity_id = :e AND valid_from = :s"
                ),
                {"e": entity_id, "s": sequence},
            )
            continue
        # Copies valid from the head release on (so the store sees them as current), which
        # that release's exclusions leave out of it (it held no row of this partner).
        first_copy = conn.execute(
            sa.text('SELECT COALESCE(MAX(id), 0) FROM "case_record"')
        ).scalar()
        conn.execute(
            sa.text(
                f'INSERT INTO "case_record" (release_label, batch_id, {columns}, valid_from) '
                f'SELECT release_label, batch_id, {columns}, :head FROM "case_record" '
                "WHERE entity_id = :e AND valid_from = :s ORDER BY id"
            ),
            {"e": entity_id, "s": sequence, "head": head},
        )
        conn.execute(
            sa.text(
                'INSERT INTO "release_exclusion" (release_label, case_record_id, reason) '
                "SELECT r.label, c.id, 'carried_after_release' FROM \"case_record\" c "
                'JOIN "data_release" r ON r.sequence = :head WHERE c.id > :first'
            ),
            {"head": head, "first": first_copy},
        )
    # Identity: the pseudonym where it names one current row of its partner, else the id.
    rows = conn.execute(
        sa.text('SELECT id, entity_id, pseudonym, valid_to FROM "case_record" ORDER BY id')
    ).all()
    current: dict[tuple[int, str], int] = {}
    for _id, entity_id, pseudonym, valid_to in rows:
        if pseudonym is not None and valid_to is None:
            current[(entity_id, pseudonym)] = current.get((entity_id, pseudonym), 0) + 1
    keyed, by_id = [], []
    for row_id, entity_id, pseudonym, valid_to in rows:
        unique = pseudonym is not None and (
            valid_to is not None or current.get((entity_id, pseudonym)) == 1
        )
        if unique:
            keyed.append({"i": row_id})
        else:
            by_id.append({"i": row_id, "k": format(row_id, "064x")})
    if keyed:
        conn.execute(
            sa.text('UPDATE "case_record" SET identity_key = pseudonym WHERE id = :i'), keyed
        )
    if by_id:
        conn.execute(sa.text('UPDATE "case_record" SET identity_key = :k WHERE id = :i'), by_id)


def upgrade() -> None:
    conn = op.get_bind()
    _create_tables()
    with op.batch_alter_table("data_release") as batch:
        batch.add_column(sa.Column("sequence", sa.Integer, nullable=True))
        batch.add_column(sa.Column("row_order", sa.String(16), nullable=True))
    _number_releases(conn)
    with op.batch_alter_table("data_release") as batch:
        batch.alter_column("sequence", existing_type=sa.Integer, nullable=False)
        batch.alter_column("row_order", existing_type=sa.String(16), nullable=False)
        batch.create_unique_constraint("uq_data_release_sequence", ["sequence"])
    _deliveries_from_batches(conn)
    op.execute('DROP VIEW IF EXISTS "ctdc_release_v3"')
    with op.batch_alter_table("case_record") as batch:
        batch.add_column(sa.Column("staged_record_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("delivery_file_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("identity_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("mapping_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("codebook_version", sa.String(64), nullable=True))
        batch.add_column(sa.Column("valid_from", sa.Integer, nullable=True))
        batch.add_column(sa.Column("valid_to", sa.Integer, nullable=True))
        batch.add_column(sa.Column("end_reason", sa.String(32), nullable=True))
    _version_case_records(conn)
    op.drop_index("ix_case_record_release_label", table_name="case_record")
    with op.batch_alter_table("case_record") as batch:
        batch.drop_column("release_label")
        batch.drop_column("batch_id")
        batch.alter_column("identity_key", existing_type=sa.String(64), nullable=False)
        batch.alter_column("codebook_version", existing_type=sa.String(64), nullable=False)
        batch.alter_column("valid_from", existing_type=sa.Integer, nullable=False)
        batch.create_foreign_key(
            "fk_case_record_staged_record_id", "staged_record", ["staged_record_id"], ["id"]
        )
        batch.create_foreign_key(
            "fk_case_record_delivery_file_id", "delivery_file", ["delivery_file_id"], ["id"]
        )
    for column in ("staged_record_id", "delivery_file_id", "identity_key", "valid_from"):
        op.create_index(f"ix_case_record_{column}", "case_record", [column])
    op.create_index("ix_case_record_valid_to", "case_record", ["valid_to"])
    op.create_index("ix_case_record_entity_current", "case_record", ["entity_id", "valid_to"])
    op.drop_table("extract_batch")
    _create_purges()
    op.execute(RELEASE_VIEW_SQL)


def downgrade() -> None:
    raise NotImplementedError(
        "revision 0005 cannot be downgraded: record versions and deliveries cannot be folded "
        "back into per-release copies without losing history; restore a backup instead"
    )
