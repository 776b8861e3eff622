"""Warehouse column definitions generated from the codebook.

The 27 CTDC columns are never retyped here: the models (`models.py`) call
`codebook_columns()`, so the schema the code expects follows the YAML codebook. The
migrations do not: each is frozen history with its columns written out, and a test
compares the migrated database with the models.
"""

from __future__ import annotations

import sqlalchemy as sa

from ctdc_harmonizer.codebook import Codebook, Variable, default_codebook

# Widest canonical value is far shorter; 64 leaves room without inviting free text.
VALUE_LENGTH = 64
LABEL_LENGTH = 64
FILE_NAME_LENGTH = 512

# Names of the tables and the view; one place so loader and models agree (the migrations
# write them literally: a later rename here must not rewrite history).
ENTITY_TABLE = "reporting_entity"
RELEASE_TABLE = "data_release"
DELIVERY_TABLE = "delivery"
DELIVERY_FILE_TABLE = "delivery_file"
STAGED_TABLE = "staged_record"
CASE_TABLE = "case_record"
EXCLUSION_TABLE = "release_exclusion"
SNAPSHOT_TABLE = "partner_snapshot"
PURGE_TABLE = "pending_purge"
RECEIVED_TABLE = "delivery_received"  # files pulled from partners' drops (deliveries/)
RELEASE_VIEW = "ctdc_release_v3"
KEY_LENGTH = 64  # a keyed hash (HMAC-SHA-256) in hex: pseudonyms and identity keys
REASON_LENGTH = 32


def column_type(var: Variable) -> sa.types.TypeEngine:
    """Year -> Integer; categorical, country and binary ('1'/NULL) -> String."""
    if var.type == "year":
        return sa.Integer()
    return sa.String(VALUE_LENGTH)


def codebook_columns(codebook: Codebook | None = None) -> list[sa.Column]:
    """Fresh Column objects (one per codebook variable, in codebook order)."""
    codebook = codebook or default_codebook()
    return [
        sa.Column(
            var.name,
            column_type(var),
            # The year is the one variable every record must carry.
            nullable=not (var.type == "year" or var.required),
            comment=f"CTDC codebook v{codebook.version} variable {var.number}: {var.label}",
        )
        for var in codebook.variables
    ]


def quote_identifier(name: str) -> str:
    """Standard SQL double-quoting; codebook names are mixedCase."""
    return '"' + name.replace('"', '""') + '"'


def release_view_sql(codebook: Codebook | None = None) -> str:
    """CREATE VIEW statement exposing release_label + the codebook columns, in order: the
    view the code expects today (migration 0005 holds its frozen v3 text).

    A release is every record version valid at its sequence number (valid_from <= sequence <
    valid_to, an open valid_to meaning "still current"), less the records the release's
    linkage merged into another partner's record of the same person."""
    codebook = codebook or default_codebook()
    q = quote_identifier
    columns = ", ".join(f"c.{q(c)}" for c in codebook.columns)
    return (
        f"CREATE VIEW {q(RELEASE_VIEW)} AS SELECT r.{q('label')} AS {q('release_label')}, "
        f"{columns} FROM {q(CASE_TABLE)} c JOIN {q(RELEASE_TABLE)} r "
        f"ON c.{q('valid_from')} <= r.{q('sequence')} "
        f"AND (c.{q('valid_to')} IS NULL OR c.{q('valid_to')} > r.{q('sequence')}) "
        f"WHERE NOT EXISTS (SELECT 1 FROM {q(EXCLUSION_TABLE)} x "
        f"WHERE x.{q('release_label')} = r.{q('label')} AND x.{q('case_record_id')} = c.{q('id')})"
    )


# The privacy-budget ledger of the DP synthesis (append-only; migration 0002).
LEDGER_TABLE = "privacy_budget_ledger"
# Privacy (migration 0003): withdrawn persons as pseudonyms, and what purges removed.
REGISTRY_TABLE = "withdrawal_registry"
PERSON_LEDGER_TABLE = "privacy_person_ledger"
AUDIT_TABLE = "privacy_audit"
