"""Values the mapping does not know: counted per field, and the restricted list a data officer
may see.

A value a mapping does not know may be a name typed into the wrong column, so:

- a value that looks like contact data (an e-mail, a long number) is redacted as soon as it is
  counted (`count_unknown`);
- the list written to a report (`restrict_unmapped`) holds a value only when its field is
  declared coded, at least k rows hold it (partner.yaml `coverage.report_min_rows`) and the
  column does not look shifted or free text; everything else is one counted line per field.
"""

from __future__ import annotations

import pandas as pd

from ctdc_harmonizer.columns import UNMAPPED_COLUMNS, UNMAPPED_REPORT_COLUMNS

CONTACT_PATTERN = r"@|\d{5,}"  # an e-mail or a phone number typed into a picklist column
CONTACT_REDACTED = "<redacted: looks like contact data>"
# A field most of whose rows are unknown, or with this many distinct unknown values, is not a
# category list with a few gaps: it holds another column's content (shifted) or free text.
SHIFTED_SHARE = 0.5
SHIFTED_DISTINCT = 25
DEFAULT_MIN_ROWS = 5  # k, as in WhiteRabbit's scan reports


def count_unknown(unknown: pd.DataFrame, partner: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From `unknown` (field, token, gid = a row or a distinct cell, weight = rows it stands
    for): the unmapped values with their row counts (contact-like values redacted), and per
    field the rows carrying at least one unknown value (for the coverage gate)."""
    if unknown.empty:
        return pd.DataFrame(columns=UNMAPPED_COLUMNS), pd.DataFrame(columns=["field", "rows"])
    per_cell = unknown.drop_duplicates(["field", "gid", "token"])
    unmapped = per_cell.groupby(["field", "token"])["weight"].sum().reset_index(name="count")
    unmapped = unmapped.rename(columns={"token": "source_value"})
    unmapped.insert(0, "partner", partner)
    looks_like_contact = unmapped["source_value"].str.contains(CONTACT_PATTERN, regex=True)
    unmapped.loc[looks_like_contact, "source_value"] = CONTACT_REDACTED
    unmapped = unmapped.groupby(["partner", "field", "source_value"], as_index=False)["count"].sum()
    rows = (
        unknown.drop_duplicates(["field", "gid"])
        .groupby("field")["weight"]
        .sum()
        .reset_index(name="rows")
    )
    return unmapped[UNMAPPED_COLUMNS], rows


def restrict_unmapped(
    unmapped: pd.DataFrame,
    unknown_rows: pd.DataFrame,
    rows: int,
    coded_fields: list[str],
    min_rows: int = DEFAULT_MIN_ROWS,
) -> pd.DataFrame:
    """The unmapped values a data officer may see, the rest withheld and counted.

    A value is listed only when its field is declared coded, it occurs in at least
    `min_rows` rows, and the field does not look structurally wrong (most rows unknown, or
    `SHIFTED_DISTINCT` or more distinct unknown values). Otherwise one line per field says
    how many distinct values were withheld and why; `count` is then the rows they cover.
    """
    if unmapped.empty:
        return pd.DataFrame(columns=UNMAPPED_REPORT_COLUMNS)
    frame = unmapped[UNMAPPED_COLUMNS].copy()
    frame["count"] = frame["count"].astype(int)
    by_field = frame.groupby("field").agg(distinct=("source_value", "size"))
    unknown = unknown_rows.set_index("field")["rows"] if len(unknown_rows) else pd.Series()
    by_field["unknown_rows"] = unknown.reindex(by_field.index).fillna(0).astype(int)
    share = by_field["unknown_rows"] / rows if rows else by_field["unknown_rows"] * 0.0
    shifted = (share > SHIFTED_SHARE) | (by_field["distinct"] >= SHIFTED_DISTINCT)
    frame["coded"] = frame["field"].isin(coded_fields)
    frame["shifted"] = frame["field"].map(shifted).fillna(False).astype(bool)
    frame["rare"] = frame["count"] < min_rows
    frame["contact"] = frame["source_value"] == CONTACT_REDACTED
    listed = frame[frame["coded"] & ~frame["shifted"] & ~frame["rare"] & ~frame["contact"]]
    withheld = frame.drop(listed.index)
    reason = pd.Series(f"value(s) seen fewer than {min_rows} times withheld", index=withheld.index)
    reason[withheld["contact"]] = "value(s) looking like contact data withheld"
    reason[withheld["shifted"]] = "distinct value(s) withheld: column looks shifted or free text"
    reason[~withheld["coded"]] = "distinct value(s) withheld: field is not declared coded"
    summary = (
        withheld.assign(reason=reason)
        .groupby(["partner", "field", "reason"], as_index=False)
        .agg(count=("count", "sum"), n=("source_value", "size"))
    )
    summary["note"] = summary["n"].astype(str) + " " + summary["reason"]
    summary["source_value"] = ""
    out = pd.concat(
        [listed.assign(note="")[UNMAPPED_REPORT_COLUMNS], summary[UNMAPPED_REPORT_COLUMNS]],
        ignore_index=True,
    )
    return out.sort_values(["partner", "field", "note", "source_value"], kind="stable")
