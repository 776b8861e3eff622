"""The two views of a synthesis run's comparability, as the synthesis tab shows them.

- public: the synthetic data against the DP aggregates (both published), by combination
  length, from the public comparability report (`evaluate.public_report`);
- restricted: the synthetic data against the sensitive data, for the data team, from the
  restricted reports of `<out>/restricted/<release>/`.

The restricted reports hold more than a page may show: counts of combinations per count
bucket (how many combinations were seen 1-4 times), each sensitive variable's shares with
their denominators, and the risk report lists each rare value with its count. Small counts
like these can single out a person, so the restricted view takes, by an explicit list, only
summary figures: per combination length (how many combinations, mean errors, how many
fabricated or not reproduced) and the run's totals of the risk and suppression reports. No
value and no per-value count ever reaches it. Light (no pandas): the API server imports it.
"""

from __future__ import annotations

import json
from pathlib import Path

LENGTH_FIGURES = (
    "combinations_reference",
    "combinations_synthetic",
    "mean_absolute_error",
    "mean_relative_error",
    "only_in_synthetic",
    "only_in_reference",
)
RISK_FIGURES = (
    "records",
    "k",
    "equivalence_classes",
    "classes_below_k",
    "records_in_classes_below_k",
    "share_of_records_below_k",
)
SUPPRESSION_FIGURES = ("records", "rare_value_threshold", "cells_set_to_null")


def by_length(comparison: dict) -> list[dict]:
    """One row per combination length: the LENGTH_FIGURES only (no count bucket)."""
    lengths = sorted((k for k in comparison if k.isdigit()), key=int)
    return [
        {"length": int(k), **{f: comparison[k].get(f) for f in LENGTH_FIGURES}} for k in lengths
    ]


def public_view(public_report: dict) -> dict:
    """The published comparability report (synthetic vs DP aggregates), by length."""
    return {
        "sampler": public_report.get("sampler"),
        "synthetic_records": public_report.get("synthetic_records"),
        "by_length": by_length(public_report.get("synthetic_vs_dp_aggregates") or {}),
    }


def restricted_view(comparability: dict, risk: dict | None, suppression: dict | None) -> dict:
    """The restricted reports reduced to summary figures (module docstring): per sampler
    (the published one first) its errors against the sensitive counts by length and in all,
    the verdict between samplers, the risk and suppression totals."""
    published = comparability.get("published_sampler")
    headline = comparability.get("headline") or {}
    samplers = sorted(comparability.get("samplers") or {}, key=lambda name: name != published)
    return {
        "published_sampler": published,
        "sensitive_records": (comparability.get("rows") or {}).get("sensitive"),
        "samplers": [
            {
                "sampler": name,
                "by_length": by_length(comparability["samplers"][name]["vs_sensitive"]),
                "mean_absolute_error_all": (
                    comparability["samplers"][name]["vs_sensitive"].get("all") or {}
                ).get("mean_absolute_error"),
            }
            for name in samplers
        ],
        "own_at_least_as_accurate": headline.get("own_at_least_as_accurate"),
        "risk": {f: risk.get(f) for f in RISK_FIGURES} if risk else None,
        "suppression": (
            {
                **{f: suppression.get(f) for f in SUPPRESSION_FIGURES},
                "variables_checked": len(suppression.get("variables") or {}),
            }
            if suppression
            else None
        ),
    }


def read_restricted_view(
    restricted_dir: str | Path, comparability: str, risk: str, suppression: str
) -> dict | None:
    """The restricted view from a run's restricted folder (the file names are the synthesis's
    own); None while its comparability report is not written yet."""
    folder = Path(restricted_dir)

    def read(name: str) -> dict | None:
        path = folder / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    report = read(comparability)
    if report is None:
        return None
    return restricted_view(report, read(risk), read(suppression))
