"""Suppression before synthesis, as data (schemas/suppression_v1.yaml): counted, never silent.

Values listed as never published, and values of the listed variables held by fewer than the
rare-value threshold of records, become NULL before the DP fit, so neither the aggregates nor
any synthetic record can carry them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.synthesis.config import SuppressionConfig


@dataclass(frozen=True)
class Suppressed:
    frame: pd.DataFrame
    report: dict


def suppress(frame: pd.DataFrame, config: SuppressionConfig, codebook: Codebook) -> Suppressed:
    unknown = sorted(
        (set(config.never_publish) | set(config.rare_values.variables)) - set(codebook.columns)
    )
    if unknown:
        raise CtdcError(f"{config.source}: not codebook variables: {', '.join(unknown)}")
    out = frame.copy()
    report: dict[str, dict] = {}
    for name in codebook.columns:
        column = out[name].astype("string")
        listed = column.isin([str(v) for v in config.never_publish.get(name, [])]).fillna(False)
        rare = pd.Series(False, index=out.index)
        rare_values = 0
        if name in config.rare_values.variables:
            counts = column.value_counts(dropna=True)
            small = counts[counts < config.rare_values.min_records].index
            rare_values = len(small)
            rare = column.isin(small).fillna(False) & ~listed
        if listed.any() or rare.any():
            out.loc[listed | rare, name] = pd.NA
        if name in config.never_publish or name in config.rare_values.variables:
            report[name] = {
                "never_publish_cells": int(listed.sum()),
                "rare_values": int(rare_values),
                "rare_cells": int(rare.sum()),
            }
    total = sum(v["never_publish_cells"] + v["rare_cells"] for v in report.values())
    return Suppressed(
        out,
        {
            "config": config.source,
            "rare_value_threshold": config.rare_values.min_records,
            "variables": report,
            "cells_set_to_null": int(total),
            "records": len(out),
        },
    )
