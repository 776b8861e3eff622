"""Map a de-identified partner frame onto the 27 codebook variables, vectorised.

Input: the staged frame from reader.deidentify (strings; dates already years,
birthdates already ages). Output: a MappingResult holding the harmonized rows,
the outcome of every row (harmonized, excluded, rejected), the values the
mapping did not know, and counted value issues. No loop here runs per record:
per-value work (countries) runs over the distinct values only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
import pycountry

from ctdc_harmonizer.codebook import BINARY_TRUE, Codebook
from ctdc_harmonizer.config import DeriveSource, PartnerConfig
from ctdc_harmonizer.reader import FILE, INVALID, MAX_AGE, REJECT, REJECT_COLUMN, ROW
from ctdc_harmonizer.text import normalize_series, normalize_token, per_distinct

HARMONIZED = "harmonized"
EXCLUDED = "excluded"
REJECTED = "rejected"
OUTCOME_COLUMNS = [FILE, ROW, "outcome", "reason", "column"]
UNMAPPED_COLUMNS = ["partner", "field", "source_value", "count"]
ISSUE_COLUMNS = ["partner", "field", "issue", "count"]
REDACTED = "<redacted: looks like contact data>"
# An e-mail or a phone number typed into a picklist column: never reported as is.
CONTACT_PATTERN = r"@|\d{5,}"


@dataclass
class MappingResult:
    harmonized: pd.DataFrame  # 27 codebook columns + _file
    outcomes: pd.DataFrame  # one row per staged row: _file, _row, outcome, reason, column
    unmapped: pd.DataFrame  # partner, field, source_value, count
    issues: pd.DataFrame  # partner, field, issue, count
    unknown_rows: pd.DataFrame  # field, rows (rows carrying >= 1 unknown value), for the gate


def _first_valid(candidates: list[pd.Series], index: pd.Index, dtype: str = "string") -> pd.Series:
    """Coalesce: the first non-null candidate, in the configured order of preference."""
    result = pd.Series(pd.NA, index=index, dtype=dtype)
    for candidate in candidates:
        result = result.fillna(candidate.astype(dtype))
    return result


def _bin(values: pd.Series, bins: pd.DataFrame) -> pd.Series:
    """Numbers into codebook bins (value, min, max), NA where no bin holds the number."""
    mins = bins["min"].to_numpy(dtype=float)
    numbers = values.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    position = np.searchsorted(mins, numbers, side="right") - 1
    safe = np.clip(position, 0, len(bins) - 1)
    inside = (position >= 0) & (numbers <= bins["max"].to_numpy(dtype=float)[safe])
    labels = bins["value"].to_numpy(dtype=object)[safe]
    return pd.Series(np.where(inside, labels, None), index=values.index, dtype="string")


def _numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(numbers, invalid mask): non-negative whole numbers; present-but-unusable flagged."""
    numbers = pd.to_numeric(values.where(values != INVALID), errors="coerce")
    whole = numbers.notna() & (numbers >= 0) & (numbers == np.floor(numbers))
    invalid = values.notna() & ~whole
    return numbers.where(whole).astype("Float64"), invalid


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


def split_multi(values: pd.Series, delimiter: str, mapped: pd.DataFrame, field: str) -> pd.Series:
    """Split multi-select cells, keeping intact the known values that contain the delimiter
    (two ISIC section labels in the HTCDS picklist contain ';')."""
    protected = [k for k in mapped.loc[mapped["field"] == field, "key"].unique() if delimiter in k]
    placeholders = {f"\x00{i}\x00": key for i, key in enumerate(protected)}
    for placeholder, key in placeholders.items():
        parts = (r"\s+".join(map(re.escape, part.split())) for part in key.split(delimiter))
        pattern = (r"\s*" + re.escape(delimiter) + r"\s*").join(parts)
        values = values.str.replace(f"(?i){pattern}", placeholder, regex=True)
    tokens = values.str.split(delimiter, regex=False).explode()
    for placeholder, key in placeholders.items():
        tokens = tokens.str.replace(placeholder, key, regex=False)
    return tokens


