"""Bad-input corpus, partner `iom` (CSV with quoted cells, record id, withdrawals.csv)."""

from __future__ import annotations

import csv
import os
import shutil

import pytest

from support.corpus import (
    CASE_NO,
    DOB,
    EMAIL,
    FORMULA_AT,
    FORMULA_CMD,
    FORMULA_LINK,
    IOM_FILE,
    NAME,
    PHONE,
    Case,
    CsvTable,
    Env,
    case_ids,
    csv_records,
    line,
    name_series,
    rejected_rows,
    run_case,
)

P = "iom"


def table(env: Env) -> CsvTable:
    return CsvTable(env.path(P, IOM_FILE))


def plant_reject(env: Env, t: CsvTable, after: int = 20) -> str:
    """A MIMOSA record without registration date (rejected: no year), with a fresh case id."""
    i = next(i for i in range(after, len(t.rows)) if t.get(i, "data_system") == "MIMOSA")
    case_no = env.plant("MIM-2019-ZQ7741")
    t.set(i, "case_id", case_no)
    t.set(i, "consent_to_share_data", "Yes")
    t.set(i, "beneficiary_category", "Victim of trafficking")
    t.set(i, "mimosa_registration_date", "")
    t.set(i, "beneficiary_first_name", env.plant("Quillfeatherine Zorbacz"))
    return case_no


def lines_of(env: Env, case_no: str) -> set[int]:
    records = csv_records(env.path(P, IOM_FILE))
    rec = next(r for r in records if r.cells and r.cells[0] == case_no)
    return set(range(rec.first_line, rec.last_line + 1))


def text_lines(env: Env) -> list[str]:
    return env.path(P, IOM_FILE).read_text(encoding="utf-8").split("\n")


def write_lines(env: Env, lines: list[str]) -> None:
    env.path(P, IOM_FILE).write_text("\n".join(lines), encoding="utf-8")


def first_row(t: CsvTable, system: str) -> int:
    return next(i for i, r in enumerate(t.rows) if r[t.col("data_system")] == system)


# --- tolerant reading: handled in full ---------------------------------------------------------


def bom(env: Env) -> None:
    t = table(env)
    plant_reject(env, t)
    t.write()
    path = env.path(P, IOM_FILE)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    env.expect_rejected(IOM_FILE, *lines_of(env, "MIM-2019-ZQ7741"))


def header_padded(env: Env) -> None:
    t = table(env)
    t.header = [f"  {h} " for h in t.header]
    t.write()


def crlf(env: Env) -> None:
    t = table(env)
    plant_reject(env, t)
    t.write(newline="\r\n")
    env.expect_rejected(IOM_FILE, *lines_of(env, "MIM-2019-ZQ7741"))


def blank_lines(env: Env) -> None:
    t = table(env)
    case_no = plant_reject(env, t, after=30)
    t.write()
    lines = text_lines(env)
    lines[6:6] = ["", ""]
    lines[15:15] = [""]
    write_lines(env, lines)
    env.expect_rejected(IOM_FILE, *lines_of(env, case_no))


def multiline_note(env: Env) -> None:
    """A quoted note with line breaks: later records' row numbers are physical lines."""
    t = table(env)
    t.set(2, "case_notes", "Line one of the note\nline two\nline three")
    case_no = plant_reject(env, t, after=25)
    t.write()
    env.expect_rejected(IOM_FILE, *lines_of(env, case_no))


def column_order(env: Env) -> None:
    t = table(env)
    order = list(reversed(range(len(t.header))))
    t.header = [t.header[j] for j in order]
    t.rows = [[r[j] for j in order] for r in t.rows]
    t.write()


def undeclared_column(env: Env) -> None:
    t = table(env)
    t.header.insert(5, "passport_number")
    names = name_series(len(t.rows), "Passqorb")
    for r, value in zip(t.rows, names, strict=True):
        r.insert(5, value)
    env.plant(*names)
    t.write()


def lock_file(env: Env) -> None:
    """LibreOffice's lock file next to the extract: a hidden file, never read."""
    (env.landing / P / f".~lock.{IOM_FILE}#").write_text(f"{NAME},host,2025\n", encoding="utf-8")
    env.plant(NAME)


