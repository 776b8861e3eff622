"""Derivation methods: how a codebook variable is computed from a partner's source fields.

A partner's `partner.yaml` lists, under `derive:`, for each derived variable one or more
sources in order of preference (`{method: ..., field: ..., reference: ...}`); the first source
giving a usable value wins. This module is the one place a method is declared: its name, the
variables it may derive, the extra keys it needs and its implementation. partner.yaml's
validation (mapping/partner_yaml.py), the reader (birthdates turned into ages) and the mapper
read this registry; adding a method is one decorated function here (docs/architecture.md).

Every implementation is vectorised over the whole column (per distinct value where a lookup is
involved) and returns a `Candidate`: the derived values plus, for year-like methods, which rows
held a value that could not be read. Unknown values and value issues are recorded in the
`Derivation` they receive, never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ctdc_harmonizer.columns import INVALID
from ctdc_harmonizer.harmonize.countries import country_table
from ctdc_harmonizer.text import normalize_series, per_distinct

if TYPE_CHECKING:
    from ctdc_harmonizer.codebook import Codebook
    from ctdc_harmonizer.mapping.spec import DeriveSource, PartnerConfig

MAX_AGE = 120  # an age above this is a typo or a missing-value code (999), not a person
UNKNOWN_COLUMNS = ["field", "token", "gid", "weight"]


@dataclass
class Derivation:
    """What a method may read (the staged frame, the partner, the codebook) and where it
    records counted problems: `issues` (partner, field, issue, count) and `unknown` (values
    the mapping does not know, one entry per row or distinct cell)."""

    frame: pd.DataFrame
    config: PartnerConfig
    codebook: Codebook
    issues: list[tuple[str, str, str, int]] = field(default_factory=list)
    unknown: list[pd.DataFrame] = field(default_factory=list)
    # Per source field, the rows whose value the mapping could not use (unknown to it, or
    # unreadable): the store keeps those cells as missing (store/payload.py).
    unusable: dict[str, pd.Series] = field(default_factory=dict)

    def mark_unusable(self, source_field: str, mask: pd.Series) -> None:
        mask = mask.fillna(False).astype(bool)
        previous = self.unusable.get(source_field)
        self.unusable[source_field] = mask if previous is None else previous | mask

    def add_issue(
        self, source_field: str, issue: str, mask: pd.Series, unusable: bool = True
    ) -> None:
        """Count a problem; `unusable`: the value itself could not be used (not merely, say,
        an age range spanning two bins)."""
        count = int(mask.fillna(False).sum())
        if count:
            self.issues.append((self.config.code, source_field, issue, count))
        if unusable:
            self.mark_unusable(source_field, mask)

    def add_unknown(self, values: pd.Series, unknown: pd.Series, source_field: str) -> None:
        """Values of a derived field the mapping does not know, one entry per row. The INVALID
        marker (a cell that could not be read exactly) is a value issue, not an unknown."""
        unreadable = (values == INVALID).fillna(False) & unknown.fillna(False)
        self.add_issue(source_field, "unreadable_value", unreadable)
        unknown = unknown.fillna(False) & ~unreadable
        self.mark_unusable(source_field, unknown)
        picked = values[unknown.fillna(False)]
        self.unknown.append(
            pd.DataFrame(
                {
                    "field": source_field,
                    "token": picked.to_numpy(),
                    "gid": -1 - picked.index.to_numpy(),
                    "weight": 1,
                }
            )
        )


@dataclass(frozen=True)
class Candidate:
    """One source's derived values (codebook spelling, or a number for a year) and the rows
    whose value was present but unreadable (year methods only; None otherwise)."""

    values: pd.Series
    invalid: pd.Series | None = None


Implementation = Callable[[Derivation, "DeriveSource", str], Candidate]


@dataclass(frozen=True)
class Method:
    name: str
    variables: tuple[str, ...]  # the codebook variables it may derive
    implementation: Implementation
    # partner.yaml key `reference`: a second field the method needs, and what it is
    reference: str = ""
    # the reader turns the source field (a date) into whole years at `reference` on reading,
    # so no date of birth ever leaves the reader (ingest/deidentify.py)
    age_at_read: bool = False


REGISTRY: dict[str, Method] = {}


def method(
    name: str, variables: tuple[str, ...], reference: str = "", age_at_read: bool = False
) -> Callable[[Implementation], Implementation]:
    """Register a derivation method (the decorated function is its implementation)."""

    def register(implementation: Implementation) -> Implementation:
        if name in REGISTRY:
            raise ValueError(f"derivation method {name!r} is declared twice")
        REGISTRY[name] = Method(name, variables, implementation, reference, age_at_read)
        return implementation

    return register


def methods_for(variable: str) -> list[Method]:
    """The methods that may derive `variable`, in declaration order."""
    return [m for m in REGISTRY.values() if variable in m.variables]


def derivable_variables(codebook: Codebook) -> list[str]:
    """Variables at least one method derives, in codebook order."""
    targets = {v for m in REGISTRY.values() for v in m.variables}
    return [name for name in codebook.columns if name in targets]


def birthdate_fields(config: PartnerConfig) -> set[str]:
    """Source fields the reader turns into ages (their dates never leave the reader)."""
    return {
        source.field
        for sources in config.derive.values()
        for source in sources
        if REGISTRY[source.method].age_at_read
    }


def derive(variable: str, sources: tuple[DeriveSource, ...], work: Derivation) -> list[Candidate]:
    """Every source's candidate for `variable`, in the configured order of preference."""
    return [REGISTRY[s.method].implementation(work, s, variable) for s in sources]