def _tokens(
    frame: pd.DataFrame, config: PartnerConfig, fields: list[str]
) -> tuple[pd.DataFrame, dict]:
    """Long table of the tokens of every DISTINCT cell value per field.

    Returns (long, codes): long has field, uid (the distinct cell), pos (token position),
    token, key, order (field priority), weight (rows holding that cell); codes maps each
    field to the row -> uid array (-1 for an empty cell).
    """
    parts, codes_by_field = [], {}
    for order, name in enumerate(fields):
        spec = config.field(name)
        codes, uniques = pd.factorize(frame[name], use_na_sentinel=True)
        codes_by_field[name] = codes
        distinct = pd.Series(uniques, dtype="string")
        if spec.multi:
            tokens = split_multi(distinct, spec.delimiter, config.values, name)
        else:
            tokens = distinct
        tokens = tokens.astype("string").str.strip()
        uid = tokens.index.to_numpy()
        pos = tokens.groupby(level=0).cumcount().to_numpy()
        keep = (tokens.notna() & (tokens != "")).to_numpy()
        weights = np.bincount(codes[codes >= 0], minlength=len(uniques))
        parts.append(
            pd.DataFrame(
                {
                    "field": name,
                    "uid": uid[keep],
                    "pos": pos[keep],
                    "token": tokens.to_numpy()[keep],
                    "order": order,
                    "weight": weights[uid[keep]],
                }
            )
        )
    columns = ["field", "uid", "pos", "token", "order", "weight", "key"]
    if not parts:
        return pd.DataFrame(columns=columns), codes_by_field
    long = pd.concat(parts, ignore_index=True)
    long["key"] = normalize_series(long["token"])
    return long, codes_by_field


def _spread_hits(hits: pd.DataFrame, codes_by_field: dict, index: pd.Index) -> dict[str, pd.Series]:
    """Per-distinct-cell hits back onto rows; for each variable the earliest field wins."""
    columns: dict[str, pd.Series] = {}
    hits = hits.sort_values(["order", "uid", "pos"], kind="stable").drop_duplicates(
        ["field", "uid", "variable"]
    )
    for (_, field, variable), group in hits.groupby(["order", "field", "variable"], sort=True):
        codes = codes_by_field[field]
        per_uid = np.full(codes.max() + 2 if len(codes) else 1, None, dtype=object)
        per_uid[group["uid"].to_numpy()] = group["value"].to_numpy(dtype=object)
        values = pd.Series(per_uid[codes], index=index, dtype="string")  # -1 -> trailing None
        columns[variable] = columns[variable].fillna(values) if variable in columns else values
    return columns


def _count_unknown(unknown: pd.DataFrame, partner: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """unknown: field, token, gid (a row or a distinct cell), weight (rows it stands for)."""
    if unknown.empty:
        return pd.DataFrame(columns=UNMAPPED_COLUMNS), pd.DataFrame(columns=["field", "rows"])
    per_cell = unknown.drop_duplicates(["field", "gid", "token"])
    unmapped = per_cell.groupby(["field", "token"])["weight"].sum().reset_index(name="count")
    unmapped = unmapped.rename(columns={"token": "source_value"})
    unmapped.insert(0, "partner", partner)
    looks_like_contact = unmapped["source_value"].str.contains(CONTACT_PATTERN, regex=True)
    unmapped.loc[looks_like_contact, "source_value"] = REDACTED
    unmapped = unmapped.groupby(["partner", "field", "source_value"], as_index=False)["count"].sum()
    rows = (
        unknown.drop_duplicates(["field", "gid"])
        .groupby("field")["weight"]
        .sum()
        .reset_index(name="rows")
    )
    return unmapped[UNMAPPED_COLUMNS], rows


def _unknown_rows(values: pd.Series, unknown: pd.Series, field: str) -> pd.DataFrame:
    """Unknown values of a derived field, one entry per row (gid = the row)."""
    picked = values[unknown.fillna(False)]
    return pd.DataFrame(
        {
            "field": field,
            "token": picked.to_numpy(),
            "gid": -1 - picked.index.to_numpy(),
            "weight": 1,
        }
    )


class _Issues:
    """Collects counted value issues (present but unusable values) per field."""

    def __init__(self, partner: str):
        self.partner = partner
        self.rows: list[tuple[str, str, str, int]] = []

    def add(self, field: str, issue: str, mask: pd.Series) -> None:
        count = int(mask.fillna(False).sum())
        if count:
            self.rows.append((self.partner, field, issue, count))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=ISSUE_COLUMNS)


def _apply_reader_rejects(frame: pd.DataFrame, outcome: pd.DataFrame) -> None:
    """Rows the reader could not read whole (e.g. wrong_type) are rejected with its reason."""
    if REJECT not in frame.columns:
        return
    hit = frame[REJECT].notna().to_numpy()
    if hit.any():
        outcome.loc[hit, "outcome"] = REJECTED
        outcome.loc[hit, "reason"] = frame.loc[hit, REJECT].astype(str).to_numpy()
        outcome.loc[hit, "column"] = frame.loc[hit, REJECT_COLUMN].fillna("").astype(str).to_numpy()


