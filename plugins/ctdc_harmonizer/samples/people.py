"""Invented people recorded twice, with realistic typos: test data for the linkage.

`twin_records(n, seed)` gives two partners' views (a, b) of n invented people, with a
`person` column as the truth, plus `distractors` people recorded by b only. Names are built
from syllables (tens of thousands of spellings, unlike fake.py's short lists, so distinct
people rarely share a name and date of birth by chance, as in real registers). The b side
carries one kind of error per record, drawn from TYPOS: spelling variants that sound the
same, accents, case and spacing, first and last name swapped, day and month swapped,
and harder ones (two letters transposed, a consonant replaced) that a phonetic key can miss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctdc_harmonizer.samples.fake import dates_between

_SYLLABLES = np.array(
    [
        *("ka", "la", "mi", "na", "ro", "sa", "ti", "vo", "da", "ne", "li", "ma", "ra", "so"),
        *("ta", "ve", "do", "ni", "lu", "mo", "ri", "se", "tu", "va", "an", "el", "in", "or"),
        *("us", "ar", "en", "il", "on", "ur", "bo", "ge", "ha", "jo", "ko", "ly", "pe", "qui"),
        "zo",
    ]
)
TYPOS = [
    "none",
    "accent",
    "vowel",
    "double_consonant",
    "case_spacing",
    "name_order",
    "day_month",
    "vowel_and_day_month",
    "transposition",
    "consonant",
]


def _names(rng: np.random.Generator, n: int, parts: tuple[int, int]) -> pd.Series:
    count = rng.integers(parts[0], parts[1] + 1, n)
    pieces = rng.choice(_SYLLABLES, (n, parts[1]))
    text = pd.Series([""] * n)
    for i in range(parts[1]):  # a few syllables, not records
        text = text + np.where(i < count, pieces[:, i], "")
    return text.str.capitalize()


def people(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "first": _names(rng, n, (2, 3)),
            "last": _names(rng, n, (2, 4)),
            "born": dates_between(rng, "1960-01-01", "2010-12-31", n).dt.strftime("%Y-%m-%d"),
        }
    )


def _typo(frame: pd.DataFrame, kinds: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    out = frame.copy()
    last = out["last"]

    def where(kind: str) -> np.ndarray:
        return kinds == kind

    out.loc[where("accent"), "last"] = last[where("accent")].str.replace("e", "é", n=1)
    vowel = where("vowel") | where("vowel_and_day_month")
    out.loc[vowel, "last"] = last[vowel].str.replace(r"([a-z])[aeiou]", r"\1y", n=1, regex=True)
    double = where("double_consonant")
    out.loc[double, "last"] = last[double].str.replace(r"([lnrstkm])", r"\1\1", n=1, regex=True)
    spaced = where("case_spacing")
    out.loc[spaced, "first"] = "  " + out.loc[spaced, "first"].str.upper() + " "
    swap = where("name_order")
    out.loc[swap, ["first", "last"]] = out.loc[swap, ["last", "first"]].to_numpy()
    dates = where("day_month") | where("vowel_and_day_month")
    born = out.loc[dates, "born"]
    out.loc[dates, "born"] = (
        born.str.slice(0, 5) + born.str.slice(8, 10) + "-" + born.str.slice(5, 7)
    )
    trans = where("transposition")
    out.loc[trans, "last"] = last[trans].str.replace(r"^(.)(.)(.)", r"\1\3\2", regex=True)
    cons = where("consonant")
    out.loc[cons, "last"] = last[cons].str.replace(r"^(.+?)[kldmnrstv]", r"\1p", n=1, regex=True)
    return out


def twin_records(
    n: int, seed: int = 7, distractors: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(a, b): n people seen by both partners (b with typos), plus `distractors` (default n)
    other people seen by b only. Column `person` is the truth; `typo` the b-side error."""
    rng = np.random.default_rng(seed)
    extra = n if distractors is None else distractors
    everyone = people(rng, n + extra)
    everyone["person"] = np.arange(n + extra)
    a = everyone.iloc[:n].reset_index(drop=True)
    kinds = rng.choice(np.array(TYPOS), n)
    seen = _typo(everyone.iloc[:n].reset_index(drop=True), kinds, rng).assign(typo=kinds)
    others = everyone.iloc[n:].assign(typo="other person")
    b = pd.concat([seen, others], ignore_index=True)
    # A day/month swap gives an impossible date when the day is above 12: kept as typed
    # would not be a date at all, so those records keep the right date (no error).
    bad = pd.to_datetime(b["born"], errors="coerce", format="%Y-%m-%d").isna()
    b.loc[bad, "born"] = everyone.set_index("person").loc[b.loc[bad, "person"], "born"].to_numpy()
    return a, b.sample(frac=1, random_state=seed).reset_index(drop=True)
