"""Vectorised text normalisation shared by mappings and readers."""

from __future__ import annotations

import re

import pandas as pd

_SPACES = re.compile(r"\s+")


def normalize_token(value: str) -> str:
    """Key used to match a source value against a mapping table: trimmed, single-spaced,
    case-folded. `Debt bondage ` (HTCDS, trailing space) and `debt bondage` match."""
    return _SPACES.sub(" ", str(value)).strip().casefold()


def normalize_series(values: pd.Series) -> pd.Series:
    """The vectorised twin of normalize_token."""
    return values.astype("string").str.replace(_SPACES, " ", regex=True).str.strip().str.casefold()