def nfd_country(env: Env) -> None:
    import unicodedata

    t = table(env)
    for i, country in zip((3, 9, 17), ("Türkiye", "Côte d'Ivoire", "Türkiye"), strict=True):
        t.set(i, "nationality", unicodedata.normalize("NFD", country))
    t.write()


def nfc_country_control(env: Env) -> None:
    t = table(env)
    for i, country in zip((3, 9, 17), ("Türkiye", "Côte d'Ivoire", "Türkiye"), strict=True):
        t.set(i, "nationality", country)
    t.write()


def no_48_plus(result) -> None:
    with (result.release_dir / "harmonized.csv").open(encoding="utf-8") as handle:
        ages = [r["ageBroad"] for r in csv.DictReader(handle)]
    assert "48+" not in ages, "an implausible age landed in the 48+ bin"
    with (result.release_dir / "value_issues.csv").open(encoding="utf-8") as handle:
        issues = list(csv.DictReader(handle))
    assert issues, "implausible ages are not counted as value issues"


def implausible_ages(value: str):
    def mutate(env: Env) -> None:
        t = table(env)
        for i in range(len(t.rows)):
            if t.get(i, "data_system") == "LEGACY":
                t.set(i, "legacy_age", value)
            else:
                t.set(i, "mimosa_date_of_birth", "")
        t.write()

    return mutate


def duplicate_file(env: Env) -> None:
    """The same export delivered twice under two names: copies merge as duplicates."""
    shutil.copy(env.path(P, IOM_FILE), env.path(P, "iom_case_export_2025_resent.csv"))


def check_erased(result) -> None:
    folder = result.env.landing / P
    withdrawals = next(p for p in folder.iterdir() if p.name.casefold() == "withdrawals.csv")
    text = withdrawals.read_bytes().decode("utf-8").lstrip("\ufeff")
    ids = {r[0].strip() for r in list(csv.reader(text.splitlines()))[1:] if r}
    t = CsvTable(result.env.path(P, IOM_FILE))
    expected = sum(1 for r in t.rows if r[t.col("case_id")] in ids)
    assert expected > 0
    import json

    recon = json.loads((result.release_dir / "reconciliation.json").read_text())
    assert recon["partners"][P]["totals"]["erased"] == expected, "withdrawals not (all) applied"


def withdrawals_renamed(name: str):
    def mutate(env: Env) -> None:
        os.rename(env.path(P, "withdrawals.csv"), env.path(P, name))

    return mutate


def withdrawals_bom_padded(env: Env) -> None:
    path = env.path(P, "withdrawals.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = ' "record_id" '.replace('"', "")
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())


# --- located errors ----------------------------------------------------------------------------


def too_many_fields(env: Env) -> None:
    lines = text_lines(env)
    lines[7] = lines[7] + f',"{env.plant(NAME)}"'
    write_lines(env, lines)


def too_few_fields(env: Env) -> None:
    t = table(env)
    t.rows[7] = [*t.rows[7][:6], env.plant(NAME)]
    t.write()


def unclosed_quote_at_end(env: Env) -> None:
    lines = [x for x in text_lines(env) if x]
    lines.append(f'"MIM-2020-000999","MIMOSA","{env.plant(NAME)} said that')
    write_lines(env, lines)


def shifted_row(env: Env) -> None:
    """One record pasted one cell to the right: one field too many, names in coded cells."""
    t = table(env)
    t.rows[11] = [t.rows[11][0], env.plant(NAME), *t.rows[11][1:]]
    t.write()


def duplicate_header(env: Env) -> None:
    """A second `nationality` column (phones pasted under a copied header)."""
    t = table(env)
    t.header.insert(12, "nationality")
    phones = [f"+99 555 01{i:02d} 77{i:02d}" for i in range(len(t.rows))]
    for r, phone in zip(t.rows, phones, strict=True):
        r.insert(12, phone)
    env.plant(*phones)
    t.write()


def latin1(env: Env) -> None:
    t = table(env)
    t.set(10, "nationality", "Côte d'Ivoire")
    t.set(10, "beneficiary_first_name", env.plant(NAME))
    t.write()
    path = env.path(P, IOM_FILE)
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))


