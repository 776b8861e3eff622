"""Cross-partner linkage at the combine step, after identifiers are gone (keyed hashes only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ctdc_harmonizer.columns import FILE, PARTNER
from ctdc_harmonizer.errors import MappingError
from ctdc_harmonizer.fileio import load_yaml
from ctdc_harmonizer.privacy import linkage

POLICY_FILE = "linkage.yaml"


@dataclass(frozen=True)
class Linked:
    merged: np.ndarray  # per record: merged into another partner's record of the person
    summary: dict  # method, policy, persons per pair of partners, duplicates merged
    matrix: dict  # the shareable overlap report (small cells hidden)
    merged_files: dict[str, pd.Series]  # per partner: the file of each record merged away


def linkage_policy(mappings: str | Path) -> str:
    """`policy` of mappings/linkage.yaml (report when the file is absent)."""
    path = Path(mappings) / POLICY_FILE
    policy = None
    if path.exists():
        try:
            policy = (load_yaml(path.read_text(encoding="utf-8")) or {}).get("policy")
        except (yaml.YAMLError, AttributeError):
            raise MappingError(str(path), "not a YAML mapping with a 'policy' key") from None
    policy = policy or linkage.REPORT
    if policy not in linkage.POLICIES:
        raise MappingError(str(path), f"policy must be one of {', '.join(linkage.POLICIES)}")
    return policy


def link(keys: pd.DataFrame, completeness: np.ndarray, partners: list[str], policy: str) -> Linked:
    """Count persons found at two partners; under 'merge' mark all but one record of each
    (the most complete: `completeness`, its count of known codebook values) as merged.
    `keys`: per record, its partner, file and linkage keys, in the release's order."""
    merged, pairs = linkage.overlaps(keys, PARTNER, policy, pd.Series(completeness))
    merged_files = {
        partner: keys.loc[merged & (keys[PARTNER] == partner), FILE].reset_index(drop=True)
        for partner in partners
    }
    summary = {
        "method": "keyed exact hashes of name and date-of-birth variants (docs/privacy.md)",
        "policy": policy,
        "persons_at_both_partners": pairs,
        "duplicates_merged": int(merged.sum()),
    }
    matrix = linkage.overlap_matrix(pairs, list(partners))
    return Linked(merged.to_numpy(dtype=bool), summary, matrix, merged_files)
