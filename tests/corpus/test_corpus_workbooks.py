"""Bad-input corpus, workbooks as NGO staff make them (issue 15): partner `case_management`.

The consent cases are the point: a survivor who refused consent must never be published,
whether the refusal is a formula whose result was never stored, a "No" typed once across a
merged block, or an error value. Every refusing record is given a registration year no other
record has (REFUSED_YEAR) but one consenting control, so "not in the release" is checked on
the published table itself.
The same mutations go through `dag.test()` in test_corpus_airflow.py.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import zipfile

import pytest

from ctdc_harmonizer.ingest.workbook import column_letters
from support.corpus import HTCDS_FILE, NAME, Case, Env, RunResult, Workbook, case_ids, run_case

P = "case_management"
CONSENT = "con_Consent"
# The release year: no partner's sample registers a record in it (all stop in 2024), yet it
# is publishable; one consenting control record (CONTROL_ROW) carries it too, so the check
# "no record of that year is released" is seen to be able to fail.
REFUSED_YEAR = 2025
REFUSED_DATE = dt.datetime(REFUSED_YEAR, 3, 15)
CONTROL_ROW = 20
FORMULA_ROWS = (5, 6)
MERGED_ROWS = tuple(range(8, 13))
ERROR_ROWS = (14, 15)
CACHED_ROWS = (17,)


def book(env: Env) -> Workbook:
    return Workbook(env.path(P, HTCDS_FILE))


def refusing(env: Env, w: Workbook, row: int, name: str) -> None:
    """A record that must never be published: consenting otherwise, marked by its year, a
    planted name in its identifier field."""
    w.set(row, "vic_TraffickingStatus", "Actual victim of trafficking")
    w.set(row, "cas_IncomingReferralDate", REFUSED_DATE)
    w.set(row, "prs_FirstName", env.plant(name))


def formula_without_result(env: Env, w: Workbook) -> None:
    for row in FORMULA_ROWS:  # openpyxl stores a formula without its result, as tools do
        refusing(env, w, row, f"Qorbformula{row}")
        w.sheet.cell(row=row, column=w.col(CONSENT)).value = '=IF(TRUE,"No","Yes")'
        env.expect_rejected(HTCDS_FILE, row)


def merged_block(env: Env, w: Workbook) -> None:
    c = w.col(CONSENT)
    for row in MERGED_ROWS:
        refusing(env, w, row, f"Qorbmerged{row}")
    w.sheet.cell(row=MERGED_ROWS[0], column=c).value = "No"
    w.sheet.merge_cells(
        start_row=MERGED_ROWS[0], start_column=c, end_row=MERGED_ROWS[-1], end_column=c
    )


def error_cells(env: Env, w: Workbook) -> None:
    for row, code in zip(ERROR_ROWS, ("#N/A", "#REF!"), strict=True):
        refusing(env, w, row, f"Qorberror{row}")
        w.sheet.cell(row=row, column=w.col(CONSENT)).value = code  # an error cell
        env.expect_rejected(HTCDS_FILE, row)


def all_consent_cases(env: Env) -> None:
    """The three consent failures of issue 15 in one workbook (the DAG runs this)."""
    w = book(env)
    formula_without_result(env, w)
    merged_block(env, w)
    error_cells(env, w)
    control(w)
    w.save()


def control(w: Workbook) -> None:
    """A consenting record of REFUSED_YEAR: it must be released."""
    w.set(CONTROL_ROW, CONSENT, "Yes")
    w.set(CONTROL_ROW, "vic_TraffickingStatus", "Actual victim of trafficking")
    w.set(CONTROL_ROW, "cas_IncomingReferralDate", REFUSED_DATE)


def _one(mutation):
    def mutate(env: Env) -> None:
        w = book(env)
        mutation(env, w)
        control(w)
        w.save()

    return mutate


def cached_result(env: Env) -> None:
    """A consent formula whose result Excel stored ("No"): read through it, excluded."""
    w = book(env)
    for row in CACHED_ROWS:
        refusing(env, w, row, f"Qorbcached{row}")
        w.sheet.cell(row=row, column=w.col(CONSENT)).value = '=IF(TRUE,"No","Yes")'
    control(w)
    w.save()
    path = env.path(P, HTCDS_FILE)
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    xml = parts["xl/worksheets/sheet1.xml"]
    # openpyxl writes an empty result as <v /> (its own XML writer) or <v></v> (with lxml)
    for empty in (b"<v />", b"<v></v>"):
        xml = xml.replace(
            b'<f>IF(TRUE,"No","Yes")</f>' + empty, b'<f>IF(TRUE,"No","Yes")</f><v>No</v>'
        )
    for row in CACHED_ROWS:
        ref = f'<c r="{column_letters(w.col(CONSENT))}{row}"'.encode()
        xml = xml.replace(ref + b">", ref + b' t="str">')
    parts["xl/worksheets/sheet1.xml"] = xml
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)


def refused_not_released(reason: str | None = None, excluded: str | None = None):
    """No refusing record (registered in REFUSED_YEAR) is in the published table, the
    consenting control is; the refusals are counted under the expected reason."""

    def check(result: RunResult) -> None:
        assert_no_refusing_record(result)
        import json

        recon = json.loads((result.release_dir / "reconciliation.json").read_text("utf-8"))
        entry = recon["partners"][P]["files"][HTCDS_FILE]
        if reason:
            assert entry["rejected"].get(reason, 0) >= 1, entry["rejected"]
            assert_unreadable_cells_counted(result, reason)
        if excluded:
            assert entry["excluded"].get(excluded, 0) >= 1, entry["excluded"]

    return check


def assert_no_refusing_record(result: RunResult) -> None:
    with (result.release_dir / "harmonized.csv").open(encoding="utf-8", newline="") as handle:
        years = [row["yearOfRegistration"] for row in csv.DictReader(handle)]
    assert years.count(str(REFUSED_YEAR)) == 1, (
        f"{years.count(str(REFUSED_YEAR))} records of {REFUSED_YEAR} released: only the "
        "consenting control may be (a record refusing consent was published)"
    )


def assert_unreadable_cells_counted(result: RunResult, reason: str) -> None:
    """metadata.json counts the workbook's unreadable cells per file and reason, as numbers
    (no cell value can be there), and the reconciliation holds the same counts."""
    import json

    metadata = json.loads((result.release_dir / "metadata.json").read_text("utf-8"))
    counted = metadata["partners"][P]["unreadable_cells"]
    assert set(counted) == {HTCDS_FILE}, counted
    assert counted[HTCDS_FILE].get(reason, 0) >= 1, counted
    assert all(isinstance(n, int) and n > 0 for n in counted[HTCDS_FILE].values())
    recon = json.loads((result.release_dir / "reconciliation.json").read_text("utf-8"))
    assert recon["partners"][P]["unreadable_cells"] == counted


def check_value_issue(result: RunResult, field: str, issue: str) -> None:
    with (result.release_dir / "value_issues.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert any(r["field"] == field and r["issue"] == issue for r in rows), rows
    assert re.search(r"cell [A-Z]+4 \(column 'prs_Gender'\): error_cell", result.logs)
    assert_unreadable_cells_counted(result, "error_cell")


def hidden_sheet_in_front(env: Env) -> None:
    """Last year's export, hidden, as the first sheet; this year's visible."""
    w = book(env)
    old = w.book.create_sheet("Export 2024", 0)
    for row in w.sheet.iter_rows(min_row=1, max_row=2, values_only=True):
        old.append(list(row))
    old.append([env.plant("Qorbhiddensheet")] * len(w.fields))
    old.sheet_state = "hidden"
    w.book.active = 1
    w.save()


def two_visible_sheets(env: Env) -> None:
    w = book(env)
    other = w.book.create_sheet("Export 2024", 0)
    other.append([env.plant("Qorbvisiblesheet")])
    w.save()


def formula_header(env: Env) -> None:
    w = book(env)
    w.sheet.cell(row=1, column=w.col(CONSENT)).value = '=CONCAT("con_","Consent")'
    w.sheet.cell(row=3, column=w.col("prs_FirstName")).value = env.plant("Qorbheader")
    w.save()


def error_in_coded_field(env: Env) -> None:
    """#N/A in a picklist column: unreadable, never read as empty nor as a value the mapping
    does not know: a value issue (gender NULL), the cell named in the run's log."""
    w = book(env)
    w.sheet.cell(row=4, column=w.col("prs_Gender")).value = "#N/A"
    w.sheet.cell(row=4, column=w.col("prs_FirstName")).value = env.plant("Qorbcoded")
    w.save()


