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
BATCH_TABLE = "extract_batch"
CASE_TABLE = "case_record"
RELEASE_VIEW = "ctdc_release_v3"


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
    view the code expects today (migration 0001 holds its frozen v3 text)."""
    codebook = codebook or default_codebook()
    columns = ", ".join(quote_identifier(c) for c in ["release_label", *codebook.columns])
    return (
        f"CREATE VIEW {quote_identifier(RELEASE_VIEW)} AS "
        f"SELECT {columns} FROM {quote_identifier(CASE_TABLE)}"
    )


# The privacy-budget ledger of the DP synthesis (append-only; migration 0002).
LEDGER_TABLE = "privacy_budget_ledger"
# Privacy (migration 0003): withdrawn persons as pseudonyms, and what purges removed.
REGISTRY_TABLE = "withdrawal_registry"
AUDIT_TABLE = "privacy_audit"