def _apply_inclusion(frame: pd.DataFrame, config: PartnerConfig, outcome: pd.DataFrame) -> None:
    for rule in config.inclusion:
        excluded_keys = {normalize_token(v) for v in rule.exclude}
        keys = per_distinct(frame[rule.field], normalize_series)
        hit = keys.isin(excluded_keys).fillna(False)
        hit &= outcome["outcome"] == HARMONIZED
        outcome.loc[hit, ["outcome", "reason", "column"]] = [EXCLUDED, rule.rule, rule.field]


def _registration_year(
    frame: pd.DataFrame, config: PartnerConfig, outcome: pd.DataFrame, year_min: int, year_max: int
) -> pd.Series:
    """yearOfRegistration from its sources; rows without a usable year are rejected."""
    sources = config.derive["yearOfRegistration"]
    candidates, invalid_any = [], pd.Series(False, index=frame.index)
    for source in sources:
        numbers, invalid = _numbers(frame[source.field])
        candidates.append(numbers)
        invalid_any |= invalid
    year = _first_valid(candidates, frame.index, dtype="Int64")
    first_field = sources[0].field
    open_rows = outcome["outcome"] == HARMONIZED
    missing = open_rows & year.isna() & ~invalid_any
    invalid = open_rows & year.isna() & invalid_any
    out_of_range = open_rows & year.notna() & ((year < year_min) | (year > year_max)).fillna(False)
    for mask, reason in (
        (missing, "missing_year_of_registration"),
        (invalid, "invalid_registration_date"),
        (out_of_range, "year_out_of_range"),
    ):
        outcome.loc[mask, ["outcome", "reason", "column"]] = [REJECTED, reason, first_field]
    return year


def _derive_age(
    frame: pd.DataFrame,
    sources: tuple[DeriveSource, ...],
    config: PartnerConfig,
    codebook: Codebook,
    issues: _Issues,
    unknown_parts: list[pd.DataFrame],
) -> pd.Series:
    bins = codebook.bins("ageBroad")
    candidates = []
    for source in sources:
        values = frame[source.field]
        if source.method in {"age_years", "birthdate"}:
            numbers, invalid = _numbers(values)
            # 999 or 150 is a typo or a missing-value code, not a person in the 48+ bin.
            implausible = (numbers > MAX_AGE).fillna(False)
            numbers = numbers.where(~implausible)
            issues.add(source.field, "invalid_age", invalid | implausible)
            candidates.append(_bin(numbers, bins))
        elif source.method == "age_range":
            candidates.append(
                _age_from_ranges(values, source.field, config, bins, issues, unknown_parts)
            )
        else:  # codebook spellings, e.g. '18--20' in previous CTDC releases
            candidates.append(
                _codebook_spelling(values, source.field, "ageBroad", codebook, unknown_parts)
            )
    return _first_valid(candidates, frame.index)


def _age_from_ranges(
    values: pd.Series,
    field: str,
    config: PartnerConfig,
    bins: pd.DataFrame,
    issues: _Issues,
    unknown_parts: list[pd.DataFrame],
) -> pd.Series:
    """A range gives a codebook bin only when it lies inside one bin; otherwise NULL, counted."""
    keys = per_distinct(values, normalize_series)
    table = config.age_ranges.set_index("key")
    low = keys.map(table["min_age"]).astype("Float64")
    high = keys.map(table["max_age"]).astype("Float64").fillna(np.inf)
    known = keys.isin(table.index)
    unknown_parts.append(_unknown_rows(values, values.notna() & ~known, field))
    low_bin, high_bin = _bin(low, bins), _bin(high, bins)
    same = known & low_bin.notna() & (low_bin == high_bin).fillna(False)
    issues.add(field, "age_range_spans_bins", known & ~same)
    return low_bin.where(same)


def _codebook_spelling(
    values: pd.Series,
    field: str,
    variable: str,
    codebook: Codebook,
    unknown_parts: list[pd.DataFrame],
) -> pd.Series:
    spellings = codebook.spelling_map(variable)
    mapped = per_distinct(values, lambda v: normalize_series(v).map(spellings))
    unknown = values.notna() & mapped.isna()
    unknown_parts.append(_unknown_rows(values, unknown, field))
    return mapped


def _derive_months(
    frame: pd.DataFrame,
    sources: tuple[DeriveSource, ...],
    codebook: Codebook,
    issues: _Issues,
    unknown_parts: list[pd.DataFrame],
) -> pd.Series:
    candidates = []
    for source in sources:
        if source.method == "months":
            numbers, invalid = _numbers(frame[source.field])
            issues.add(source.field, "invalid_months", invalid)
            candidates.append(_bin(numbers, codebook.bins("traffickMonths")))
        else:
            candidates.append(
                _codebook_spelling(
                    frame[source.field], source.field, "traffickMonths", codebook, unknown_parts
                )
            )
    return _first_valid(candidates, frame.index)


