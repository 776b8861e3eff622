"""Disclosure-risk report on the sensitive table, before synthesis (restricted, counts only).

In the spirit of sdcMicro / ARX: equivalence classes on the quasi-identifiers (NULL is a value
of its own), how many records sit in classes smaller than k, and per quasi-identifier how many
values are held by fewer than the rare-value threshold of records. The rare values themselves
are codebook categories (ISO country codes, age bins, years), listed for the restricted reader.
"""

from __future__ import annotations

import pandas as pd

from ctdc_harmonizer.synthesis.config import RiskConfig, SuppressionConfig

NULL_LABEL = "(NULL)"


def equivalence_classes(frame: pd.DataFrame, quasi_identifiers: list[str]) -> pd.Series:
    """Size of each equivalence class (one entry per class)."""
    keys = frame[quasi_identifiers].astype("string").fillna(NULL_LABEL)
    return keys.value_counts(sort=False).reset_index(drop=True)


def disclosure_risk(frame: pd.DataFrame, risk: RiskConfig, suppression: SuppressionConfig) -> dict:
    sizes = equivalence_classes(frame, risk.quasi_identifiers)
    below = sizes[sizes < risk.k]
    edges = [0, 1, 2, 5, risk.k - 1, 10**12]
    labels = ["1", "2", "3-5", f"6-{risk.k - 1}", f">={risk.k}"]
    if risk.k - 1 <= 5:  # a small k: simpler buckets
        edges, labels = [0, risk.k - 1, 10**12], [f"<{risk.k}", f">={risk.k}"]
    buckets = pd.cut(sizes, bins=edges, labels=labels)
    rare_limit = suppression.rare_values.min_records
    rare = {}
    for name in risk.quasi_identifiers:
        counts = frame[name].astype("string").value_counts(dropna=True)
        small = counts[counts < rare_limit]
        rare[name] = {
            "values_below_threshold": int(len(small)),
            "records_affected": int(small.sum()),
            "values": {str(k): int(v) for k, v in small.sort_index().items()},
        }
    return {
        "records": len(frame),
        "quasi_identifiers": risk.quasi_identifiers,
        "k": risk.k,
        "equivalence_classes": int(len(sizes)),
        "classes_below_k": int(len(below)),
        "records_in_classes_below_k": int(below.sum()),
        "share_of_records_below_k": round(float(below.sum()) / max(len(frame), 1), 6),
        "class_size_distribution": {
            str(label): {
                "classes": int((buckets == label).sum()),
                "records": int(sizes[buckets == label].sum()),
            }
            for label in labels
        },
        "rare_value_threshold": rare_limit,
        "rare_values": rare,
    }
