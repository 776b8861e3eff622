"""Cross-partner duplicates found without keeping identifiers: keyed blocking variants.

In the reading step, while names and the date of birth are still there, each record gets
four keyed hashes (HMAC-SHA-256 with the pseudonym key), the product of two name forms
and two date forms:

- name: the normalised name tokens (accents, case, spaces and hyphens folded; tokens
  sorted, so first and last name may be swapped) or their Soundex codes (spelling
  variants that sound alike: Mohammed/Mohamed, Katharina/Katarina, Nguyen/Ngyuen);
- date of birth: as recorded, or with day and month swapped (the commonest date typo
  between a dd/mm and an mm/dd system; only when both are valid and differ).

Two records of different partners are the same person when they share any of these
keys; a person is a connected group of records. Only the hashes leave the reader;
they are stored with each staged record (restricted, docs/privacy.md section 5) so that
overlaps are counted over every partner's current records; never released.

Why exact keyed hashes rather than a Bloom-filter encoding (clkhash/anonlink): the keys
are matched by equality (a join, linear in the records), need no similarity threshold,
and do not leak bigram frequencies the way unsalted CLKs can. The price is recall on
typos that change the sound of a name (a first letter changed: Catarina/Katarina on the
first token is still caught by Soundex only when the letters sound alike in its code);
tests/privacy/test_privacy.py measures precision and recall on generated pairs with such typos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctdc_harmonizer.ingest.withdrawals import KEY_SEPARATOR, normalized_date, normalized_text
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.privacy.pseudonyms import keyed_hash64
from ctdc_harmonizer.text import per_distinct

LINK_COLUMNS = ["_link_exact", "_link_exact_swapped", "_link_sound", "_link_sound_swapped"]
REPORT = "report"
MERGE = "merge"
POLICIES = (REPORT, MERGE)
SMALL_CELL = 5  # overlap cells below this are hidden in the shareable matrix

_SOUNDEX = str.maketrans("bfpvcgjkqsxzdtlmnr", "111122222222334556")


def soundex(token: str) -> str:
    """American Soundex of one ASCII-folded token (letter + 3 digits)."""
    letters = [c for c in token if "a" <= c <= "z"]
    if not letters:
        return ""
    codes = []
    previous = letters[0].translate(_SOUNDEX)
    for c in letters[1:]:
        code = c.translate(_SOUNDEX)
        if code.isdigit() and code != previous:
            codes.append(code)
        if c not in "hw":  # h and w do not separate equal codes; vowels do
            previous = code
    return (letters[0] + "".join(codes) + "000")[:4]


def _tokens(names: pd.Series) -> pd.Series:
    """Name tokens sorted and space-joined: 'Núñez-Pérez, Zoë' -> 'nunez perez zoe'."""

    def sort(distinct: pd.Series) -> pd.Series:
        return (
            distinct.str.replace(r"[^a-z ]", " ", regex=True)
            .str.split()
            .map(lambda tokens: " ".join(sorted(tokens)) or None)
        )

    return per_distinct(names, sort)


def _sounds(tokens: pd.Series) -> pd.Series:
    """Soundex of each token, sorted: each distinct token is coded once (names repeat)."""

    def code(distinct: pd.Series) -> pd.Series:
        split = distinct.str.split()
        words = pd.unique(split.explode().dropna())
        codes = dict(zip(words, map(soundex, words), strict=True))
        return split.map(lambda ts: " ".join(sorted(codes[t] for t in ts)))

    return per_distinct(tokens, code)


def _swapped(iso: pd.Series) -> pd.Series:
    """YYYY-DD-MM of a YYYY-MM-DD date, when it is a valid, different date (each distinct
    date once: dates of birth repeat)."""

    def swap(dates: pd.Series) -> pd.Series:
        swapped = dates.str.slice(0, 5) + dates.str.slice(8, 10) + "-" + dates.str.slice(5, 7)
        valid = pd.to_datetime(swapped, errors="coerce", format="%Y-%m-%d").notna()
        return swapped.where(valid & (swapped != dates))

    return per_distinct(iso.astype("string"), swap)


@dataclass(frozen=True)
class LinkageSpec:
    names: tuple[str, ...]
    birthdate: str


def linkage_spec(config: PartnerConfig) -> LinkageSpec | None:
    if not config.linkage_names or not config.linkage_birthdate:
        return None
    return LinkageSpec(config.linkage_names, config.linkage_birthdate)


def linkage_columns(config: PartnerConfig) -> list[str]:
    spec = linkage_spec(config)
    return [*spec.names, spec.birthdate] if spec else []


def linkage_keys(config: PartnerConfig, frame: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """The four keyed linkage hashes per record (missing without a name or a birthdate)."""
    spec = linkage_spec(config)
    if spec is None:
        return pd.DataFrame(
            {c: pd.Series(pd.NA, index=frame.index, dtype="UInt64") for c in LINK_COLUMNS}
        )
    folded = [normalized_text(frame[name]).fillna("") for name in spec.names]
    joined = folded[0]
    for part in folded[1:]:
        joined = joined + " " + part
    tokens = _tokens(joined)
    sounds = _sounds(tokens)
    born = normalized_date(frame[spec.birthdate], config.field(spec.birthdate).format)
    swapped = _swapped(born)
    sep = KEY_SEPARATOR
    return pd.DataFrame(
        {
            "_link_exact": keyed_hash64(tokens + sep + born, key, "link-name"),
            "_link_exact_swapped": keyed_hash64(tokens + sep + swapped, key, "link-name"),
            "_link_sound": keyed_hash64(sounds + sep + born, key, "link-sound"),
            "_link_sound_swapped": keyed_hash64(sounds + sep + swapped, key, "link-sound"),
        },
        index=frame.index,
    )


def clusters(links: pd.DataFrame) -> pd.Series:
    """A person number per record: records sharing any link key (transitively) get the
    same number. Minimum-label propagation over integer key codes with numpy, plus pointer
    jumping; a handful of rounds (the longest chain of shared keys) suffices."""
    # The four key columns end to end (a key found in two columns is the same key), as
    # integers: factorised without a Python object per key.
    stacked = [links[column].astype("UInt64") for column in LINK_COLUMNS]
    present = np.concatenate([~column.isna().to_numpy() for column in stacked])
    keys = np.concatenate([column.to_numpy(dtype=np.uint64, na_value=0) for column in stacked])
    rows = np.tile(np.arange(len(links), dtype=np.int64), len(LINK_COLUMNS))[present]
    codes, uniques = pd.factorize(keys[present])
    values = np.arange(len(links), dtype=np.int64)
    while True:
        per_key = np.full(len(uniques), len(links), dtype=np.int64)
        np.minimum.at(per_key, codes, values[rows])
        updated = values.copy()
        np.minimum.at(updated, rows, per_key[codes])
        updated = updated[updated]  # pointer jumping: follow a label to its own label
        if np.array_equal(updated, values):
            break
        values = updated
    return pd.Series(values, index=links.index)


def overlaps(
    combined: pd.DataFrame, partner_column: str, policy: str, completeness: pd.Series
) -> tuple[pd.Series, dict[str, int]]:
    """(rows merged away under `policy`, persons found at both partners per pair 'a|b').

    A person is counted once per pair of partners that both hold a record of them. Under
    'merge' one record per person found at two or more partners stays: the most complete
    (most non-null codebook values), ties broken by partner name then position."""
    person = clusters(combined)
    partners = combined[partner_column].astype(str)
    held = pd.DataFrame({"person": person, "partner": partners}).drop_duplicates()
    shared = held[held["person"].duplicated(keep=False)]  # persons at two or more partners
    # Each person once per pair of partners holding them (a < b), counted without a loop.
    both = shared.merge(shared, on="person", suffixes=("_a", "_b"))
    both = both[both["partner_a"] < both["partner_b"]]
    counted = (both["partner_a"] + "|" + both["partner_b"]).value_counts()
    pairs = {str(pair): int(n) for pair, n in counted.items()}
    merged = pd.Series(False, index=combined.index)
    if policy == MERGE and len(shared):
        linked = person.isin(shared["person"])
        order = pd.DataFrame(
            {
                "person": person,
                "score": -completeness,
                "partner": partners,
                "pos": range(len(combined)),
            }
        )[linked].sort_values(["person", "score", "partner", "pos"])
        merged[order.index[order.duplicated("person")]] = True
    return merged, dict(sorted(pairs.items()))


def overlap_matrix(pairs: dict[str, int], partners: list[str]) -> dict:
    """The shareable overlap report: counts only, cells below SMALL_CELL hidden (null)."""
    cells = {}
    for i, a in enumerate(sorted(partners)):
        for b in sorted(partners)[i + 1 :]:
            n = pairs.get(f"{a}|{b}", 0)
            cells[f"{a}|{b}"] = n if n == 0 or n >= SMALL_CELL else None
    return {
        "what": "persons found in the records of both partners (keyed-hash linkage)",
        "small_cells_hidden_below": SMALL_CELL,
        "pairs": cells,
    }
