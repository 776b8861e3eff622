"""Initial warehouse: reporting_entity, data_release, extract_batch, case_record, view.

Revision ID: 0001
Revises:
Create Date: 2025-02-01

Frozen history: this file is self-contained and imports nothing from ctdc_harmonizer. The
27 case_record columns and the ctdc_release_v3 view are written out as codebook v3
(schemas/ctdc_codebook_v3.yaml) had them when this revision was made, so a fresh database
and one upgraded years ago end identical whatever the codebook file says today. The
current schema is defined by `ctdc_harmonizer.warehouse.models`; a later codebook change
needs its own migration (new columns, new view), and tests/test_warehouse_schema.py fails
until it exists.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# extract_batch's row accounting as named when this revision was made (rows_duplicate:
# renamed rows_duplicates_merged by 0004).
COUNT_COLUMNS = [
    "rows_read",
    "rows_harmonized",
    "rows_rejected",
    "rows_excluded",
    "rows_erased",
    "rows_duplicate",
]

# release_label + the 27 codebook v3 variables, in codebook order.
RELEASE_VIEW_SQL = (
    'CREATE VIEW "ctdc_release_v3" AS SELECT "release_label", "yearOfRegistration", '
    '"gender", "ageBroad", "citizenship", "CountryOfExploitation", "traffickMonths", '
    '"meansDebtBondageEarnings", "meansThreats", "meansAbusePsyPhySex", '
    '"meansFalsePromises", "meansDrugsAlcohol", "meansDenyBasicNeeds", '
    '"meansExcessiveWorkHours", "meansWithholdDocs", "isForcedLabour", '
    '"isSexualExploit", "isOtherExploit", "typeOfLabourAgriculture", '
    '"typeOfLabourConstruction", "typeOfLabourDomesticWork", '
    '"typeOfLabourHospitality", "typeOfSexProstitution", "typeOfSexPornography", '
    '"recruiterRelationIntimatePartner", "recruiterRelationFriend", '
    '"recruiterRelationFamily", "recruiterRelationOther" FROM "case_record"'
)


def upgrade() -> None:
    op.create_table(
        "reporting_entity",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("datasource_type", sa.String(64), nullable=False),
        sa.UniqueConstraint("code", name="uq_reporting_entity_code"),
    )
    op.create_table(
        "data_release",
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("codebook_version", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("metadata_json", sa.Text, nullable=False),
    )
    op.create_table(
        "extract_batch",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "release_label",
            sa.String(64),
            sa.ForeignKey("data_release.label"),
            nullable=False,
        ),
        sa.Column("entity_id", sa.Integer, sa.ForeignKey("reporting_entity.id"), nullable=False),
        sa.Column("file_name", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        *(sa.Column(name, sa.Integer, nullable=False) for name in COUNT_COLUMNS),
        sa.UniqueConstraint(
            "release_label", "entity_id", "file_name", name="uq_extract_batch_release_entity_file"
        ),
    )
    op.create_table(
        "case_record",
        # Surrogate key only: no source case id is ever stored.
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "release_label",
            sa.String(64),
            sa.ForeignKey("data_release.label"),
            nullable=False,
        ),
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("extract_batch.id"), nullable=False),
        sa.Column("entity_id", sa.Integer, sa.ForeignKey("reporting_entity.id"), nullable=False),
        # The 27 variables of codebook v3: the year INTEGER NOT NULL, the others VARCHAR(64).
        sa.Column(
            "yearOfRegistration",
            sa.Integer,
            nullable=False,
            comment="CTDC codebook v3 variable 1: Year of Registration",
        ),
        sa.Column(
            "gender",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 2: Gender",
        ),
        sa.Column(
            "ageBroad",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 3: Age Broad",
        ),
        sa.Column(
            "citizenship",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 4: Citizenship",
        ),
        sa.Column(
            "CountryOfExploitation",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 5: Country of Exploitation",
        ),
        sa.Column(
            "traffickMonths",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 6: Trafficking Duration, in Months",
        ),
        sa.Column(
            "meansDebtBondageEarnings",
            sa.String(64),
            nullable=True,
            comment=(
                "CTDC codebook v3 variable 7: Means of Control: Debt Bondage and/or Withhold Wages"
            ),
        ),
        sa.Column(
            "meansThreats",
            sa.String(64),
            nullable=True,
            comment=(
                "CTDC codebook v3 variable 8: Means of Control: Threats to Individual and/or Family"
            ),
        ),
        sa.Column(
            "meansAbusePsyPhySex",
            sa.String(64),
            nullable=True,
            comment=(
                "CTDC codebook v3 variable 9: Means of Control: Abuse (Psychological, Physical, "
                "and/or Sexual)"
            ),
        ),
        sa.Column(
            "meansFalsePromises",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 10: Means of Control: False promises",
        ),
        sa.Column(
            "meansDrugsAlcohol",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 11: Means of Control: Psychoactive Substances",
        ),
        sa.Column(
            "meansDenyBasicNeeds",
            sa.String(64),
            nullable=True,
            comment=(
                "CTDC codebook v3 variable 12: Means of Control: Restricts Finance, Movement, "
                "Medical Care, and/or Necessities"
            ),
        ),
        sa.Column(
            "meansExcessiveWorkHours",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 13: Means of Control: Excessive Working Hours",
        ),
        sa.Column(
            "meansWithholdDocs",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 14: Means of Control: Withhold Documents",
        ),
        sa.Column(
            "isForcedLabour",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 15: Type of Trafficking: Forced Labour",
        ),
        sa.Column(
            "isSexualExploit",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 16: Type of Trafficking: Sexual Exploitation",
        ),
        sa.Column(
            "isOtherExploit",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 17: Type of Trafficking: Other Exploit",
        ),
        sa.Column(
            "typeOfLabourAgriculture",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 18: Type of Labour Exploit: Agriculture",
        ),
        sa.Column(
            "typeOfLabourConstruction",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 19: Type of Labour Exploit: Construction",
        ),
        sa.Column(
            "typeOfLabourDomesticWork",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 20: Type of Labour Exploit: Domestic Work",
        ),
        sa.Column(
            "typeOfLabourHospitality",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 21: Type of Labour Exploit: Hospitality",
        ),
        sa.Column(
            "typeOfSexProstitution",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 22: Type of Sexual Exploit: Prostitution",
        ),
        sa.Column(
            "typeOfSexPornography",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 23: Type of Sexual Exploit: Pornography",
        ),
        sa.Column(
            "recruiterRelationIntimatePartner",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 24: Recruiter Relation: Intimate Partner",
        ),
        sa.Column(
            "recruiterRelationFriend",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 25: Recruiter Relation: Friend",
        ),
        sa.Column(
            "recruiterRelationFamily",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 26: Recruiter Relation: Family",
        ),
        sa.Column(
            "recruiterRelationOther",
            sa.String(64),
            nullable=True,
            comment="CTDC codebook v3 variable 27: Recruiter Relation: Other",
        ),
    )
    op.create_index("ix_case_record_release_label", "case_record", ["release_label"])
    op.execute(RELEASE_VIEW_SQL)


def downgrade() -> None:
    op.execute('DROP VIEW IF EXISTS "ctdc_release_v3"')
    op.drop_index("ix_case_record_release_label", table_name="case_record")
    op.drop_table("case_record")
    op.drop_table("extract_batch")
    op.drop_table("data_release")
    op.drop_table("reporting_entity")
