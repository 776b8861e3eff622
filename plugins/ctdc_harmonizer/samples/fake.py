"""Fake identifier values for sample extracts: plausible, entirely invented.

Sample extracts must look like real ones (so the reader really has to drop
names, phones and notes) while containing no real person. Every value here is
made up from small word lists; the tests search outputs for them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FIRST_NAMES = np.array(
    [
        "Amara",
        "Bogdana",
        "Chidinma",
        "Dolores",
        "Esperanza",
        "Farida",
        "Galina",
        "Hoa",
        "Ifeoma",
        "Jovana",
        "Kateryna",
        "Leticia",
        "Mariam",
        "Nkechi",
        "Oksana",
        "Perla",
        "Quyen",
        "Rosalind",
        "Svetlana",
        "Thanh",
        "Ulyana",
        "Valentina",
        "Wanjiru",
        "Ximena",
        "Yesenia",
        "Zainab",
        "Arturo",
        "Bilal",
        "Cornelius",
        "Dmytro",
        "Emeka",
        "Florin",
        "Goran",
        "Hamidou",
        "Ismail",
        "Jaroslav",
        "Kwabena",
        "Lucian",
        "Mihail",
        "Nnamdi",
        "Octavio",
        "Pavlo",
        "Radu",
        "Sokha",
    ]
)
LAST_NAMES = np.array(
    [
        "Abernathy-Quist",
        "Balogun",
        "Castellanos",
        "Dragomirova",
        "Eze",
        "Fonseca",
        "Gheorghiu",
        "Hakimova",
        "Ilunga",
        "Jankovic",
        "Kovalenko",
        "Lindqvist",
        "Mbeki",
        "Nguyen-Tran",
        "Okonkwo",
        "Petrescu",
        "Quintanilla",
        "Rasulova",
        "Sandoval",
        "Tkachenko",
        "Umarov",
        "Vasquez-Orozco",
        "Wieczorek",
        "Yilmazer",
        "Zhakupova",
    ]
)
STREETS = np.array(
    [
        "Acacia Lane",
        "Boulevard of Lindens",
        "Cobble Row",
        "Dockside Terrace",
        "Elm Crescent",
        "Foundry Street",
        "Granary Court",
        "Harbour View Road",
        "Ironwood Close",
        "Juniper Walk",
    ]
)
CITIES = np.array(
    ["Northhaven", "Riverbend", "Eastmoor", "Saltcliff", "Westmarch", "Greyford", "Ashbury"]
)
NOTE_OPENERS = np.array(
    [
        "Client disclosed that",
        "Referred after",
        "Caseworker observed that",
        "Survivor reported that",
        "Follow-up call noted that",
        "Intake interview recorded that",
    ]
)
NOTE_BODIES = np.array(
    [
        "her passport was kept by the agency in the capital",
        "he worked nights at a car wash near the port",
        "the recruiter was a cousin from the home village",
        "wages were withheld for seven months",
        "she was moved between three apartments",
        "a neighbour alerted the hotline",
        "documents were confiscated on arrival",
        "the employer threatened to call immigration",
    ]
)


def names(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.choice(FIRST_NAMES, n), rng.choice(LAST_NAMES, n)


def phones(rng: np.random.Generator, n: int) -> np.ndarray:
    digits = rng.integers(1_000_000, 9_999_999, n)
    prefix = rng.choice(np.array(["+381 64", "+84 91", "+1 312", "+380 67", "+234 803"]), n)
    return np.char.add(np.char.add(prefix, " "), digits.astype(str))


def emails(rng: np.random.Generator, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    number = rng.integers(10, 99, len(first)).astype(str)
    local = np.char.add(
        np.char.add(np.char.lower(first.astype(str)), "."), np.char.lower(last.astype(str))
    )
    return np.char.add(np.char.add(local, number), "@example.org")


def streets(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.char.add(
        np.char.add(rng.integers(1, 400, n).astype(str), " "), rng.choice(STREETS, n)
    )


def notes(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.char.add(np.char.add(rng.choice(NOTE_OPENERS, n), " "), rng.choice(NOTE_BODIES, n))


def dates_between(rng: np.random.Generator, start: str, end: str, n: int) -> pd.Series:
    """n random calendar dates in [start, end]."""
    lo, hi = (
        pd.Timestamp(start).value // 86_400_000_000_000,
        pd.Timestamp(end).value // 86_400_000_000_000,
    )
    days = rng.integers(lo, hi + 1, n)
    return pd.Series(pd.to_datetime(days, unit="D"))


def multi_select(
    rng: np.random.Generator,
    choices: list[str],
    n: int,
    max_k: int,
    p_empty: float,
    seps: list[str],
) -> np.ndarray:
    """n multi-select cells: 0..max_k distinct choices joined by a separator."""
    k = rng.integers(1, max_k + 1, n)
    k[rng.random(n) < p_empty] = 0
    order = np.argsort(rng.random((n, len(choices))), axis=1)[:, :max_k]
    options = np.array(choices, dtype=object)
    sep = pd.Series(rng.choice(np.array(seps), n))
    cells = pd.Series("", index=range(n), dtype=object)
    for j in range(max_k):  # a column of choices at a time, not a row at a time
        pick = pd.Series(options[order[:, j]])
        joined = cells.where(cells == "", cells + sep) + pick
        cells = joined.where(j < k, cells)
    return cells.to_numpy()
