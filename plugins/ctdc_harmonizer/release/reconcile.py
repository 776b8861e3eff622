"""Where every input row went: the reconciliation of a release.

rows_read = harmonized + rejected + excluded + erased + duplicates_merged,
per partner and file. A release whose counts do not reconcile is not written.
"""

from __future__ import annotations

import pandas as pd

from ctdc_harmonizer.columns import FILE, OUTCOMES_WITH_REASON, Outcome

INVARIANT = "rows_read = harmonized + rejected + excluded + erased + duplicates_merged"
TOTAL_KEYS = ("rows_read", *Outcome, "unaccounted")


def partner_files(
    files: dict[str, dict],
    outcomes: pd.DataFrame,
    removed: pd.DataFrame,
    linked: pd.Series,
) -> dict[str, dict]:
    """Per delivered file of one partner, where its rows went.

    files: per file, what the reading step recorded (checksum, rows_read, ...);
    outcomes: the mapper's outcome of every staged row; removed: rows erased or merged while
    staging; linked: the file of each of this partner's rows merged into another partner's
    record of the same person (privacy/combine.py)."""
    counted = {}
    for name, meta in files.items():  # files, not records
        mine = outcomes[outcomes[FILE] == name]
        gone = removed[removed[FILE] == name]
        cross = int((linked == name).sum())
        entry = {
            **meta,
            Outcome.HARMONIZED: int((mine["outcome"] == Outcome.HARMONIZED).sum()) - cross,
            **{kind: _by_reason(mine, kind) for kind in OUTCOMES_WITH_REASON},
            Outcome.ERASED: int((gone["outcome"] == Outcome.ERASED).sum()),
            Outcome.DUPLICATES_MERGED: int((gone["outcome"] == Outcome.DUPLICATES_MERGED).sum())
            + cross,
        }
        entry = {str(k): v for k, v in entry.items()}
        entry["unaccounted"] = entry["rows_read"] - sum(_count(entry[k]) for k in Outcome)
        counted[name] = entry
    return counted


def _count(value: int | dict[str, int]) -> int:
    return sum(value.values()) if isinstance(value, dict) else value


def _by_reason(outcomes: pd.DataFrame, kind: str) -> dict[str, int]:
    picked = outcomes[outcomes["outcome"] == kind]
    return {str(k): int(v) for k, v in picked.groupby("reason").size().sort_index().items()}


def totals(entries: dict[str, dict]) -> dict[str, int]:
    """Sum of the counts of several files (or partners); reasons added up."""
    return {str(key): sum(_count(e[str(key)]) for e in entries.values()) for key in TOTAL_KEYS}


def reconcile(release: str, partners: dict[str, dict[str, dict]]) -> dict:
    """The release's reconciliation from each partner's `partner_files`; checks the invariant."""
    by_partner = {
        partner: {"files": files, "totals": totals(files)}
        for partner, files in sorted(partners.items())
    }
    grand = totals({p: v["totals"] for p, v in by_partner.items()})
    holds = grand["unaccounted"] == 0 and all(
        f["unaccounted"] == 0 for p in by_partner.values() for f in p["files"].values()
    )
    return {
        "release": release,
        "invariant": INVARIANT,
        "invariant_holds": holds,
        "partners": by_partner,
        "totals": grand,
    }
