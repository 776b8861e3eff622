"""Data contracts (pandera) and their privacy-safe error reports.

pandera's own error text quotes failing values; with case data that text could
carry a survivor's details into a log. `validate` keeps only the column, the
check, how many rows failed and their row numbers.
"""

from __future__ import annotations

from functools import cache

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

from ctdc_harmonizer.codebook import Codebook, harmonized_schema
from ctdc_harmonizer.columns import FILE, INVALID, REJECT, REJECT_COLUMN, ROW
from ctdc_harmonizer.errors import ContractError
from ctdc_harmonizer.ingest.raw import READER_REJECT_REASONS
from ctdc_harmonizer.mapping.spec import PartnerConfig

YEAR_OR_AGE = rf"^(\d{{1,4}}|{INVALID})$"


def staged_schema(config: PartnerConfig) -> pa.DataFrameSchema:
    """What may leave the reader: declared non-identifying fields only, dates reduced to
    years or ages. strict=True makes any extra column (an identifier) a failure."""
    columns = {FILE: pa.Column(str), ROW: pa.Column(int, pa.Check.ge(1))}
    # The reader's reject reason and column: codes and declared names only, never a value.
    reject_checks = {REJECT: READER_REJECT_REASONS, REJECT_COLUMN: [f.name for f in config.fields]}
    for name, allowed in reject_checks.items():
        columns[name] = pa.Column(
            "string", pa.Check.isin(allowed), nullable=True, coerce=True, required=False
        )
    for name in config.kept_fields:
        spec = config.field(name)
        checks = [pa.Check.str_matches(YEAR_OR_AGE)] if spec.role == "date" else []
        columns[name] = pa.Column("string", checks=checks, nullable=True, coerce=True)
    return pa.DataFrameSchema(columns, strict=True, name=f"staged_{config.code}")


@cache
def harmonized_schema_for(codebook: Codebook, year_max: int) -> pa.DataFrameSchema:
    return harmonized_schema(codebook, year_max)


def validate(schema: pa.DataFrameSchema, frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Validate lazily; on failure raise ContractError listing column, check and row numbers."""
    try:
        return schema.validate(frame, lazy=True)
    except (SchemaErrors, SchemaError) as exc:
        cases = getattr(exc, "failure_cases", None)
        raise ContractError(_describe(cases, frame, where)) from None


def _describe(cases: pd.DataFrame | None, frame: pd.DataFrame, where: str) -> str:
    if cases is None or cases.empty:
        return f"{where}: contract failed"
    lines = [f"{where}: contract failed"]
    cases = cases.copy()
    cases["column"] = cases["column"].fillna("<frame>").astype(str)
    cases["check"] = cases["check"].astype(str)
    for (column, check), group in cases.groupby(["column", "check"], sort=True):
        index = pd.to_numeric(group["index"], errors="coerce").dropna().astype(int)
        rows = (
            frame[ROW].reindex(index).dropna().astype(int).tolist()
            if ROW in frame.columns
            else (index + 1).tolist()
        )
        shown = ", ".join(str(r) for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
        lines.append(
            f"  - column '{column}', check {check}: {len(group)} failure(s); rows {shown or 'n/a'}"
        )
    return "\n".join(lines)
