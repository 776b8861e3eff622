"""Vectorised text normalisation shared by mappings and readers."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import numpy as np
import pandas as pd

_SPACES = re.compile(r"\s+")


def normalize_token(value: str) -> str:
    """Key used to match a source value against a mapping table: NFC, trimmed, single-spaced,
    case-folded. `Debt bondage ` (HTCDS, trailing space) and `debt bondage` match, and so do
    a decomposed `Co\u0302te d'Ivoire` (as macOS may write it) and the composed form."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", str(value))).strip().casefold()


def nfc(values: pd.Series) -> pd.Series:
    """Text in Unicode NFC, through pyarrow's kernel (pandas' str.normalize loops in Python)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrow = pa.array(values.astype(pd.StringDtype("pyarrow")).array)
    composed = pc.utf8_normalize(arrow, form="NFC")
    return pd.Series(pd.array(composed, dtype=pd.StringDtype("pyarrow")), index=values.index)


def normalize_series(values: pd.Series) -> pd.Series:
    """The vectorised twin of normalize_token."""
    text = nfc(values)
    return text.str.replace(_SPACES, " ", regex=True).str.strip().str.casefold()


def per_distinct(values: pd.Series, func: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """Apply a vectorised `func` to the distinct values only, then spread the result back.
    Case extracts repeat the same picklist values endlessly; this is where speed comes from."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if len(uniques) == 0:
        return pd.Series(pd.NA, index=values.index, dtype="string")
    distinct = pd.Series(uniques, dtype=object).astype("string")
    mapped = func(distinct).astype("string").to_numpy(dtype=object, na_value=None)
    spread = np.append(mapped, None)[codes]  # code -1 (missing) picks the trailing None
    return pd.Series(spread, index=values.index, dtype="string")
