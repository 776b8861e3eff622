"""Bad-input corpus, partner `case_management` (HTCDS 2.0 Excel template, no case id).

Withdrawal by identifying fields uses the format assumed in corpus_kit
(enable_htcds_withdrawals / write_htcds_withdrawals): adapt it there if the design changes.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
import unicodedata

import pytest

from support.corpus import (
    DOB,
    EMAIL,
    FORMULA_CMD,
    FORMULA_LINK,
    HTCDS_FILE,
    HTCDS_MATCH_ON,
    NAME,
    PHONE,
    Case,
    Env,
    Workbook,
    case_ids,
    enable_htcds_withdrawals,
    name_series,
    run_case,
    write_htcds_withdrawals,
)

P = "case_management"
FILE_AND = [f"'{P}'", HTCDS_FILE]
FIRST = 3  # first data row of the sheet


def book(env: Env) -> Workbook:
    return Workbook(env.path(P, HTCDS_FILE))


def included(w: Workbook, row: int) -> None:
    """Make a row count as a record the pipeline keeps (consent given, a victim)."""
    w.set(row, "con_Consent", "Yes")
    w.set(row, "vic_TraffickingStatus", "Actual victim of trafficking")


def plant_reject(env: Env, w: Workbook, row: int) -> None:
    """No referral date: rejected (missing year of registration) at this sheet row."""
    included(w, row)
    w.set(row, "cas_IncomingReferralDate", None)
    w.set(row, "prs_FirstName", env.plant("Quillfeatherine"))


def padded_header(env: Env) -> None:
    w = book(env)
    for name in ("prs_Gender", "prs_Citizenship", "cas_IncomingReferralDate"):
        w.sheet.cell(row=1, column=w.col(name)).value = f"  {name} "
    w.save()


def blank_rows(env: Env) -> None:
    """Formatted but empty rows inside the data: skipped; later rows keep their sheet row."""
    w = book(env)
    plant_reject(env, w, 40)
    w.sheet.insert_rows(10, amount=2)
    w.save()
    env.expect_rejected(HTCDS_FILE, 42)


def lock_file(env: Env) -> None:
    (env.landing / P / f"~${HTCDS_FILE}").write_bytes(b"\x00" + NAME.encode() + b"\x00")
    env.plant(NAME)


def nfd_citizenship(env: Env) -> None:
    w = book(env)
    for row, country in zip((4, 9, 14), ("Türkiye", "Côte d'Ivoire", "Türkiye"), strict=True):
        w.set(row, "prs_Citizenship", unicodedata.normalize("NFD", country))
    w.save()


def unnamed_column(env: Env) -> None:
    """A column added right of the template without a field name, holding names."""
    w = book(env)
    column = len(w.fields) + 1
    names = name_series(w.last_row - FIRST + 1, "Passqorb")
    for row, value in zip(range(FIRST, w.last_row + 1), names, strict=True):
        w.sheet.cell(row=row, column=column).value = value
    env.plant(*names)
    w.save()


def ancient_birthdates(env: Env) -> None:
    w = book(env)
    for row in range(FIRST, w.last_row + 1):
        w.set(row, "prs_Birthdate", dt.datetime(1890, 1, 1))
    w.save()


def no_48_plus(result) -> None:
    with (result.release_dir / "harmonized.csv").open(encoding="utf-8") as handle:
        ages = [r["ageBroad"] for r in csv.DictReader(handle)]
    assert "48+" not in ages, "an age over 120 landed in the 48+ bin"
    assert (result.release_dir / "value_issues.csv").read_text().count("\n") > 1


def text_in_date(column: str, value: str):
    def mutate(env: Env) -> None:
        w = book(env)
        included(w, 7)
        w.set(7, column, env.plant(value))
        w.save()

    return mutate


def missing_label_row(env: Env) -> None:
    w = book(env)
    w.set(FIRST, "prs_FirstName", env.plant(NAME))
    w.sheet.delete_rows(2)
    w.save()


def duplicate_header(env: Env) -> None:
    """A second `prs_Gender` column added right of the template, holding other values."""
    w = book(env)
    column = len(w.fields) + 1
    w.sheet.cell(row=1, column=column).value = "prs_Gender"
    titles = [f"Zorbtitle{row}" for row in range(FIRST, w.last_row + 1)]
    for row, title in zip(range(FIRST, w.last_row + 1), titles, strict=True):
        w.sheet.cell(row=row, column=column).value = title
    env.plant(*titles)
    w.save()


def garbage_workbook(env: Env) -> None:
    env.path(P, HTCDS_FILE).write_bytes(b"PK\x03\x04" + NAME.encode() + b"\x00" * 64)
    env.plant(NAME)


def symlinked_workbook(env: Env) -> None:
    elsewhere = env.root / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / HTCDS_FILE
    shutil.move(env.path(P, HTCDS_FILE), target)
    w = Workbook(target)
    w.set(5, "prs_Gender", env.plant(NAME))
    w.save()
    env.path(P, HTCDS_FILE).symlink_to(target)


def in_cell(column: str, value: str, row: int = 6):
    def mutate(env: Env) -> None:
        w = book(env)
        included(w, row)
        w.set(row, column, env.plant(value) if value in (NAME, PHONE, EMAIL, DOB) else value)
        w.save()

    return mutate


def first_names_shifted(env: Env) -> None:
    """First names pasted one column to the right, for every row: con_Consent holds names."""
    w = book(env)
    names = name_series(w.last_row - FIRST + 1)
    for row, name in zip(range(FIRST, w.last_row + 1), names, strict=True):
        w.set(row, "prs_SecondName", w.get(row, "prs_FirstName"))
        w.set(row, "con_Consent", name)
    env.plant(*names)
    w.save()


def formulas(env: Env) -> None:
    env.tolerate_unknown(P)
    w = book(env)
    for row in range(FIRST, FIRST + 6):
        included(w, row)
        w.set(row, "prs_Gender", FORMULA_LINK)
    for row in range(FIRST + 10, FIRST + 16):
        included(w, row)
        w.set(row, "vic_MethodsOfControl", FORMULA_CMD)
    env.allow_in_unmapped(FORMULA_LINK, FORMULA_CMD)
    w.save()


def rare_unknowns(env: Env) -> None:
    env.tolerate_unknown(P)
    w = book(env)
    included(w, 5)
    w.set(5, "prs_Gender", env.plant(NAME))
    included(w, 8)
    w.set(8, "prs_Citizenship", env.plant(PHONE))
    w.save()


def shifted_withheld(env: Env) -> None:
    env.tolerate_unknown(P)
    w = book(env)
    names = name_series(w.last_row - FIRST + 1)
    for row, name in zip(range(FIRST, w.last_row + 1), names, strict=True):
        w.set(row, "prs_Gender", name)
    env.plant(*names)
    w.save()


def says_withheld(result) -> None:
    text = (result.release_dir / "unmapped.csv").read_text(encoding="utf-8")
    rows = [x for x in text.splitlines() if "prs_Gender" in x]
    assert any("withheld" in x.casefold() or "shifted" in x.casefold() for x in rows), (
        "unmapped.csv does not say the values of prs_Gender were withheld"
    )


# --- withdrawals -----------------------------------------------------------------------------


def withdrawals_by_record_id(env: Env) -> None:
    """The iom/hotline format, delivered for a partner that has no case id."""
    (env.landing / P / "withdrawals.csv").write_text(
        f"record_id\n{env.plant('HTC-2024-ZQ0001')}\n", encoding="utf-8"
    )


PEOPLE = [
    ("Zorbaxina", "Quillfeather", "1961-07-14"),
    ("Quorvalin", "Zebbersmith", "1979-02-03"),
]


def withdrawn_people(env: Env, name: str = "withdrawals.csv", listed=None) -> None:
    """Two survivors (rows 6 and 21) withdraw; the file lists them by identifying fields."""
    enable_htcds_withdrawals(env.own_mappings(P))
    w = book(env)
    for row, (first, second, born) in zip((6, 21), PEOPLE, strict=True):
        included(w, row)
        w.set(row, "prs_FirstName", env.plant(first))
        w.set(row, "prs_SecondName", env.plant(second))
        w.set(row, "prs_Birthdate", dt.datetime.fromisoformat(born))
        env.plant(born)
    w.save()
    write_htcds_withdrawals(env.landing / P, PEOPLE if listed is None else listed, name)


def erased_two(result) -> None:
    recon = json.loads((result.release_dir / "reconciliation.json").read_text())
    assert recon["partners"][P]["totals"]["erased"] == 2, "the two withdrawals were not applied"


def withdrawal_no_match(env: Env) -> None:
    withdrawn_people(env, listed=[*PEOPLE, ("Xylophenia", "Grumbleworth", "1988-08-08")])
    env.plant("Xylophenia", "Grumbleworth", "1988-08-08")


def withdrawal_missing_column(env: Env) -> None:
    withdrawn_people(env)
    path = env.landing / P / "withdrawals.csv"
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    path.write_text("\n".join(",".join(r[:2]) for r in rows) + "\n", encoding="utf-8")


def withdrawal_capitalised(env: Env) -> None:
    withdrawn_people(env, name="Withdrawals.csv")


CASES = [
    Case(
        id="htcds-padded-header",
        partner=P,
        mutate=padded_header,
        exit=0,
        promise="header whitespace tolerated",
    ),
    Case(
        id="htcds-blank-rows",
        partner=P,
        mutate=blank_rows,
        exit=0,
        promise="blank rows skipped; row = sheet row",
    ),
    Case(
        id="htcds-office-lock-file",
        partner=P,
        mutate=lock_file,
        exit=0,
        promise="~$ lock file never read",
    ),
    Case(
        id="htcds-nfd-citizenship",
        partner=P,
        mutate=nfd_citizenship,
        exit=0,
        promise="NFD country names read",
    ),
    Case(
        id="htcds-unnamed-column",
        partner=P,
        mutate=unnamed_column,
        exit=0,
        promise="unnamed column never read",
    ),
    Case(
        id="htcds-birthdate-1890",
        partner=P,
        mutate=ancient_birthdates,
        exit=0,
        check=no_48_plus,
        promise="age > 120 is a value issue, not 48+",
    ),
    Case(
        id="htcds-name-in-birthdate",
        partner=P,
        mutate=text_in_date("prs_Birthdate", NAME),
        exit=0,
        promise="text in a date cell: value issue, never quoted",
    ),
    Case(
        id="htcds-dob-text-in-referral-date",
        partner=P,
        mutate=text_in_date("cas_IncomingReferralDate", "31/02/1957"),
        exit=0,
        promise="unreadable referral date: row rejected, never quoted",
    ),
    Case(
        id="htcds-missing-label-row",
        partner=P,
        mutate=missing_label_row,
        exit=1,
        names=FILE_AND,
        promise="missing label row is a clear error (first record not dropped)",
    ),
    Case(
        id="htcds-duplicate-header",
        partner=P,
        mutate=duplicate_header,
        exit=1,
        names=[*FILE_AND, "prs_Gender"],
        promise="duplicate field name is an error naming it",
    ),
    Case(
        id="htcds-garbage-workbook",
        partner=P,
        mutate=garbage_workbook,
        exit=1,
        names=FILE_AND,
        promise="unreadable workbook: clear error",
    ),
    Case(
        id="htcds-symlinked-workbook",
        partner=P,
        mutate=symlinked_workbook,
        exit=1,
        names=FILE_AND,
        promise="workbook symlinked from outside refused",
    ),
    Case(
        id="htcds-name-in-gender",
        partner=P,
        mutate=in_cell("prs_Gender", NAME),
        exit=1,
        names=[f"'{P}'", "prs_Gender"],
        promise="coverage gate never quotes a name",
    ),
    Case(
        id="htcds-phone-in-citizenship",
        partner=P,
        mutate=in_cell("prs_Citizenship", PHONE),
        exit=1,
        names=[f"'{P}'", "prs_Citizenship"],
        promise="coverage gate never quotes a phone number",
    ),
    Case(
        id="htcds-email-in-multiselect",
        partner=P,
        mutate=in_cell("vic_TypeOfExploitation", EMAIL),
        exit=1,
        names=[f"'{P}'", "vic_TypeOfExploitation"],
        promise="coverage gate never quotes an e-mail",
    ),
    Case(
        id="htcds-dob-in-location",
        partner=P,
        mutate=in_cell("vic_LocationOfExploitation", DOB),
        exit=1,
        names=[f"'{P}'", "vic_LocationOfExploitation"],
        promise="coverage gate never quotes a date of birth",
    ),
    Case(
        id="htcds-first-names-shifted",
        partner=P,
        mutate=first_names_shifted,
        exit=1,
        names=[f"'{P}'", "con_Consent"],
        promise="first names shifted into a coded column never reach the UI",
    ),
    Case(
        id="htcds-formulas-escaped",
        partner=P,
        mutate=formulas,
        exit=0,
        promise="formula values escaped",
    ),
    Case(
        id="htcds-rare-unknowns",
        partner=P,
        mutate=rare_unknowns,
        exit=0,
        promise="rare unknown values withheld",
    ),
    Case(
        id="htcds-shifted-column-withheld",
        partner=P,
        mutate=shifted_withheld,
        exit=0,
        check=says_withheld,
        promise="shifted column withheld with a count",
    ),
    Case(
        id="htcds-withdrawals-by-record-id",
        partner=P,
        mutate=withdrawals_by_record_id,
        exit=1,
        names=[f"'{P}'", "withdrawals"],
        promise="withdrawals for a partner without case id: error, not skipped",
    ),
]

# Withdrawal by identifying fields (format: corpus_kit.enable_htcds_withdrawals).
WITHDRAWAL_CASES = [
    Case(
        id="htcds-withdrawal-by-fields",
        partner=P,
        mutate=withdrawn_people,
        exit=0,
        check=erased_two,
        promise=f"survivors withdrawn by {', '.join(HTCDS_MATCH_ON)} are erased",
    ),
    Case(
        id="htcds-withdrawal-by-fields-capitalised",
        partner=P,
        mutate=withdrawal_capitalised,
        exit=0,
        check=erased_two,
        promise="Withdrawals.csv applied",
    ),
    Case(
        id="htcds-withdrawal-by-fields-no-match",
        partner=P,
        mutate=withdrawal_no_match,
        exit=1,
        names=[f"'{P}'", "withdrawals"],
        promise="a withdrawal matching nobody is an error",
    ),
    Case(
        id="htcds-withdrawal-by-fields-missing-column",
        partner=P,
        mutate=withdrawal_missing_column,
        exit=1,
        names=[f"'{P}'", "withdrawals", "prs_Birthdate"],
        promise="withdrawals lacking a match_on column: error naming it",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_htcds(case, corpus_env, capsys, caplog):
    run_case(case, corpus_env(case), capsys, caplog)


@pytest.mark.parametrize("case", WITHDRAWAL_CASES, ids=case_ids(WITHDRAWAL_CASES))
def test_htcds_withdrawal_by_identifying_fields(case, corpus_env, capsys, caplog):
    run_case(case, corpus_env(case), capsys, caplog)
