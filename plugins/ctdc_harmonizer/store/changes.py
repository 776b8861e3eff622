"""What a partner's delivery (and a change of its mapping) does to its stored records.

Pure functions over small frames, no database: `compare_delivery` says, for every delivered
row and every stored current record, where it goes.

Delivered rows (each already read, de-identified, with withdrawals erased and duplicates
merged, then harmonized under today's mapping), by identity key (store/identity.py):

- harmonized or rejected, identity not stored: **new** (a rejected one is stored **held back**:
  kept without a harmonized version, not released, harmonized again in a later release, when
  the release year, the mapping or the codebook may let it in; a registration year after the
  release's is the common case);
- harmonized, identity stored, same content: **unchanged** (the stored version stays; it gets a
  new harmonized version when the partner is re-harmonized or it was held back);
- identity stored, other content (or now rejected): **revised** (the stored version is closed,
  the delivered one replaces it, held back if rejected: an older version is never published in
  place of the partner's latest word);
- excluded (an inclusion rule: consent refused, not a victim): never stored; when its identity
  is stored, the stored record is **retired** (`revision_excluded`).

Stored current records a delivery does not name: under mode `full` **retired**
(`not_redelivered`); under `incremental` kept. A partner's stored records are harmonized again
when its mapping or the codebook changed (all of them: `reharmonized`) or when it has records
held back (those); one that is now excluded is retired (`reharmonized_excluded`), one that is
now rejected is held back (`held_back`). Erasures (withdrawals) are decided while reading and
applied to the store by the commit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctdc_harmonizer.columns import Outcome

FULL = "full"
INCREMENTAL = "incremental"
MODES = (FULL, INCREMENTAL)

# Delivered rows' fates beyond the mapper's outcomes.
NEW, REVISED, UNCHANGED = "new", "revised", "unchanged"
# Why a stored record stopped being current (staged_record / case_record.end_reason).
NOT_REDELIVERED = "not_redelivered"
REVISION_EXCLUDED = "revision_excluded"
REHARMONIZED_EXCLUDED = "reharmonized_excluded"
RETIREMENT_REASONS = (NOT_REDELIVERED, REVISION_EXCLUDED, REHARMONIZED_EXCLUDED)
REVISED_REASON = "revised"
REHARMONIZED = "reharmonized"  # a case version replaced by one under today's mapping
HELD_BACK = "held_back"  # a case version closed: today's mapping rejects the record
ERASED = "erased"

# Columns of the frames these functions take.
DELIVERED_COLUMNS = ["identity", "content", "outcome"]  # one row per delivered staged row
STORED_COLUMNS = ["identity", "content", "staged_id", "case_id"]  # current records


@dataclass(frozen=True)
class Comparison:
    """Where each delivered row and each stored current record goes."""

    # per delivered row: new, revised, unchanged (harmonized), rejected, excluded
    fate: pd.Series
    # per delivered row: the stored record it names (its position in `stored`), -1 if none
    matched: np.ndarray
    # per delivered row: it becomes a stored version (new, revised, rejected and different)
    inserted: np.ndarray
    # per stored record: '' (stays as it is), revised, or a retirement reason
    stored_end: pd.Series

    def counts(self) -> dict[str, int]:
        fates = self.fate.value_counts()
        ends = self.stored_end.value_counts()
        return {
            NEW: int(fates.get(NEW, 0)),
            REVISED: int(fates.get(REVISED, 0)),
            UNCHANGED: int(fates.get(UNCHANGED, 0)),
            "added": int((self.inserted & (self.matched < 0)).sum()),
            "retired": int(sum(ends.get(r, 0) for r in RETIREMENT_REASONS)),
        }


def compare_delivery(delivered: pd.DataFrame, stored: pd.DataFrame, mode: str) -> Comparison:
    """Classify a partner's delivered rows against its current stored records (see the module
    docstring). Identity keys are unique among `stored` and among `delivered`."""
    if mode not in MODES:
        raise ValueError(f"unknown delivery mode {mode!r}")
    position = pd.Series(np.arange(len(stored)), index=pd.Index(stored["identity"]))
    matched = (
        delivered["identity"].map(position).fillna(-1).astype(np.int64).to_numpy()
        if len(stored)
        else np.full(len(delivered), -1, dtype=np.int64)
    )
    known = matched >= 0
    outcome = delivered["outcome"].astype(str).to_numpy()
    harmonized = outcome == Outcome.HARMONIZED
    rejected = outcome == Outcome.REJECTED
    same = np.zeros(len(delivered), dtype=bool)
    if known.any():
        stored_content = stored["content"].to_numpy()[matched[known]]
        same[known] = delivered["content"].to_numpy()[known] == stored_content
    fate = np.where(
        harmonized,
        np.where(~known, NEW, np.where(same, UNCHANGED, REVISED)),
        outcome,
    )
    inserted = (harmonized | rejected) & ~(known & same)
    stored_end = np.full(len(stored), "", dtype=object)
    if mode == FULL:
        stored_end[:] = NOT_REDELIVERED  # unless the delivery names it (below)
        stored_end[matched[known]] = ""
    stored_end[matched[known & inserted]] = REVISED_REASON
    stored_end[matched[known & (outcome == Outcome.EXCLUDED)]] = REVISION_EXCLUDED
    return Comparison(
        fate=pd.Series(fate, index=delivered.index, dtype=object),
        matched=matched,
        inserted=inserted,
        stored_end=pd.Series(stored_end, index=stored.index, dtype=object),
    )


def reharmonized_end(outcomes: pd.Series) -> pd.Series:
    """For stored records harmonized again under today's mapping (their mapper outcomes):
    '' (a new harmonized version), held back (rejected now) or retired (excluded now)."""
    kind = outcomes.astype(str)
    return pd.Series(
        np.where(
            kind == Outcome.HARMONIZED,
            "",
            np.where(kind == Outcome.EXCLUDED, REHARMONIZED_EXCLUDED, HELD_BACK),
        ),
        index=outcomes.index,
        dtype=object,
    )


def retirement_share(comparison: Comparison, stored_count: int) -> float:
    """The share of the partner's current records this delivery would retire."""
    if stored_count == 0:
        return 0.0
    retired = comparison.stored_end.isin(RETIREMENT_REASONS).sum()
    return float(retired) / stored_count
