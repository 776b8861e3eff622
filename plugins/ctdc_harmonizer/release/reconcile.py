"""Where every row and every stored record went: the reconciliation of a release.

Two ledgers, both checked before anything is published:

- per delivered file (one per partner that delivered): `rows_read = new + revised + unchanged
  + rejected + excluded + erased + duplicates_merged` (new + revised + unchanged are the rows
  harmonized: `harmonized`);
- per partner and release: `previous + added - retired - erased = current` (its stored records
  before and after this release; added: records it had not delivered before, revisions replace
  their earlier version one for one) and `current = released + held_back + merged` (held back:
  rejected by today's mapping; merged: the same person found at another partner, policy
  'merge'). A carried partner has no delivery, and previous = current.

A release whose counts do not reconcile is not written.
"""

from __future__ import annotations

import pandas as pd

from ctdc_harmonizer.columns import FILE, OUTCOMES_WITH_REASON, Outcome

FILE_INVARIANT = (
    "per delivered file: rows_read = new + revised + unchanged + rejected + excluded + erased "
    "+ duplicates_merged (harmonized = new + revised + unchanged)"
)
RECORD_INVARIANT = (
    "per partner: previous + added - retired - erased = current; current = released + held_back "
    "+ merged"
)
FILE_KEYS = ("new", "revised", "unchanged", "rejected", "excluded", "erased", "duplicates_merged")
TOTAL_KEYS = ("rows_read", "harmonized", *FILE_KEYS, "unaccounted")


def _count(value: int | dict[str, int]) -> int:
    return sum(value.values()) if isinstance(value, dict) else int(value)


def _reasons_by_file(outcomes: pd.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    """(file, outcome) -> {reason: rows}, for rejected and excluded rows: one grouping over
    the delivery, not two per file (2,000 small files stay cheap)."""
    picked = outcomes[outcomes["outcome"].isin([str(o) for o in OUTCOMES_WITH_REASON])]
    counted: dict[tuple[str, str], dict[str, int]] = {}
    if not len(picked):
        return counted
    sizes = picked.groupby([FILE, "outcome", "reason"], sort=True).size()
    for (file, outcome, reason), rows in sizes.items():  # one entry per file and reason
        counted.setdefault((str(file), str(outcome)), {})[str(reason)] = int(rows)
    return counted


def delivery_files(delivery: dict, outcomes: pd.DataFrame) -> dict[str, dict]:
    """Per delivered file of one partner, where its rows went (`delivery`: the chain's record
    of the delivery; `outcomes`: the mapper's outcome of each delivered row, for reasons)."""
    counted = {}
    reasons = _reasons_by_file(outcomes)
    for name, entry in sorted(delivery["files"].items()):
        if entry.get("withdrawals"):  # a withdrawals file: its lines are requests, not rows
            continue
        counts = entry["counts"]
        row = {
            "sha256": entry["sha256"],
            "rows_read": int(counts["rows_read"]),
            "new": int(counts["rows_new"]),
            "revised": int(counts["rows_revised"]),
            "unchanged": int(counts["rows_unchanged"]),
            "rejected": dict(reasons.get((name, Outcome.REJECTED), {})),
            "excluded": dict(reasons.get((name, Outcome.EXCLUDED), {})),
            "erased": int(counts["rows_erased"]),
            "duplicates_merged": int(counts["rows_duplicates_merged"]),
        }
        row["harmonized"] = row["new"] + row["revised"] + row["unchanged"]
        row["unaccounted"] = row["rows_read"] - sum(_count(row[k]) for k in FILE_KEYS)
        counted[name] = row
    return counted


def totals(entries: dict[str, dict]) -> dict[str, int]:
    """Sum of the counts of several files (or partners); reasons added up."""
    return {key: sum(_count(e.get(key, 0)) for e in entries.values()) for key in TOTAL_KEYS}


def record_ledger(counts: dict, released: int, merged: int) -> dict:
    """A partner's stored records before and after the release (`counts`: the chain's change
    counts, or a carried partner's previous = current)."""
    retired = counts.get("retired", {})
    ledger = {
        "previous": int(counts["previous"]),
        "added": int(counts.get("added", 0)),
        "revised": int(counts.get("revised", 0)),
        "retired": {str(k): int(v) for k, v in retired.items() if v},
        "erased": int(counts.get("erased", 0)),
        "current": int(counts["current"]),
        "reharmonized": int(counts.get("reharmonized", 0)),
        "held_back": int(counts.get("held_back", 0)),
        "merged": int(merged),
        "released": int(released),
    }
    before_after = (
        ledger["previous"] + ledger["added"] - _count(ledger["retired"]) - ledger["erased"]
    ) - ledger["current"]
    split = ledger["current"] - (ledger["released"] + ledger["held_back"] + ledger["merged"])
    ledger["unaccounted"] = abs(before_after) + abs(split)
    return ledger


def reconcile(release: str, partners: dict[str, dict]) -> dict:
    """The release's reconciliation; `partners`: per partner its state, its delivery's files
    (or None) and its record ledger."""
    for entry in partners.values():
        if entry.get("files") is not None:
            entry["totals"] = totals(entry["files"])
    delivered = {p: e["totals"] for p, e in partners.items() if e.get("files") is not None}
    grand = totals(delivered)
    records = {
        key: sum(_count(e["records"][key]) for e in partners.values())
        for key in (
            "previous",
            "added",
            "retired",
            "erased",
            "current",
            "held_back",
            "merged",
            "released",
        )
    }
    holds = all(
        f["unaccounted"] == 0 for e in partners.values() for f in (e.get("files") or {}).values()
    ) and all(e["records"]["unaccounted"] == 0 for e in partners.values())
    return {
        "release": release,
        "invariants": [FILE_INVARIANT, RECORD_INVARIANT],
        "invariant_holds": holds,
        "partners": dict(sorted(partners.items())),
        "totals": grand,
        "records": records,
    }
