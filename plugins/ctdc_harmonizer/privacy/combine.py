"""Cross-partner linkage at the combine step, after identifiers are gone (keyed hashes only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from ctdc_harmonizer.columns import FILE, PARTNER
from ctdc_harmonizer.errors import MappingError
from ctdc_harmonizer.privacy import linkage

POLICY_FILE = "linkage.yaml"


@dataclass(frozen=True)
class Linked:
    kept: pd.DataFrame  # the combined rows left, linkage keys dropped
    summary: dict  # method, policy, persons per pair of partners, duplicates merged
    matrix: dict  # the shareable overlap report (small cells hidden)
    merged_files: dict[str, pd.Series]  # per partner: the file of each row merged away


def linkage_policy(mappings: str | Path) -> str:
    """`policy` of mappings/linkage.yaml (report when the file is absent)."""
    path = Path(mappings) / POLICY_FILE
    policy = None
    if path.exists():
        try:
            policy = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("policy")
        except (yaml.YAMLError, AttributeError):
            raise MappingError(str(path), "not a YAML mapping with a 'policy' key") from None
    policy = policy or linkage.REPORT
    if policy not in linkage.POLICIES:
        raise MappingError(str(path), f"policy must be one of {', '.join(linkage.POLICIES)}")
    return policy


def link(combined: pd.DataFrame, partners: list[str], columns: list[str], policy: str) -> Linked:
    """Count persons found at two partners; under 'merge' keep one record of each (the most
    complete by the codebook `columns`)."""
    completeness = combined[columns].notna().sum(axis=1)
    merged, pairs = linkage.overlaps(combined, PARTNER, policy, completeness)
    merged_files = {
        partner: combined.loc[merged & (combined[PARTNER] == partner), FILE].reset_index(drop=True)
        for partner in partners
    }
    kept = combined.loc[~merged].drop(columns=linkage.LINK_COLUMNS).reset_index(drop=True)
    summary = {
        "method": "keyed exact hashes of name and date-of-birth variants (docs/privacy.md)",
        "policy": policy,
        "persons_at_both_partners": pairs,
        "duplicates_merged": int(merged.sum()),
    }
    return Linked(kept, summary, linkage.overlap_matrix(pairs, list(partners)), merged_files)
