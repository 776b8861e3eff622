"""Suppression, as data (schemas/suppression_v1.yaml): counted, never silent.

Two rules, applied where they keep the DP guarantee:
- **Never published** values become NULL in the table before the DP fit. The rule looks at
  each record alone (a fixed list), so one person more or less changes one row of the fit's
  input, as differential privacy assumes.
- **Rare values** are decided on the DP aggregates, after the fit: a value of a listed variable
  whose released 1-count is below the threshold is dropped with every released combination
  holding it, and the synthetic data cannot carry it. Deciding it on the sensitive table
  instead would let one person more or less change the NULLs of up to `min_records` rows of
  the fit's input (a value crossing the threshold), multiplying the privacy loss of those
  values; on the released counts it is post-processing and spends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.synthesis.config import SuppressionConfig
from ctdc_harmonizer.synthesis.fit import DELIMITER, SEPARATOR, DpAggregates


@dataclass(frozen=True)
class Suppressed:
    frame: pd.DataFrame
    report: dict


@dataclass(frozen=True)
class RareDropped:
    aggregates: DpAggregates
    values: frozenset[str]  # "column:value" of the released values below the threshold
    report: dict  # counts only


def _check_variables(config: SuppressionConfig, codebook: Codebook) -> None:
    unknown = sorted(
        (set(config.never_publish) | set(config.rare_values.variables)) - set(codebook.columns)
    )
    if unknown:
        raise CtdcError(f"{config.source}: not codebook variables: {', '.join(unknown)}")


def suppress(frame: pd.DataFrame, config: SuppressionConfig, codebook: Codebook) -> Suppressed:
    """The never-published values set to NULL before the fit, counted per variable."""
    _check_variables(config, codebook)
    out = frame.copy()
    report: dict[str, dict] = {}
    for name, values in config.never_publish.items():
        listed = out[name].astype("string").isin([str(v) for v in values]).fillna(False)
        if listed.any():
            out.loc[listed, name] = pd.NA
        report[name] = {"never_publish_cells": int(listed.sum())}
    total = sum(v["never_publish_cells"] for v in report.values())
    return Suppressed(
        out,
        {
            "config": config.source,
            "rare_value_threshold": config.rare_values.min_records,
            "rare_values_decided_on": "the DP aggregates, after the fit (post-processing)",
            "variables": report,
            "cells_set_to_null": int(total),
            "records": len(out),
        },
    )


def drop_rare_released(
    aggregates: DpAggregates, config: SuppressionConfig, codebook: Codebook
) -> RareDropped:
    """The aggregates without any combination that holds a rare released value."""
    _check_variables(config, codebook)
    variables = set(config.rare_values.variables)
    rare = frozenset(
        key
        for key, count in aggregates.counts.items()
        if DELIMITER not in key
        and key.split(SEPARATOR, 1)[0] in variables
        and count < config.rare_values.min_records
    )
    if not rare:
        kept = aggregates
    else:
        kept = replace(
            aggregates,
            counts={
                key: count
                for key, count in aggregates.counts.items()
                if not any(part in rare for part in key.split(DELIMITER))
            },
        )
    per_variable = {
        name: sum(1 for key in rare if key.split(SEPARATOR, 1)[0] == name)
        for name in sorted(variables)
    }
    return RareDropped(
        kept,
        rare,
        {
            "rare_value_threshold": config.rare_values.min_records,
            "released_values_below_threshold": per_variable,
            "combinations_dropped": len(aggregates.counts) - len(kept.counts),
        },
    )


def null_rare_values(synthetic: pd.DataFrame, rare: frozenset[str]) -> pd.DataFrame:
    """A sample made before the rule (pac-synth's sampler, right after its fit) with the rare
    released values set to empty, as the own sampler never forms them."""
    if not rare:
        return synthetic
    out = synthetic.copy()
    for key in rare:
        name, value = key.split(SEPARATOR, 1)
        if name in out.columns:
            out.loc[out[name] == value, name] = ""
    return out
