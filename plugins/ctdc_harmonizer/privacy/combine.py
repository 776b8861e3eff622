"""Cross-partner linkage at the combine step, after identifiers are gone (keyed hashes only)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from ctdc_harmonizer.errors import MappingError
from ctdc_harmonizer.privacy import linkage
from ctdc_harmonizer.reader import FILE

POLICY_FILE = "linkage.yaml"
LINKED_FILE = "linked.parquet"  # per partner: the files of its rows merged into another's
OVERLAP_REPORT = "overlaps.json"


def linkage_policy(plan: dict) -> str:
    """`policy` of mappings/linkage.yaml (report when the file is absent); a plan may
    override it with `linkage_policy`."""
    policy = plan.get("linkage_policy")
    path = Path(plan["mappings"]) / POLICY_FILE
    if not policy and path.exists():
        try:
            policy = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("policy")
        except (yaml.YAMLError, AttributeError):
            raise MappingError(str(path), "not a YAML mapping with a 'policy' key") from None
    policy = policy or linkage.REPORT
    if policy not in linkage.POLICIES:
        raise MappingError(str(path), f"policy must be one of {', '.join(linkage.POLICIES)}")
    return policy


def link(plan: dict, combined: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, dict]:
    """Count persons found at two partners; under 'merge' keep one record of each. Writes
    the shareable overlap matrix and per-partner merge counts to the work folder."""
    from ctdc_harmonizer.pipeline import PARTNER_COLUMN

    work = Path(plan["work_dir"])
    policy = linkage_policy(plan)
    completeness = combined[columns].notna().sum(axis=1)
    merged, pairs = linkage.overlaps(combined, PARTNER_COLUMN, policy, completeness)
    for partner in plan["partners"]:
        mine = merged & (combined[PARTNER_COLUMN] == partner)
        combined.loc[mine, [FILE]].reset_index(drop=True).to_parquet(
            work / partner / LINKED_FILE, index=False
        )
    matrix = linkage.overlap_matrix(pairs, list(plan["partners"]))
    (work / OVERLAP_REPORT).write_text(json.dumps(matrix, indent=2, sort_keys=True), "utf-8")
    kept = combined.loc[~merged].drop(columns=linkage.LINK_COLUMNS).reset_index(drop=True)
    return kept, {
        "method": "keyed exact hashes of name and date-of-birth variants (docs/privacy.md)",
        "policy": policy,
        "persons_at_both_partners": pairs,
        "duplicates_merged": int(merged.sum()),
    }