def semicolons(env: Env) -> None:
    table(env).write(delimiter=";")


def empty_file(env: Env) -> None:
    env.path(P, IOM_FILE).write_bytes(b"")


def header_only(env: Env) -> None:
    t = table(env)
    t.rows = []
    t.write()


# --- values where they do not belong: the coverage gate must not quote them --------------------


def included(env: Env, t: CsvTable, i: int) -> None:
    """Make row i a record the pipeline keeps: consent, a victim, a case id of its own."""
    legacy = t.get(i, "data_system") == "LEGACY"
    t.set(i, "consent_to_share_data", "Y" if legacy else "Yes")
    t.set(i, "beneficiary_category", "Victim of trafficking")
    t.set(i, "case_id", env.plant(f"{'LGC' if legacy else 'MIM'}-2010-ZQ{i:04d}"))


def in_cell(column: str, value: str, system: str | None = None):
    def mutate(env: Env) -> None:
        t = table(env)
        i = first_row(t, system) if system else 4
        included(env, t, i)
        t.set(i, column, env.plant(value))
        t.write()

    return mutate


def last_names_shifted(env: Env) -> None:
    """The surname column pasted one column to the right, over legacy_sex, for every row."""
    t = table(env)
    names = name_series(len(t.rows))
    for i, surname in enumerate(names):
        t.set(i, "beneficiary_last_name", surname)
        t.set(i, "legacy_sex", surname)
    env.plant(*names)
    t.write()


# --- the restricted unmapped report (coverage tolerated through a mapping copy) ----------------


def formulas(env: Env) -> None:
    env.tolerate_unknown(P)
    t = table(env)
    mimosa = [i for i in range(len(t.rows)) if t.get(i, "data_system") == "MIMOSA"]
    for i in mimosa[:6]:
        t.set(i, "mimosa_gender", FORMULA_LINK)
    for i in range(6):
        t.set(i, "recruiter_relationship", FORMULA_CMD)
    for i in range(10, 16):
        t.set(i, "type_of_exploitation", FORMULA_AT)
    env.allow_in_unmapped(FORMULA_LINK, FORMULA_CMD, FORMULA_AT)
    t.write()


def rare_values(env: Env) -> None:
    env.tolerate_unknown(P)
    t = table(env)
    t.set(5, "nationality", env.plant(NAME))
    mimosa = [i for i in range(len(t.rows)) if t.get(i, "data_system") == "MIMOSA"]
    for i in mimosa[:4]:  # four rows: below k = 5
        t.set(i, "mimosa_gender", env.plant("Quillfeatherish"))
    t.set(7, "type_of_exploitation", f"Forced labour|{env.plant(EMAIL)}")
    t.write()


def shifted_column_withheld(env: Env) -> None:
    env.tolerate_unknown(P)
    last_names_shifted(env)


def says_withheld(field: str):
    def check(result) -> None:
        text = (result.release_dir / "unmapped.csv").read_text(encoding="utf-8")
        rows = [x for x in text.splitlines() if field in x]
        assert rows, f"unmapped.csv says nothing about {field}"
        assert any("withheld" in x.casefold() or "shifted" in x.casefold() for x in rows), (
            f"unmapped.csv does not say the values of {field} were withheld"
        )

    return check


def same_name_every_row(env: Env) -> None:
    env.tolerate_unknown(P)
    t = table(env)
    for i in range(len(t.rows)):
        t.set(i, "legacy_sex", NAME)
    env.plant(NAME)
    t.write()


def frequent_unknown(env: Env) -> None:
    env.tolerate_unknown(P)
    t = table(env)
    mimosa = [i for i in range(len(t.rows)) if t.get(i, "data_system") == "MIMOSA"]
    for i in mimosa[:6]:
        t.set(i, "mimosa_gender", "Genderfluidish")
    env.allow_in_unmapped("Genderfluidish")
    t.write()


def lists_frequent(result) -> None:
    with (result.release_dir / "unmapped.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert any(
        r.get("source_value") == "Genderfluidish" and str(r.get("count")) == "6" for r in rows
    ), "a coded value seen 6 times (k = 5) is not listed for the data officer"


# --- withdrawals that cannot be applied ---------------------------------------------------------