def _derive_country(
    frame: pd.DataFrame,
    sources: tuple[DeriveSource, ...],
    config: PartnerConfig,
    codebook: Codebook,
    unknown_parts: list[pd.DataFrame],
) -> pd.Series:
    """First usable country over the sources in order of preference; multi-valued cells
    (several citizenships) count their first value."""
    candidates = []
    for source in sources:
        spec = config.field(source.field)
        values = frame[source.field]
        if spec.multi:
            first = values.str.split(spec.delimiter, regex=False).str[0].str.strip()
            values = first.replace("", pd.NA)
        iso3 = per_distinct(
            values, lambda v: (k := normalize_series(v)).map(country_table(k, config, codebook))
        )
        unknown = values.notna() & iso3.isna()
        unknown_parts.append(_unknown_rows(values, unknown, source.field))
        candidates.append(iso3.replace("", pd.NA))
    return _first_valid(candidates, frame.index)


def map_partner(
    staged: pd.DataFrame,
    config: PartnerConfig,
    codebook: Codebook,
    year_max: int,
) -> MappingResult:
    """Harmonize one partner's staged rows onto the codebook."""
    frame = staged.reset_index(drop=True)
    year_min = int(config.year_min) if config.year_min is not None else codebook.year_min
    year_max = min(int(config.year_max), year_max) if config.year_max is not None else year_max
    outcome = pd.DataFrame(
        {FILE: frame[FILE], ROW: frame[ROW], "outcome": HARMONIZED, "reason": "", "column": ""}
    )
    _apply_reader_rejects(frame, outcome)
    _apply_inclusion(frame, config, outcome)
    year = _registration_year(frame, config, outcome, year_min, year_max)
    issues = _Issues(config.code)
    birthdates = {s.field for s in config.derive.get("ageBroad", ()) if s.method == "birthdate"}
    for spec in config.fields_with_role("date"):
        if spec.name not in birthdates:  # those are counted as invalid_age below
            issues.add(spec.name, "invalid_date", frame[spec.name] == INVALID)

    # Value-mapped variables (gender, means of control, exploitation, labour, sex, recruiter).
    long, codes_by_field = _tokens(
        frame, config, [f.name for f in config.fields_with_role("coded")]
    )
    known = pd.MultiIndex.from_frame(long[["field", "key"]]).isin(
        pd.MultiIndex.from_frame(config.values[["field", "key"]])
    )
    unknown_parts = [
        long.loc[~known, ["field", "token", "weight"]].assign(gid=long.loc[~known, "uid"])
    ]
    merged = long[known].merge(config.values, on=["field", "key"], how="inner")
    coded = _spread_hits(merged[merged["variable"] != ""], codes_by_field, frame.index)

    result = pd.DataFrame(index=frame.index)
    derived: dict[str, pd.Series] = {"yearOfRegistration": year}
    if config.derive.get("ageBroad"):
        derived["ageBroad"] = _derive_age(
            frame, config.derive["ageBroad"], config, codebook, issues, unknown_parts
        )
    if config.derive.get("traffickMonths"):
        derived["traffickMonths"] = _derive_months(
            frame, config.derive["traffickMonths"], codebook, issues, unknown_parts
        )
    for variable in ("citizenship", "CountryOfExploitation"):
        if config.derive.get(variable):
            derived[variable] = _derive_country(
                frame, config.derive[variable], config, codebook, unknown_parts
            )

    for var in codebook.variables:
        column = derived.get(var.name, coded.get(var.name))
        if column is None:
            column = pd.Series(pd.NA, index=frame.index)
        result[var.name] = column.astype("Int64" if var.type == "year" else "string")
    for name in codebook.binary_columns:
        result[name] = result[name].where(result[name] == BINARY_TRUE)
    result[FILE] = frame[FILE]

    # Unknown values are reported whatever the row's outcome: the mapping should know them.
    unknown_long = pd.concat(
        [p for p in unknown_parts if not p.empty]
        or [pd.DataFrame(columns=["field", "token", "gid", "weight"])],
        ignore_index=True,
    )
    unmapped, unknown_rows = _count_unknown(unknown_long, config.code)
    keep = outcome["outcome"] == HARMONIZED
    return MappingResult(
        harmonized=result.loc[keep].reset_index(drop=True),
        outcomes=outcome[OUTCOME_COLUMNS],
        unmapped=unmapped,
        issues=issues.frame(),
        unknown_rows=unknown_rows,
    )
