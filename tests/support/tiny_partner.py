"""A small CSV partner written into a temporary folder, for unit tests of the engine."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PARTNER_YAML = """\
partner: tiny
name: Tiny test partner
datasource: Case Management
reader:
  format: csv
  files: ["*.csv"]
record_id: case_id
null_values: ["", "-99"]
inclusion:
  - {rule: consent_refused, field: consent, exclude: ["No"]}
  - {rule: not_a_victim, field: status, exclude: ["Not a victim"]}
derive:
  yearOfRegistration:
    - {method: date, field: registered_on}
  ageBroad:
    - {method: age_years, field: age}
    - {method: birthdate, field: born_on, reference: registered_on}
  citizenship:
    - {method: country, field: nationality}
  CountryOfExploitation:
    - {method: country, field: exploited_in}
    - {method: country, field: found_in}
  traffickMonths:
    - {method: months, field: months}
coverage:
  threshold: 1.0
"""
FIELDS_CSV = """\
field,role,delimiter,format,description
case_id,record_id,,,Case id
full_name,identifier,,,Name
note,free_text,,,Note
consent,coded,,,Consent
status,coded,,,Status
born_on,date,,,Birthdate
registered_on,date,,,Registration date
age,number,,,Age in years
gender,coded,,,Gender
controls,coded,|,,Means of control
nationality,country,;,,Citizenships
exploited_in,country,,,Country of exploitation
found_in,country,,,Where the person was found
months,number,,,Months in exploitation
"""
VALUES_CSV = """\
field,source_value,variable,value,match,note
consent,Yes,,,exact,
consent,No,,,exact,
status,Victim,,,exact,
status,Not a victim,,,exact,
gender,F,gender,Woman,exact,
gender,M,gender,Man,exact,
gender,X,gender,Trans/Transgender/NonConforming,exact,
controls,debt,meansDebtBondageEarnings,1,exact,
controls,earnings,meansDebtBondageEarnings,1,exact,
controls,threats,meansThreats,1,exact,
controls,documents,meansWithholdDocuments,1,exact,alias of meansWithholdDocs
controls,other,,,exact,not exported in v3
"""
COLUMNS = [
    "case_id",
    "full_name",
    "note",
    "consent",
    "status",
    "born_on",
    "registered_on",
    "age",
    "gender",
    "controls",
    "nationality",
    "exploited_in",
    "found_in",
    "months",
]


def row(**values: str) -> dict:
    base = {c: "" for c in COLUMNS}
    base.update(consent="Yes", status="Victim", registered_on="2020-06-01")
    base.update(values)
    return base


def write_partner(root: Path, **overrides: str) -> Path:
    """Write mappings/tiny/ under root; overrides replace whole files by name."""
    folder = root / "mappings" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"partner.yaml": PARTNER_YAML, "fields.csv": FIELDS_CSV, "values.csv": VALUES_CSV}
    files.update(overrides)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def write_extract(root: Path, rows: list[dict], name: str = "extract.csv") -> Path:
    folder = root / "landing" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path
