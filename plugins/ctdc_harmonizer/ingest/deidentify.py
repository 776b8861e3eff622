"""De-identify a frame as read: birthdates become whole-year ages at their reference date,
other dates become years, and every field not needed downstream is dropped.

A value that was present but could not be read becomes the INVALID marker, so the mapper can
count it without ever seeing it.
"""

from __future__ import annotations

import pandas as pd

from ctdc_harmonizer.columns import FILE, INVALID, REJECT, REJECT_COLUMN, ROW
from ctdc_harmonizer.harmonize.derivations import MAX_AGE, REGISTRY
from ctdc_harmonizer.ingest import excel
from ctdc_harmonizer.mapping.spec import PartnerConfig


def _parse_dates(values: pd.Series, fmt: str, spreadsheet: bool) -> pd.Series:
    """Dates from text: ISO 8601 unless the field declares a format; in a spreadsheet, date
    cells too (they arrive as text in the form Excel shows them), whatever the format."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    if spreadsheet:
        return excel.parse_dates(values.astype("string"), fmt)
    return pd.to_datetime(values, errors="coerce", format=fmt or "ISO8601")


def whole_years_between(born: pd.Series, at: pd.Series) -> pd.Series:
    """Completed years from `born` to `at` (the birthday must have been reached)."""
    years = at.dt.year - born.dt.year
    before_birthday = (at.dt.month < born.dt.month) | (
        (at.dt.month == born.dt.month) & (at.dt.day < born.dt.day)
    )
    return (years - before_birthday.astype("Int64")).astype("Int64")


def deidentify(config: PartnerConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """Replace birthdates by ages and dates by years; drop every field not needed downstream.

    A value that was present but could not be read becomes the INVALID marker, so the
    mapper can count it without ever seeing it.
    """
    out = frame.copy()
    date_specs = {f.name: f for f in config.fields_with_role("date")}
    spreadsheet = config.reader.format == "excel"
    parsed = {
        name: _parse_dates(out[name], spec.format, spreadsheet) for name, spec in date_specs.items()
    }
    present = {name: out[name].notna() for name in date_specs}
    ages: dict[str, pd.Series] = {}
    for sources in config.derive.values():
        for source in sources:
            if not REGISTRY[source.method].age_at_read:
                continue
            born, at = parsed[source.field], parsed[source.reference]
            age = whole_years_between(born, at)
            # Unreadable birthdate, or an age outside 0..MAX_AGE: present but unusable.
            bad = (present[source.field] & born.isna()) | (age < 0) | (age > MAX_AGE)
            text = age.astype("string").where(~bad.fillna(False), INVALID)
            ages[source.field] = text.where(present[source.field], pd.NA)
    for name in date_specs:
        if name in ages:
            out[name] = ages[name]
            continue
        year = parsed[name].dt.year.astype("Int64").astype("string")
        out[name] = year.where(parsed[name].notna(), INVALID).where(present[name], pd.NA)
    keep = [FILE, ROW, *[c for c in (REJECT, REJECT_COLUMN) if c in out], *config.kept_fields]
    if config.record_id:
        keep.append(config.record_id)
    return out[keep]