def withdrawal_unknown_id(env: Env) -> None:
    path = env.path(P, "withdrawals.csv")
    path.write_text(path.read_text(encoding="utf-8") + f"{env.plant(CASE_NO)}\n", encoding="utf-8")


def withdrawal_wrong_column(env: Env) -> None:
    path = env.path(P, "withdrawals.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(["survivor", *lines[1:]]) + "\n", encoding="utf-8")


def withdrawals_directory(env: Env) -> None:
    path = env.path(P, "withdrawals.csv")
    path.unlink()
    path.mkdir()


def withdrawals_not_utf8(env: Env) -> None:
    path = env.path(P, "withdrawals.csv")
    path.write_bytes(path.read_bytes() + "Zorbaxína\n".encode("latin-1"))
    env.plant("Zorbaxína")


# --- the landing folder as a trust boundary ----------------------------------------------------


def outside(env: Env, name: str) -> os.PathLike:
    elsewhere = env.root / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    return elsewhere / name


def symlinked_extract(env: Env) -> None:
    target = outside(env, IOM_FILE)
    shutil.move(env.path(P, IOM_FILE), target)
    t = CsvTable(target)
    t.set(3, "legacy_sex", env.plant(NAME))
    t.write()
    env.path(P, IOM_FILE).symlink_to(target)


def symlinked_partner_folder(env: Env) -> None:
    target = env.root / "elsewhere-iom"
    shutil.move(env.landing / P, target)
    (env.landing / P).symlink_to(target, target_is_directory=True)


def symlinked_withdrawals(env: Env) -> None:
    target = outside(env, "withdrawals.csv")
    shutil.move(env.path(P, "withdrawals.csv"), target)
    env.path(P, "withdrawals.csv").symlink_to(target)


def second_extract_via_symlink(env: Env) -> None:
    """A second file matching the pattern that points outside the landing folder."""
    target = outside(env, "stolen.csv")
    t = table(env)
    t.set(0, "legacy_sex", env.plant(NAME))
    t.write(target)
    env.path(P, "iom_case_export_2024.csv").symlink_to(target)


def nul_byte(env: Env) -> None:
    t = table(env)
    t.set(6, "case_notes", f"before\x00after {env.plant(NAME)}")
    t.write()


FILE_AND = [f"'{P}'", IOM_FILE]

CASES = [
    Case(id="iom-utf8-bom", partner=P, mutate=bom, exit=0, promise="Excel's UTF-8 BOM is read"),
    Case(
        id="iom-header-padded",
        partner=P,
        mutate=header_padded,
        exit=0,
        promise="header whitespace tolerated",
    ),
    Case(
        id="iom-crlf",
        partner=P,
        mutate=crlf,
        exit=0,
        promise="CRLF line ends read, rows stay physical",
    ),
    Case(
        id="iom-blank-lines",
        partner=P,
        mutate=blank_lines,
        exit=0,
        promise="blank lines skipped, rows physical",
    ),
    Case(
        id="iom-multiline-note",
        partner=P,
        mutate=multiline_note,
        exit=0,
        promise="row number = physical line",
    ),
    Case(
        id="iom-columns-reordered",
        partner=P,
        mutate=column_order,
        exit=0,
        promise="columns matched by name",
    ),
    Case(
        id="iom-undeclared-column",
        partner=P,
        mutate=undeclared_column,
        exit=0,
        promise="undeclared column unread",
    ),
    Case(
        id="iom-hidden-lock-file",
        partner=P,
        mutate=lock_file,
        exit=0,
        promise="office lock files are not read",
    ),
    Case(
        id="iom-nfd-country",
        partner=P,
        mutate=nfd_country,
        exit=0,
        promise="NFD country names normalised",
    ),
    Case(
        id="iom-nfc-country-control",
        partner=P,
        mutate=nfc_country_control,
        exit=0,
        promise="(control for NFD)",
    ),
    Case(
        id="iom-age-999",
        partner=P,
        mutate=implausible_ages("999"),
        exit=0,
        check=no_48_plus,
        promise="age 999 is a value issue, not 48+",
    ),
    Case(
        id="iom-age-150",
        partner=P,
        mutate=implausible_ages("150"),
        exit=0,
        check=no_48_plus,
        promise="age 150 is a value issue, not 48+",
    ),
    Case(
        id="iom-same-file-twice",
        partner=P,
        mutate=duplicate_file,
        exit=0,
        promise="second copy merged, reconciled",
    ),
    Case(
        id="iom-withdrawals-capitalised",
        partner=P,
        mutate=withdrawals_renamed("Withdrawals.csv"),
        exit=0,
        check=check_erased,
        promise="Withdrawals.csv applied (case-insensitive name)",
    ),
    Case(
        id="iom-withdrawals-upper-case",
        partner=P,
        mutate=withdrawals_renamed("WITHDRAWALS.CSV"),
        exit=0,
        check=check_erased,
        promise="WITHDRAWALS.CSV applied",
    ),
    Case(
        id="iom-withdrawals-bom-padded",
        partner=P,
        mutate=withdrawals_bom_padded,
        exit=0,
        check=check_erased,
        promise="withdrawals file from Excel (BOM, padded header) applied",
    ),
    Case(
        id="iom-too-many-fields",
        partner=P,
        mutate=too_many_fields,
        exit=1,
        names=[*FILE_AND, line(8)],
        promise="too many fields: located error (file, line 8)",
    ),
    Case(
        id="iom-too-few-fields",
        partner=P,
        mutate=too_few_fields,
        exit=None,
        names=[*FILE_AND, line(9)],
        promise="too few fields: located error or rejected row (open)",
    ),
    Case(
        id="iom-unclosed-quote-at-end",
        partner=P,
        mutate=unclosed_quote_at_end,
        exit=1,
        names=[*FILE_AND, line(62)],
        promise="unclosed quote: located error (line 62)",
    ),
    Case(
        id="iom-row-shifted-right",
        partner=P,
        mutate=shifted_row,
        exit=1,
        names=[*FILE_AND, line(13)],
        promise="a row shifted one cell right: located error (line 13)",
    ),
    Case(
        id="iom-duplicate-header",
        partner=P,
        mutate=duplicate_header,
        exit=1,
        names=[*FILE_AND, "nationality"],
        promise="duplicate column name is an error naming it",
    ),
    Case(
        id="iom-latin1-file",
        partner=P,
        mutate=latin1,
        exit=1,
        names=[*FILE_AND, line(12)],
        promise="not UTF-8: located error (line 12)",
    ),
    Case(
        id="iom-semicolon-delimited",
        partner=P,
        mutate=semicolons,
        exit=None,
        names=FILE_AND,
        promise="semicolon CSV: error naming the file, or handled (open)",
    ),
    Case(
        id="iom-nul-byte-in-note",
        partner=P,
        mutate=nul_byte,
        exit=None,
        names=[*FILE_AND, line(8)],
        promise="a NUL byte in a dropped note (open): no traceback, no leak",
    ),
    Case(
        id="iom-empty-file",
        partner=P,
        mutate=empty_file,
        exit=None,
        names=FILE_AND,
        promise="0-byte file (open)",
    ),
    Case(
        id="iom-header-only",
        partner=P,
        mutate=header_only,
        exit=1,
        names=[*FILE_AND, "no data rows"],
        promise="no data rows: an error naming partner and file (a failed export, not 0 cases)",
    ),
    Case(
        id="iom-name-in-coded-field",
        partner=P,
        mutate=in_cell("legacy_sex", NAME, "LEGACY"),
        exit=1,
        names=[f"'{P}'", "legacy_sex"],
        promise="coverage gate names the field, never the name",
    ),
    Case(
        id="iom-phone-in-country-field",
        partner=P,
        mutate=in_cell("nationality", PHONE),
        exit=1,
        names=[f"'{P}'", "nationality"],
        promise="coverage gate never quotes a phone number",
    ),
    Case(
        id="iom-email-in-coded-field",
        partner=P,
        mutate=in_cell("mimosa_gender", EMAIL, "MIMOSA"),
        exit=1,
        names=[f"'{P}'", "mimosa_gender"],
        promise="coverage gate never quotes an e-mail",
    ),
    Case(
        id="iom-dob-in-multiselect",
        partner=P,
        mutate=in_cell("type_of_exploitation", DOB),
        exit=1,
        names=[f"'{P}'", "type_of_exploitation"],
        promise="coverage gate never quotes a date of birth",
    ),
    Case(
        id="iom-surnames-shifted-into-coded",
        partner=P,
        mutate=last_names_shifted,
        exit=1,
        names=[f"'{P}'", "legacy_sex"],
        promise="a shifted name column never reaches the message",
    ),
    Case(
        id="iom-formulas-escaped",
        partner=P,
        mutate=formulas,
        exit=0,
        promise="formula-like values escaped in every CSV report",
    ),
    Case(
        id="iom-rare-unknowns-withheld",
        partner=P,
        mutate=rare_values,
        exit=0,
        promise="unknown values seen < 5 times never listed",
    ),
    Case(
        id="iom-shifted-column-withheld",
        partner=P,
        mutate=shifted_column_withheld,
        exit=0,
        check=says_withheld("legacy_sex"),
        promise="shifted column: N distinct values withheld",
    ),
    Case(
        id="iom-same-name-every-row-withheld",
        partner=P,
        mutate=same_name_every_row,
        exit=0,
        promise="a column that is mostly unknown is withheld even if k >= 5",
    ),
    Case(
        id="iom-frequent-unknown-listed",
        partner=P,
        mutate=frequent_unknown,
        exit=0,
        check=lists_frequent,
        promise="a category seen >= 5 times is listed for the data officer",
    ),
    Case(
        id="iom-withdrawal-unknown-id",
        partner=P,
        mutate=withdrawal_unknown_id,
        exit=1,
        names=[f"'{P}'", "withdrawals.csv"],
        promise="a withdrawal that matches no record is an error",
    ),
    Case(
        id="iom-withdrawals-wrong-column",
        partner=P,
        mutate=withdrawal_wrong_column,
        exit=1,
        names=[f"'{P}'", "withdrawals.csv", "record_id"],
        promise="withdrawals without record_id column is an error",
    ),
    Case(
        id="iom-withdrawals-is-directory",
        partner=P,
        mutate=withdrawals_directory,
        exit=1,
        names=[f"'{P}'", "withdrawals"],
        promise="unreadable withdrawals: clear error",
    ),
    Case(
        id="iom-withdrawals-not-utf8",
        partner=P,
        mutate=withdrawals_not_utf8,
        exit=1,
        names=[f"'{P}'", "withdrawals.csv"],
        promise="undecodable withdrawals: clear error, no value",
    ),
    Case(
        id="iom-symlinked-extract",
        partner=P,
        mutate=symlinked_extract,
        exit=1,
        names=[f"'{P}'", IOM_FILE],
        promise="symlink escaping the landing folder refused",
    ),
    Case(
        id="iom-symlinked-partner-folder",
        partner=P,
        mutate=symlinked_partner_folder,
        exit=1,
        names=[P],
        promise="partner folder symlinked from elsewhere refused",
    ),
    Case(
        id="iom-symlinked-withdrawals",
        partner=P,
        mutate=symlinked_withdrawals,
        exit=1,
        names=[f"'{P}'", "withdrawals.csv"],
        promise="withdrawals symlinked from elsewhere refused",
    ),
    Case(
        id="iom-second-file-symlinked-outside",
        partner=P,
        mutate=second_extract_via_symlink,
        exit=1,
        names=[f"'{P}'", "iom_case_export_2024.csv"],
        promise="extra extract symlinked from elsewhere refused, not skipped",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_iom(case, corpus_env, capsys, caplog):
    run_case(case, corpus_env(case), capsys, caplog)


def test_rejects_keep_their_physical_line(corpus_env, capsys, caplog):
    """Sanity of the harness on pristine input: the planted reject is found at its line."""
    case = Case(id="iom-planted-reject", partner=P, mutate=lambda env: None, exit=0)
    env = corpus_env(case)
    t = table(env)
    case_no = plant_reject(env, t)
    t.write()
    env.expect_rejected(IOM_FILE, *lines_of(env, case_no))
    result = run_case(case, env, capsys, caplog)
    assert any(r["file"] == IOM_FILE for r in rejected_rows(result))