# --- shared building blocks ------------------------------------------------------------------


def _distinct_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    parsed = pd.to_numeric(values.where(values != INVALID), errors="coerce")
    whole = parsed.notna() & (parsed >= 0) & (parsed == np.floor(parsed))
    invalid = values.notna() & ~whole
    return parsed.where(whole).astype("Float64"), invalid


def numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(numbers, invalid mask): non-negative whole numbers; present-but-unusable flagged.
    Each distinct value is parsed once (years and ages repeat: parsing every row's text was
    ~50 ms per 250k-row column), then spread back; a missing value is no number, and valid."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    parsed, invalid = _distinct_numbers(pd.Series(uniques))
    spread = parsed.array.take(codes, allow_fill=True)
    flags = np.append(invalid.to_numpy(dtype=bool), False)[codes]  # -1 (missing): False
    # The mask in the dtype the whole column gives (nullable text: pandas' boolean).
    return pd.Series(spread, index=values.index), pd.Series(
        flags, index=values.index, dtype=invalid.dtype
    )


def bin_numbers(values: pd.Series, bins: pd.DataFrame) -> pd.Series:
    """Numbers into the codebook's bins (value, min, max; both ends included), NA where no
    bin holds the number."""
    intervals = pd.IntervalIndex.from_arrays(
        bins["min"].astype(float), bins["max"].astype(float), closed="both"
    )
    position = intervals.get_indexer(values.astype("Float64").to_numpy(float, na_value=np.nan))
    labels = np.append(bins["value"].to_numpy(dtype=object), None)  # -1 picks the None
    return pd.Series(labels[position], index=values.index, dtype="string")


def _ages(work: Derivation, source: DeriveSource, variable: str) -> Candidate:
    ages, invalid = numbers(work.frame[source.field])
    implausible = (ages > MAX_AGE).fillna(False)  # 999 or 150: not a person in the 48+ bin
    work.add_issue(source.field, "invalid_age", invalid | implausible)
    return Candidate(bin_numbers(ages.where(~implausible), work.codebook.bins(variable)))


def _year(work: Derivation, source: DeriveSource, variable: str) -> Candidate:
    years, invalid = numbers(work.frame[source.field])
    return Candidate(years.astype("Int64"), invalid)


# --- the methods, in the order partner.yaml's messages list them -------------------------------

# The reader keeps only the year of a date, so `date` and `year` read the same column type.
method("date", ("yearOfRegistration",))(_year)
method("year", ("yearOfRegistration",))(_year)
method("age_years", ("ageBroad",))(_ages)
# Whole years from the date of birth to `reference`, computed by the reader.
method("birthdate", ("ageBroad",), reference="the date the age is taken at", age_at_read=True)(
    _ages
)


@method("age_range", ("ageBroad",))
def _age_range(work: Derivation, source: DeriveSource, variable: str) -> Candidate:
    """A range from age_ranges.csv gives a bin only when it lies inside one bin; otherwise
    NULL, counted as `age_range_spans_bins`."""
    values = work.frame[source.field]
    bins = work.codebook.bins(variable)
    keys = per_distinct(values, normalize_series)
    table = work.config.age_ranges.set_index("key")
    low = keys.map(table["min_age"]).astype("Float64")
    high = keys.map(table["max_age"]).astype("Float64").fillna(np.inf)
    known = keys.isin(table.index)
    work.add_unknown(values, values.notna() & ~known, source.field)
    low_bin, high_bin = bin_numbers(low, bins), bin_numbers(high, bins)
    same = known & low_bin.notna() & (low_bin == high_bin).fillna(False)
    work.add_issue(source.field, "age_range_spans_bins", known & ~same, unusable=False)
    return Candidate(low_bin.where(same))


@method("codebook", ("ageBroad", "traffickMonths"))
def _codebook_spelling(work: Derivation, source: DeriveSource, variable: str) -> Candidate:
    """The codebook's own values or a recorded variant ('18--20' in earlier CTDC releases)."""
    values = work.frame[source.field]
    spellings = work.codebook.spelling_map(variable)
    mapped = per_distinct(values, lambda v: normalize_series(v).map(spellings))
    work.add_unknown(values, values.notna() & mapped.isna(), source.field)
    return Candidate(mapped)


@method("months", ("traffickMonths",))
def _months(work: Derivation, source: DeriveSource, variable: str) -> Candidate:
    months, invalid = numbers(work.frame[source.field])
    work.add_issue(source.field, "invalid_months", invalid)
    return Candidate(bin_numbers(months, work.codebook.bins(variable)))


@method("country", ("citizenship", "CountryOfExploitation"))
def _country(work: Derivation, source: DeriveSource, variable: str) -> Candidate:
    """ISO alpha-3 through countries.csv, the codebook's rules and ISO 3166; a multi-valued
    cell (several citizenships) counts its first value."""
    spec = work.config.field(source.field)
    values = work.frame[source.field]
    if spec.multi:
        first = values.str.split(spec.delimiter, regex=False).str[0].str.strip()
        values = first.replace("", pd.NA)
    config, codebook = work.config, work.codebook
    iso3 = per_distinct(
        values, lambda v: (k := normalize_series(v)).map(country_table(k, config, codebook))
    )
    work.add_unknown(values, values.notna() & iso3.isna(), source.field)
    return Candidate(iso3.replace("", pd.NA))  # '' is a spelling the partner uses for unknown
