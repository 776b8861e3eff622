"""Where every input row went: the reconciliation of a release.

rows_read = harmonized + rejected + excluded + erased + duplicates_merged,
per partner and file. A release whose counts do not reconcile is not written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.harmonize import EXCLUDED, HARMONIZED, REJECTED
from ctdc_harmonizer.reader import FILE

ERASED = "erased"
MERGED = "duplicate"
INVARIANT = "rows_read = harmonized + rejected + excluded + erased + duplicates_merged"


def _partner_files(work: Path) -> dict:
    stage = json.loads((work / "stage.json").read_text(encoding="utf-8"))
    outcomes = pd.read_parquet(work / "outcomes.parquet")
    removed = pd.read_parquet(work / "removed.parquet")
    # Records merged into another partner's record of the same person (privacy.combine).
    linked_path = work / "linked.parquet"
    linked = pd.read_parquet(linked_path)[FILE] if linked_path.exists() else pd.Series([])
    files = {}
    for name, meta in stage["files"].items():
        mine = outcomes[outcomes[FILE] == name]
        gone = removed[removed[FILE] == name]
        cross = int((linked == name).sum())
        entry = {
            **meta,
            "harmonized": int((mine["outcome"] == HARMONIZED).sum()) - cross,
            "rejected": _by(mine, REJECTED),
            "excluded": _by(mine, EXCLUDED),
            "erased": int((gone["outcome"] == ERASED).sum()),
            "duplicates_merged": int((gone["outcome"] == MERGED).sum()) + cross,
        }
        accounted = (
            entry["harmonized"]
            + sum(entry["rejected"].values())
            + sum(entry["excluded"].values())
            + entry["erased"]
            + entry["duplicates_merged"]
        )
        entry["unaccounted"] = entry["rows_read"] - accounted
        files[name] = entry
    return files


def _by(outcomes: pd.DataFrame, kind: str) -> dict[str, int]:
    picked = outcomes[outcomes["outcome"] == kind]
    return {str(k): int(v) for k, v in picked.groupby("reason").size().sort_index().items()}


def _totals(files: dict) -> dict:
    totals = {
        "rows_read": 0,
        "harmonized": 0,
        "rejected": 0,
        "excluded": 0,
        "erased": 0,
        "duplicates_merged": 0,
        "unaccounted": 0,
    }
    for entry in files.values():
        for key in totals:
            value = entry[key]
            totals[key] += sum(value.values()) if isinstance(value, dict) else value
    return totals


def reconcile(plan: dict) -> dict:
    work = Path(plan["work_dir"])
    partners = {}
    for partner in sorted(plan["partners"]):
        files = _partner_files(work / partner)
        partners[partner] = {"files": files, "totals": _totals(files)}
    grand = _totals({p: v["totals"] for p, v in partners.items()})
    holds = grand["unaccounted"] == 0 and all(
        f["unaccounted"] == 0 for p in partners.values() for f in p["files"].values()
    )
    return {
        "release": plan["release"],
        "invariant": INVARIANT,
        "invariant_holds": holds,
        "partners": partners,
        "totals": grand,
    }
