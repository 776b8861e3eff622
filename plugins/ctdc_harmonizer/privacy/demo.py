"""The privacy part of the demo (scripts/run_demo.py): a throwaway key, one invented person
recorded by two partners, and a second year in which the partners' withdrawals files are not
read again (already applied) but the withdrawals are still honoured (from the registry).

Demo only: the generated landing folder is edited in place; nothing here runs in a
deployment.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.privacy import keys


def ensure_key(say: Callable[[str], None] = print) -> None:
    """Give the demo a random key when the environment has none, and say so."""
    if os.environ.get(keys.KEY_ENV, "").strip():
        return
    os.environ[keys.KEY_ENV] = keys.throwaway_key()
    say(
        "Demo: no CTDC_PSEUDONYM_KEY set, so a throwaway pseudonym key was made for this "
        "process only (a deployment sets its own secret; pseudonyms and withdrawals recorded "
        "by this demo mean nothing after it ends)."
    )


def plant_overlap(landing: Path) -> bool:
    """Record one IOM MiMOSA beneficiary again in the NGO's HTCDS sheet, as another
    organisation would type them: accent on the surname, day and month swapped."""
    from openpyxl import load_workbook

    iom = sorted((landing / "iom").glob("iom_case_export_*.csv"))
    sheets = sorted((landing / "case_management").glob("*.xlsx"))
    if not iom or not sheets:
        return False
    people = pd.read_csv(iom[0], dtype=str, keep_default_na=False)
    people = people[
        (people["mimosa_date_of_birth"] != "") & (people["beneficiary_last_name"] != "")
    ]
    born = pd.to_datetime(people["mimosa_date_of_birth"], format="%d/%m/%Y", errors="coerce")
    people = people[born.notna() & (born.dt.day <= 12) & (born.dt.day != born.dt.month)]
    if people.empty:
        return False
    person, when = people.iloc[0], born[people.index[0]]
    book = load_workbook(sheets[0])
    sheet = book.worksheets[0]
    header = [cell.value for cell in sheet[1]]
    # The first record (under the HTCDS label row) not named in the NGO's withdrawals file.
    requests = landing / "case_management" / "withdrawals.csv"
    withdrawn = set()
    if requests.exists():
        table = pd.read_csv(requests, dtype=str, keep_default_na=False)
        withdrawn = set(table["prs_SecondName"].str.strip().str.casefold())
    last = header.index("prs_SecondName") + 1
    row = next(
        (
            r
            for r in range(3, sheet.max_row + 1)  # a few rows of a demo sheet
            if str(sheet.cell(r, last).value or "").strip().casefold() not in withdrawn
        ),
        None,
    )
    if row is None:
        return False
    sheet.cell(row, header.index("prs_FirstName") + 1, person["beneficiary_first_name"].upper())
    surname = person["beneficiary_last_name"]
    sheet.cell(row, header.index("prs_SecondName") + 1, surname.replace("a", "á", 1))
    swapped = dt.datetime(when.year, when.day, when.month)
    sheet.cell(row, header.index("prs_Birthdate") + 1, swapped)
    book.save(sheets[0])
    return True


def summary(out: Path, first: str, second: str) -> list[str]:
    lines = ["", "Privacy across releases:"]
    for label, note in ((first, "withdrawals.csv read"), (second, "withdrawals already applied")):
        recon = json.loads((out / label / "reconciliation.json").read_text(encoding="utf-8"))
        erased = {p: (e.get("totals") or {}).get("erased", 0) for p, e in recon["partners"].items()}
        lines.append(f"  {label} ({note}): delivered rows erased per partner {erased}")
        if label == first:
            pairs = recon.get("overlaps", {}).get("persons_at_both_partners", {})
            lines.append(f"  {label}: persons found at two partners {pairs}")
    return lines
