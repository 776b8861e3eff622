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
    Case extracts repeat the same picklist values endlessly; this is where speed comes from.

    Text columns (Arrow-backed, what every reader gives) stay in Arrow throughout: a
    dictionary encoding, `func` over its dictionary, and a `take` back onto the rows, with no
    Python object per row."""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        return _per_distinct_arrow(values, func)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if len(uniques) == 0:
        return pd.Series(pd.NA, index=values.index, dtype="string")
    distinct = pd.Series(uniques, dtype=object).astype("string")
    mapped = func(distinct).astype("string").to_numpy(dtype=object, na_value=None)
    spread = np.append(mapped, None)[codes]  # code -1 (missing) picks the trailing None
    return pd.Series(spread, index=values.index, dtype="string")


def arrow_text(values: pd.Series):
    """A column as Arrow strings (a pyarrow.ChunkedArray), missing as null; Arrow-backed text,
    what every reader gives, is not copied."""
    import pyarrow as pa

    return pa.chunked_array(values.astype("string").array.__arrow_array__(), type=pa.string())


def _per_distinct_arrow(values: pd.Series, func: Callable[[pd.Series], pd.Series]) -> pd.Series:
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(arrow_text(values).combine_chunks())  # one dictionary
    distinct = pd.Series(pd.array(encoded.dictionary, dtype=values.dtype))
    mapped = pa.array(func(distinct).astype(values.dtype).array, type=pa.string())
    spread = pc.take(mapped, encoded.indices)  # a null index (missing cell) gives null
    return pd.Series(pd.array(spread, dtype=values.dtype), index=values.index)


def is_in(values: pd.Series, candidates: pd.Series | list | set) -> np.ndarray:
    """values.isin(candidates) for text, through Arrow's hash set: pandas builds a Python
    object per candidate, which costs seconds when checking a million keys. Missing is
    never in."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(candidates, pd.Series):
        wanted = arrow_text(candidates).combine_chunks()
    else:
        wanted = pa.array(list(candidates), type=pa.string())
    found = pc.is_in(arrow_text(values), value_set=wanted, skip_nulls=True)
    return found.to_numpy(zero_copy_only=False)
