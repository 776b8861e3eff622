"""The coverage gate: how many rows carry a value the partner's mapping does not know.

Per field, the share of rows with an unknown value, against the partner's threshold
(partner.yaml `coverage.threshold`). A field above it fails the partner's chain with a message
of fields, counts and shares only: a "category" the mapping does not know may be a name typed
into the wrong column. The values themselves go to the restricted report (`ctdc unmapped`).
"""

from __future__ import annotations

import pandas as pd

from ctdc_harmonizer.mapping.spec import PartnerConfig


def coverage_report(unknown_rows: pd.DataFrame, rows: int, config: PartnerConfig) -> dict:
    """Per field, the share of rows carrying a value the mapping does not know."""
    shares = (unknown_rows["rows"] / rows) if rows else unknown_rows["rows"] * 0.0
    fields = [
        {"field": field, "rows": int(count), "share": round(float(share), 6)}
        for field, count, share in zip(
            unknown_rows["field"], unknown_rows["rows"], shares, strict=True
        )  # one entry per field, not per record
    ]
    failing = [f["field"] for f in fields if f["share"] > config.coverage_threshold]
    return {
        "partner": config.code,
        "rows": rows,
        "threshold": config.coverage_threshold,
        "fields": fields,
        "failing_fields": failing,
    }


def coverage_message(coverage: dict, unmapped: pd.DataFrame, config: PartnerConfig) -> str:
    """Which fields fail the gate, with counts and shares only, and where the values are."""
    lines = [
        f"partner '{config.code}': values unknown to the mapping exceed the coverage threshold "
        f"({coverage['threshold']:.2%}) in {len(coverage['failing_fields'])} field(s):"
    ]
    distinct = unmapped.groupby("field").size() if len(unmapped) else pd.Series(dtype=int)
    for item in coverage["fields"]:
        if item["field"] not in coverage["failing_fields"]:
            continue
        lines.append(
            f"  - {item['field']}: {item['rows']} of {coverage['rows']} rows ({item['share']:.2%}),"
            f" {int(distinct.get(item['field'], 0))} distinct unknown value(s)"
        )
    lines.append(
        f"The values (coded fields, seen in at least {config.unmapped_min_rows} rows) are "
        f"in the restricted report: ctdc unmapped --partner {config.code} --landing <landing> "
        f"--out <file>. Add them to mappings/{config.code}/values.csv (or countries.csv), "
        "then rerun."
    )
    return "\n".join(lines)
