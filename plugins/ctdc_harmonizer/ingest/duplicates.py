"""The same case delivered twice (or cross-referenced between two systems of one partner)."""

from __future__ import annotations

import pandas as pd


def duplicate_rows(record_ids: pd.Series, live: pd.Series) -> pd.Series:
    """Rows to merge away: among the `live` rows (not erased), every copy of a record id
    but the last one delivered. Rows without an id are never duplicates."""
    ids = record_ids.astype("string").str.strip()
    copies = ids[live].duplicated(keep="last").reindex(ids.index, fill_value=False)
    return ids.notna() & copies & live
