"""What a partner's mapping folder says, once loaded and checked: plain typed values.

`load_partner` (mapping/partner.py) builds a `PartnerConfig` from the folder's files; every
other stage reads the partner only through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.harmonize.unmapped import DEFAULT_MIN_ROWS

PARTNER_FILE = "partner.yaml"
FIELDS_FILE = "fields.csv"
VALUES_FILE = "values.csv"
COUNTRIES_FILE = "countries.csv"
AGE_RANGES_FILE = "age_ranges.csv"

# Roles a source field can play. Identifier and free-text fields never leave the reader.
ROLES = {
    "identifier": "direct identifier (name, phone, e-mail, address, case-worker): dropped on read",
    "free_text": "free-text note: dropped on read",
    "record_id": "the partner's case id: used for withdrawals and duplicates, then dropped",
    "date": "a date: turned into a year (or an age) on read, never kept as a date",
    "coded": "a coded value (picklist, flag): mapped through values.csv",
    "country": "a country name or ISO code: normalized to ISO 3166-1 alpha-3",
    "number": "a number (age in years, months)",
    "age_range": "an age range label: mapped through age_ranges.csv",
    "ignored": "known and not used: dropped on read",
}
KEPT_ROLES = {"date", "coded", "country", "number", "age_range"}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    role: str
    delimiter: str = ""
    format: str = ""
    required: bool = True

    @property
    def multi(self) -> bool:
        return bool(self.delimiter)


@dataclass(frozen=True)
class DeriveSource:
    method: str
    field: str
    reference: str = ""  # for birthdate: the date the age is taken at


@dataclass(frozen=True)
class InclusionRule:
    rule: str
    field: str
    exclude: tuple[str, ...]


@dataclass(frozen=True)
class ReaderSpec:
    format: str
    files: tuple[str, ...]
    encoding: str = "utf-8"
    sheet: str | None = None  # by name; None: the single visible sheet
    header_row: int = 1
    data_start_row: int = 2
    csv_delimiter: str = ","


@dataclass(frozen=True)
class DeliverySpec:
    """How a partner delivers over time (partner.yaml `delivery`)."""

    mode: str = "full"  # full | incremental (store/changes.py)
    status: str = "active"  # active | discontinued
    max_releases_without_delivery: int = 2
    max_retired_share: float = 0.2


@dataclass(frozen=True)
class PartnerConfig:
    code: str
    name: str
    folder: Path
    reader: ReaderSpec
    fields: tuple[FieldSpec, ...]
    values: pd.DataFrame  # field, key, variable, value, match, note, line
    countries: pd.DataFrame  # key, iso3, line
    age_ranges: pd.DataFrame  # key, min_age, max_age, line
    derive: dict[str, tuple[DeriveSource, ...]]
    inclusion: tuple[InclusionRule, ...] = ()
    record_id: str = ""
    # Identifying fields a withdrawal is matched on when the partner has no record id.
    withdrawal_match: tuple[str, ...] = ()
    # Name fields and date-of-birth field of the cross-partner linkage keys (privacy/linkage).
    linkage_names: tuple[str, ...] = ()
    linkage_birthdate: str = ""
    null_values: tuple[str, ...] = ("",)
    year_min: int | None = None
    year_max: int | None = None
    coverage_threshold: float = 0.0
    unmapped_min_rows: int = DEFAULT_MIN_ROWS
    datasource: str = ""
    mapping_hash: str = ""
    # What a stored record's harmonized version depends on (tables, derivations, inclusion,
    # null values, year range, coverage): when it changes, the partner's history is
    # harmonized again. Not the delivery or reader settings.
    harmonization_hash: str = ""
    delivery: DeliverySpec = DeliverySpec()

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    def fields_with_role(self, *roles: str) -> list[FieldSpec]:
        return [f for f in self.fields if f.role in roles]

    @property
    def kept_fields(self) -> list[str]:
        return [f.name for f in self.fields if f.role in KEPT_ROLES]

    @cached_property
    def known_keys(self) -> dict[str, frozenset[str]]:
        """Per coded or country field, the (normalised) source values the mapping knows:
        built once per partner, not once per delivered workbook."""
        known = {
            name: set(group["key"]) for name, group in self.values.groupby("field", sort=False)
        }
        countries = set(self.countries["key"])
        for spec in self.fields_with_role("country"):
            known.setdefault(spec.name, set()).update(countries)
        return {name: frozenset(keys) for name, keys in known.items()}

    @property
    def coded_fields(self) -> list[str]:
        """Fields whose values are categories (safe to list in reports)."""
        return [f.name for f in self.fields if f.role in {"coded", "country", "age_range"}]
