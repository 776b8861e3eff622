"""Country spellings to ISO 3166-1 alpha-3: the partner's table, the codebook's rules, ISO."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import pandas as pd
import pycountry

from ctdc_harmonizer.text import normalize_token

if TYPE_CHECKING:
    from ctdc_harmonizer.codebook import Codebook
    from ctdc_harmonizer.mapping.spec import PartnerConfig


@cache
def _pycountry_lookup(key: str) -> str | None:
    try:
        return pycountry.countries.lookup(key).alpha_3
    except LookupError:
        return None


def country_table(keys: pd.Series, config: PartnerConfig, codebook: Codebook) -> pd.Series:
    """Distinct normalized country spellings -> ISO alpha-3 ('' = known unknown, NA = unknown).

    Order: the partner's countries.csv, the codebook's Appendix II rules (Kosovo, Tibet),
    then ISO 3166 through pycountry (alpha-2, alpha-3, names).
    """
    distinct = pd.Series(keys.dropna().unique(), dtype="string")
    partner = dict(zip(config.countries["key"], config.countries["iso3"], strict=True))
    rules = {normalize_token(k): v for k, v in codebook.country_rules.items()}
    resolved = {}
    for key in distinct:  # distinct spellings (a few hundred at most), not records
        if key in partner:
            resolved[key] = partner[key]  # may be "": a spelling the partner uses for unknown
        else:
            resolved[key] = rules.get(key) or _pycountry_lookup(key)
    return pd.Series(resolved, dtype="string")