def encrypted(env: Env) -> None:
    """A password-protected workbook: a compound file with EncryptionInfo (MS-OFFCRYPTO).
    Crafted, not written by Excel: the reader recognises the container, not a cipher."""
    path = env.path(P, HTCDS_FILE)
    directory = "EncryptionInfo".encode("utf-16-le").ljust(64, b"\0")
    path.write_bytes(
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 1016 + directory + NAME.encode() * 8
    )
    env.plant(NAME)


def compression_bomb(env: Env) -> None:
    """A small file that unpacks to hundreds of times its size."""
    path = env.path(P, HTCDS_FILE)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/image1.bin", b"\0" * (48 << 20))


CASES = [
    Case(
        id="workbook-consent-formula-without-result",
        partner=P,
        mutate=_one(formula_without_result),
        exit=0,
        check=refused_not_released(reason="formula_without_result"),
        promise="a consent formula without a stored result rejects its record, located",
    ),
    Case(
        id="workbook-consent-merged-block",
        partner=P,
        mutate=_one(merged_block),
        exit=0,
        check=refused_not_released(excluded="consent_refused"),
        promise="a 'No' merged across a block refuses every row it covers",
    ),
    Case(
        id="workbook-consent-error-cell",
        partner=P,
        mutate=_one(error_cells),
        exit=0,
        check=refused_not_released(reason="error_cell"),
        promise="an error value in consent rejects its record",
    ),
    Case(
        id="workbook-consent-cached-result",
        partner=P,
        mutate=cached_result,
        exit=0,
        check=refused_not_released(excluded="consent_refused"),
        promise="a consent formula is read through its stored result",
    ),
    Case(
        id="workbook-consent-all-three",
        partner=P,
        mutate=all_consent_cases,
        exit=0,
        check=refused_not_released(reason="error_cell", excluded="consent_refused"),
        promise="the three consent failures together (as the DAG case)",
    ),
    Case(
        id="workbook-hidden-sheet-in-front",
        partner=P,
        mutate=hidden_sheet_in_front,
        exit=0,
        promise="a hidden sheet is never read by position",
    ),
    Case(
        id="workbook-two-visible-sheets",
        partner=P,
        mutate=two_visible_sheets,
        exit=1,
        names=[HTCDS_FILE, "visible sheets"],
        promise="an ambiguous data sheet is refused",
    ),
    Case(
        id="workbook-formula-in-header",
        partner=P,
        mutate=formula_header,
        exit=1,
        names=[HTCDS_FILE, "formula without a stored result", "Case Sheet"],
        promise="a column name without a stored result is a located error",
    ),
    Case(
        id="workbook-error-in-coded-field",
        partner=P,
        mutate=error_in_coded_field,
        exit=0,
        check=lambda result: check_value_issue(result, "prs_Gender", "unreadable_value"),
        promise="an error value in a picklist is unreadable, never empty",
    ),
    Case(
        id="workbook-encrypted",
        partner=P,
        mutate=encrypted,
        exit=1,
        names=[HTCDS_FILE, "encrypted workbook: save it without a password"],
        promise="an encrypted workbook says so",
    ),
    Case(
        id="workbook-compression-bomb",
        partner=P,
        mutate=compression_bomb,
        exit=1,
        names=[HTCDS_FILE, "reader_limits_v1.yaml"],
        promise="a compression bomb is refused before decompressing",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_workbook_case(case: Case, corpus_env, capsys, caplog) -> None:
    run_case(case, corpus_env(case), capsys, caplog)
