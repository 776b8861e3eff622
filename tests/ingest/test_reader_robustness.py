"""Messy and hostile extracts at the reader: located, value-free errors; tolerant reading
where careful users expect it; per-row rejects that reconcile; the landing folder as a
trust boundary.

Every test that plants bad input also plants an invented identifier and checks that it
appears in no exception message and no log line.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook

from ctdc_harmonizer import cli
from ctdc_harmonizer.columns import REJECT, ROW
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest import delimited
from ctdc_harmonizer.ingest.deidentify import deidentify
from ctdc_harmonizer.ingest.extract import read_extract
from ctdc_harmonizer.ingest.files import find_extract_files
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.run.file_check import harmonize_file
from ctdc_harmonizer.samples import case_management
from support.tiny_partner import COLUMNS, row, write_extract, write_partner

REPO = Path(__file__).resolve().parents[2]
HOTLINE = load_partner(REPO / "mappings" / "hotline")
CASE_MANAGEMENT = load_partner(REPO / "mappings" / "case_management")
# Invented identifiers: not a real person, so any hit in a message is a leak.
NAME = "Zorbulina Quixhaven"
PHONE = "+99 555 0199 7731"


def tiny(tmp_path: Path):
    return load_partner(write_partner(tmp_path))


def csv_text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


HEADER = ",".join(COLUMNS)


def record(**values: str) -> str:
    """One CSV line of the tiny partner (no quoting needed for the values used here)."""
    return ",".join(row(**values)[c] for c in COLUMNS)


def read_error(config, path: Path, caplog) -> ExtractError:
    with caplog.at_level(logging.DEBUG), pytest.raises(ExtractError) as err:
        read_extract(config, path)
    message = str(err.value)
    for planted in (NAME, PHONE):
        assert planted not in message
        assert planted not in caplog.text
    # No library exception (whose text may quote the file) chained to ours, for tracebacks.
    assert err.value.__cause__ is None
    assert err.value.__context__ is None or err.value.__suppress_context__
    return err.value


def landing_file(tmp_path: Path, text: str | bytes, name: str = "extract.csv") -> Path:
    folder = tmp_path / "landing" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- CSV: located parse errors -------------------------------------------------------------


def test_csv_row_with_too_many_fields_names_its_line(tmp_path, caplog):
    config = tiny(tmp_path)
    lines = [HEADER, record(case_id="A1"), record(case_id="A2"), record(case_id="A3") + f",{NAME}"]
    error = read_error(config, landing_file(tmp_path, csv_text(lines)), caplog)
    assert error.row == 4 and error.file == "extract.csv" and error.partner == "tiny"
    assert f"has {len(COLUMNS) + 1} fields, the header has {len(COLUMNS)}" in str(error)


def test_csv_row_with_too_few_fields_names_its_line_after_a_multiline_note(tmp_path, caplog):
    config = tiny(tmp_path)
    note = f'"first line\nsecond line {NAME}"'
    lines = [HEADER, record(case_id="A1", note=note), f"A2,{NAME}"]
    error = read_error(config, landing_file(tmp_path, csv_text(lines)), caplog)
    assert error.row == 4  # physical line: the note spans lines 2 and 3


def test_csv_unclosed_quote_is_located_not_swallowed(tmp_path, caplog):
    """pyarrow reads an unclosed quote as one cell holding the rest of the file."""
    config = tiny(tmp_path)
    lines = [
        HEADER,
        record(case_id="A1"),
        record(case_id="A2", note=f'"{NAME} never closed'),
        record(case_id="A3"),
        record(case_id="A4"),
    ]
    error = read_error(config, landing_file(tmp_path, csv_text(lines)), caplog)
    assert error.row == 3 and "quot" in error.problem


def test_csv_stray_quote_inside_a_cell_is_read(tmp_path):
    config = tiny(tmp_path)
    lines = [HEADER, record(case_id="A1", note='5" screen'), record(case_id="A2")]
    frame = read_extract(config, landing_file(tmp_path, csv_text(lines))).frame
    assert frame[ROW].tolist() == [2, 3]


def test_csv_invalid_utf8_names_its_line(tmp_path, caplog):
    config = tiny(tmp_path)
    text = csv_text([HEADER, record(case_id="A1"), record(case_id="A2", note=NAME)])
    data = text.encode().replace(NAME.encode(), NAME.encode() + b"\xff\xfe")
    error = read_error(config, landing_file(tmp_path, data), caplog)
    assert error.row == 3 and "utf-8" in error.problem


def test_csv_row_numbers_are_physical_lines(tmp_path):
    """A note with line breaks spans lines; blank lines are not records. `_row` is the first
    line of a record, as an editor shows it, also in the rejects."""
    config = tiny(tmp_path)
    lines = [
        HEADER,
        record(case_id="A1", note='"one\ntwo\nthree"'),  # lines 2-4
        "",  # line 5
        record(case_id="A2"),  # line 6
        record(case_id="A3", registered_on="", note='"a\r\nb"'),  # lines 7-8: rejected
        "",
        "",
        record(case_id="A4"),  # line 11
    ]
    path = landing_file(tmp_path, csv_text(lines))
    result = harmonize_file(config, path, year_max=2025)
    assert result.outcomes[ROW].tolist() == [2, 6, 7, 11]
    rejected = result.outcomes[result.outcomes["outcome"] == "rejected"]
    assert rejected[[ROW, "reason"]].values.tolist() == [[7, "missing_year_of_registration"]]


def test_csv_row_numbers_with_crlf_and_quotes_in_unquoted_cells(tmp_path):
    config = tiny(tmp_path)
    lines = [HEADER, record(case_id="A1", note='12" tall'), "", record(case_id="A2")]
    path = landing_file(tmp_path, "\r\n".join(lines) + "\r\n")
    assert read_extract(config, path).frame[ROW].tolist() == [2, 4]


# --- CSV: tolerant reading and header checks ----------------------------------------------


def test_utf8_bom_and_padded_header_names_are_read(tmp_path):
    config = tiny(tmp_path)
    header = ",".join(f"  {c} " if i % 2 else c for i, c in enumerate(COLUMNS))
    text = csv_text([header, record(case_id="A1", gender="F", nationality="Serbia")])
    path = landing_file(tmp_path, b"\xef\xbb\xbf" + text.encode("utf-8"))
    frame = deidentify(config, read_extract(config, path).frame)
    assert frame[["gender", "nationality"]].values.tolist() == [["F", "Serbia"]]
    assert frame[ROW].tolist() == [2]


def test_duplicate_header_name_is_an_error_naming_the_column(tmp_path, caplog):
    config = tiny(tmp_path)
    header = HEADER.replace("full_name", "gender")
    path = landing_file(tmp_path, csv_text([header, record(full_name=NAME, gender="F")]))
    error = read_error(config, path, caplog)
    assert error.column == "gender" and "more than once" in error.problem


def test_decomposed_unicode_country_resolves_like_composed(tmp_path):
    config = tiny(tmp_path)
    nfc = "Côte d'Ivoire"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    rows = [row(case_id="A1", nationality=nfd), row(case_id="A2", nationality=nfc)]
    path = write_extract(tmp_path, rows)
    result = harmonize_file(config, path, year_max=2025)
    assert result.harmonized["citizenship"].tolist() == ["CIV", "CIV"]
    assert result.unmapped.empty


# --- Implausible ages -----------------------------------------------------------------------


@pytest.mark.parametrize("age", ["999", "150", "121", "-3"])
def test_implausible_age_is_a_value_issue_not_48_plus(tmp_path, age):
    config = tiny(tmp_path)
    path = write_extract(tmp_path, [row(case_id="A1", age=age), row(case_id="A2", age="120")])
    result = harmonize_file(config, path, year_max=2025)
    ages = result.harmonized["ageBroad"]
    assert pd.isna(ages.iloc[0]) and ages.iloc[1] == "48+"
    issues = result.issues.set_index(["field", "issue"])["count"]
    assert issues.loc[("age", "invalid_age")] == 1


def test_birthdate_giving_an_age_over_120_is_a_value_issue(tmp_path):
    config = tiny(tmp_path)
    path = write_extract(tmp_path, [row(case_id="A1", born_on="1850-01-01")])
    result = harmonize_file(config, path, year_max=2025)
    assert result.harmonized["ageBroad"].isna().all()
    assert result.issues.set_index(["field", "issue"])["count"].loc[("born_on", "invalid_age")] == 1


# --- JSON lines -----------------------------------------------------------------------------


def report(number: int, **values) -> dict:
    base = dict.fromkeys((f.name for f in HOTLINE.fields), "")
    base |= {
        "report_id": f"HL-20-{number:07d}",
        "report_date": "2020-05-04T09:00:00",
        "caller_name": NAME,
        "caller_phone": PHONE,
        "victim_name": NAME.split()[0],
        "victim_gender": "Female",
        "victim_age_range": "30-34",
        "victim_citizenship": ["Mexico"],
        "trafficking_type": "Labor",
        "industries": [],
        "control_methods": [],
        "recruiter_relations": [],
        "exploitation_country": "United States",
        "narrative": f"{NAME} called about a cousin",
    }
    base |= values
    return base


def hotline_file(tmp_path: Path, lines: list[str]) -> Path:
    folder = tmp_path / "landing" / "hotline"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hotline_reports_2020.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_malformed_json_line_is_located_after_blank_lines(tmp_path, caplog):
    lines = [json.dumps(report(1)), "", json.dumps(report(2)), json.dumps(report(3))[:-5], ""]
    error = read_error(HOTLINE, hotline_file(tmp_path, lines), caplog)
    assert error.row == 4 and "not valid JSON" in error.problem


def test_json_line_that_is_not_an_object_is_located(tmp_path, caplog):
    lines = [json.dumps(report(1)), json.dumps([NAME, PHONE])]
    error = read_error(HOTLINE, hotline_file(tmp_path, lines), caplog)
    assert error.row == 2 and "not a JSON object" in error.problem


@pytest.mark.parametrize("wrong", [False, True])
def test_json_keys_padded_with_spaces_are_read(tmp_path, wrong):
    records = [{f" {k} ": v for k, v in report(1).items()}, report(2)]
    if wrong:  # the line-by-line path too
        records.append(report(3, victim_gender={"x": NAME}))
    frame = read_extract(HOTLINE, hotline_file(tmp_path, [json.dumps(r) for r in records])).frame
    assert frame["victim_gender"].tolist()[:2] == ["Female", "Female"]


def test_json_blank_lines_keep_physical_row_numbers(tmp_path):
    lines = ["", json.dumps(report(1)), "   ", "", json.dumps(report(2)), json.dumps(report(3))]
    frame = read_extract(HOTLINE, hotline_file(tmp_path, lines)).frame
    assert frame[ROW].tolist() == [2, 5, 6]
    assert frame[REJECT].isna().all()


@pytest.mark.parametrize("where", [0, 2])
def test_json_key_given_twice_is_located(tmp_path, caplog, where):
    """json.loads keeps the last of two equal keys and pyarrow refuses the file: the slow path
    must name the line and key, not read whichever value came last."""
    lines = [json.dumps(report(i)) for i in range(1, 4)]
    lines[where] = lines[where][:-1] + f', "victim_gender": "{NAME}"}}'
    error = read_error(HOTLINE, hotline_file(tmp_path, ["", *lines]), caplog)
    assert (error.row, error.column) == (where + 2, "victim_gender")
    assert "more than once" in error.problem


def test_json_nested_object_with_a_repeated_key_is_rejected_alone(tmp_path):
    nested = json.dumps(report(2))[:-1] + ', "victim_gender": {"x": 1, "x": 2}}'
    nested = nested.replace('"victim_gender": "Female", ', "")
    frame = read_extract(HOTLINE, hotline_file(tmp_path, [json.dumps(report(1)), nested])).frame
    assert frame[REJECT].tolist()[1] == "wrong_type"


def test_header_only_extract_is_an_error_naming_the_file(tmp_path, caplog):
    config = tiny(tmp_path)
    error = read_error(config, landing_file(tmp_path, csv_text([HEADER, "", ""])), caplog)
    assert (error.partner, error.file, error.row) == ("tiny", "extract.csv", None)
    assert "no data rows" in error.problem


WRONG_TYPES = {
    "victim_citizenship": "Mexico",  # a string where an array is expected
    "report_date": 1588582800,  # an epoch number where a date is expected
    "victim_gender": {"label": NAME},  # a nested object where text is expected
    "industries": [{"name": NAME}],  # an array of objects
}


def test_wrongly_typed_json_records_are_rejected_alone(tmp_path, caplog):
    lines = [json.dumps(report(0))]
    for i, (field, value) in enumerate(WRONG_TYPES.items(), start=1):
        lines += ["", json.dumps(report(i, **{field: value}))]
    lines.append(json.dumps(report(9)))
    path = hotline_file(tmp_path, lines)
    with caplog.at_level(logging.DEBUG):
        result = harmonize_file(HOTLINE, path, year_max=2025)
    outcomes = result.outcomes
    rejected = outcomes[outcomes["outcome"] == "rejected"]
    assert rejected[[ROW, "reason", "column"]].values.tolist() == [
        [3, "wrong_type", "victim_citizenship"],
        [5, "wrong_type", "report_date"],
        [7, "wrong_type", "victim_gender"],
        [9, "wrong_type", "industries"],
    ]
    assert outcomes.loc[outcomes["outcome"] == "harmonized", ROW].tolist() == [1, 10]
    assert NAME not in caplog.text
    assert not result.unmapped["source_value"].astype(str).str.contains("Zorbulina").any()


def test_json_file_wrong_in_every_record_is_an_error(tmp_path, caplog):
    lines = [json.dumps(report(i, victim_gender={"name": NAME})) for i in range(3)]
    error = read_error(HOTLINE, hotline_file(tmp_path, lines), caplog)
    assert error.column == "victim_gender" and error.row == 1


def test_json_slow_path_reads_values_like_the_fast_path(tmp_path):
    """A record with a wrong type sends the file down the line-by-line path; the other
    records must come out exactly as the vectorised path reads them."""
    good = [
        report(1, victim_citizenship=["Mexico", "Guatemala"], industries=["Agriculture"]),
        report(2, victim_age_range="50+", report_date="2021-01-02"),
        report(3, trafficking_type="Sex", victim_gender=None),
    ]
    fast = read_extract(HOTLINE, hotline_file(tmp_path / "a", [json.dumps(r) for r in good]))
    mixed = [json.dumps(r) for r in good] + [json.dumps(report(4, victim_gender=["x"]))]
    slow = read_extract(HOTLINE, hotline_file(tmp_path / "b", mixed))
    fast_staged = deidentify(HOTLINE, fast.frame)
    slow_staged = deidentify(HOTLINE, slow.frame).iloc[:3]
    columns = [c for c in fast_staged.columns if c != "_file"]
    pd.testing.assert_frame_equal(
        fast_staged[columns].astype(str), slow_staged[columns].astype(str), check_dtype=False
    )


def test_json_rejects_reconcile_in_a_full_run(tmp_path, caplog):
    lines = [json.dumps(report(1)), "", json.dumps(report(2, report_date=1588582800))]
    lines += [json.dumps(report(3, victim_citizenship="Mexico")), json.dumps(report(4))]
    hotline_file(tmp_path, lines)
    with caplog.at_level(logging.DEBUG):
        run_annual_update(
            str(tmp_path / "landing"),
            str(tmp_path / "out"),
            "2025",
            partners=["hotline"],
            warehouse_url=f"sqlite:///{tmp_path}/w.sqlite",
            workers=1,
        )
    recon = json.loads((tmp_path / "out" / "2025" / "reconciliation.json").read_text())
    totals = recon["totals"]
    assert recon["invariant_holds"] and totals["rows_read"] == 4  # the physical data rows
    assert totals["harmonized"] == 2 and totals["rejected"] == 2
    files = recon["partners"]["hotline"]["files"]["hotline_reports_2020.jsonl"]
    assert files["rejected"] == {"wrong_type": 2}
    assert NAME not in caplog.text and PHONE not in caplog.text
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and path.suffix in {".csv", ".json", ".txt", ".md"}:
            assert NAME not in path.read_text(encoding="utf-8", errors="replace"), path


# --- Excel: the HTCDS label row -----------------------------------------------------------


def htcds_workbook(tmp_path: Path, delete_label_row: bool, duplicate: bool = False) -> Path:
    # The sample also delivers a withdrawals file: the workbook is the extract.
    (path,) = [
        p for p in case_management.generate(tmp_path / "landing", 20, 3) if p.suffix == ".xlsx"
    ]
    book = load_workbook(path)
    sheet = book.active
    sheet.cell(row=3, column=4, value=NAME)  # prs_FirstName of the first record
    if duplicate:  # prs_Salutation renamed: two columns now claim to be the first name
        sheet.cell(row=1, column=3, value=" prs_FirstName ")
    if delete_label_row:
        sheet.delete_rows(2)
    book.save(path)
    return path


def test_duplicate_column_name_in_a_sheet_is_an_error(tmp_path, caplog):
    path = htcds_workbook(tmp_path, delete_label_row=False, duplicate=True)
    error = read_error(CASE_MANAGEMENT, path, caplog)
    assert error.column == "prs_FirstName" and "more than once" in error.problem


def test_htcds_sheet_without_its_label_row_is_a_clear_error(tmp_path, caplog):
    path = htcds_workbook(tmp_path, delete_label_row=True)
    error = read_error(CASE_MANAGEMENT, path, caplog)
    assert error.row == 2 and "label row" in error.problem


def test_htcds_sheet_with_its_label_row_reads_from_row_3(tmp_path):
    path = htcds_workbook(tmp_path, delete_label_row=False)
    frame = read_extract(CASE_MANAGEMENT, path).frame
    assert frame[ROW].iloc[0] == 3 and len(frame) + frame[ROW].iloc[0] - 1 <= 22


# --- The landing folder is a trust boundary ------------------------------------------------


def test_symlinked_file_is_refused(tmp_path, caplog):
    config = tiny(tmp_path)
    outside = tmp_path / "elsewhere" / "secrets.csv"
    outside.parent.mkdir()
    outside.write_text(csv_text([HEADER, record(full_name=NAME)]), encoding="utf-8")
    folder = tmp_path / "landing" / "tiny"
    folder.mkdir(parents=True)
    (folder / "extract.csv").symlink_to(outside)
    with caplog.at_level(logging.DEBUG), pytest.raises(ExtractError) as err:
        find_extract_files(config, tmp_path / "landing")
    assert err.value.file == "extract.csv" and "symbolic link" in err.value.problem
    assert NAME not in str(err.value) + caplog.text


def test_symlinked_partner_folder_is_refused(tmp_path):
    config = tiny(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "extract.csv").write_text(csv_text([HEADER, record()]), encoding="utf-8")
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "tiny").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ExtractError, match="symbolic link"):
        find_extract_files(config, tmp_path / "landing")


def test_symlinked_landing_root_is_allowed(tmp_path):
    config = tiny(tmp_path)
    write_extract(tmp_path, [row()])
    (tmp_path / "alias").symlink_to(tmp_path / "landing", target_is_directory=True)
    assert [p.name for p in find_extract_files(config, tmp_path / "alias")] == ["extract.csv"]


@pytest.mark.parametrize("small_file_bytes", [0, delimited.SMALL_FILE_BYTES])
def test_unreadable_file_is_a_clear_error(tmp_path, monkeypatch, caplog, small_file_bytes):
    """Denied while pyarrow reads it (a large file) or while Python's csv module does."""
    config = tiny(tmp_path)
    path = write_extract(tmp_path, [row(full_name=NAME)])
    from pyarrow import csv as pacsv

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(delimited, "SMALL_FILE_BYTES", small_file_bytes)
    monkeypatch.setattr(pacsv, "read_csv", denied)
    monkeypatch.setattr(Path, "read_bytes", denied)
    error = read_error(config, path, caplog)
    assert (
        error.file == "extract.csv"
        and error.problem == "cannot be opened: EACCES (Permission denied)"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission_is_a_clear_error(tmp_path, caplog):
    config = tiny(tmp_path)
    path = write_extract(tmp_path, [row(full_name=NAME)])
    path.chmod(0)
    try:
        error = read_error(config, path, caplog)
    finally:
        path.chmod(0o600)
    assert "EACCES (Permission denied)" in error.problem


def test_unlistable_partner_folder_is_a_clear_error(tmp_path, monkeypatch):
    config = tiny(tmp_path)
    write_extract(tmp_path, [row()])

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(ExtractError, match=r"cannot be listed: EACCES \(Permission denied\)"):
        find_extract_files(config, tmp_path / "landing")


def test_cli_reports_a_located_parse_error_without_traceback_or_values(tmp_path, capsys):
    lines = [json.dumps(report(1)), "", json.dumps(report(2)).replace('"Female"', "Female")]
    hotline_file(tmp_path, lines)
    code = cli.main(
        [
            "run",
            "--landing",
            str(tmp_path / "landing"),
            "--out",
            str(tmp_path / "out"),
            "--release",
            "2025",
            "--partners",
            "hotline",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip().endswith(
        "ctdc: error: partner 'hotline', file 'hotline_reports_2020.jsonl', row 3: "
        "this line is not valid JSON"
    )
    output = captured.out + captured.err
    assert "Traceback" not in output and NAME not in output and PHONE not in output


def test_folder_named_like_an_extract_is_an_error_not_skipped(tmp_path):
    config = tiny(tmp_path)
    write_extract(tmp_path, [row()])
    (tmp_path / "landing" / "tiny" / "more.csv").mkdir()
    with pytest.raises(ExtractError, match="is not a file"):
        find_extract_files(config, tmp_path / "landing")


SMALL_CSV_CASES = {
    "plain": f"{HEADER}\n{record(case_id='A1')}\n{record(case_id='A2')}\n",
    "crlf_no_final_break": f"{HEADER}\r\n{record(case_id='A1')}\r\n{record(case_id='A2')}",
    "blank_lines": f"{HEADER}\n\n{record(case_id='A1')}\n\r\n\n{record(case_id='A2')}\n\n",
    "byte_order_mark": f"\ufeff{HEADER}\n{record(case_id='A1')}\n",
    "quoted_line_break": (
        f"{HEADER}\n"
        + record(case_id="A1", note="NOTE").replace("NOTE", '"first\nsecond ""quoted"""')
        + f"\n{record(case_id='A2')}\n"
    ),
    "quote_inside_unquoted_cells": (
        f"{HEADER}\n" + record(case_id="A1", note="NOTE").replace("NOTE", 'five 5\'11" tall"')
    ),
    "empty_and_quoted_empty_cells": (
        f"{HEADER}\n" + record(case_id="A1", note="NOTE", age="").replace("NOTE", '""') + "\n"
    ),
}


@pytest.mark.parametrize("case", sorted(SMALL_CSV_CASES))
def test_small_csv_files_read_as_pyarrow_reads_them(tmp_path, monkeypatch, case):
    """A small file (Python's csv module) gives the cells and line numbers a large one
    (pyarrow) would."""
    config = tiny(tmp_path)
    path = tmp_path / "landing" / "tiny" / "extract.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SMALL_CSV_CASES[case].encode("utf-8"))
    from pyarrow import csv as pacsv

    with monkeypatch.context() as patched:  # the small path only: pyarrow is not called
        patched.setattr(pacsv, "read_csv", None)
        small = read_extract(config, path, all_columns=True).frame
    monkeypatch.setattr(delimited, "SMALL_FILE_BYTES", -1)
    large = read_extract(config, path, all_columns=True).frame
    pd.testing.assert_frame_equal(small, large)
    assert len(small) >= 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"{HEADER}\n{record(case_id='A1')},extra\n", "this record has"),
        (f'{HEADER}\n"{record(case_id="A1")}\n', "malformed quoting"),
    ],
)
def test_small_csv_problems_are_located_as_before(tmp_path, caplog, text, problem):
    config = tiny(tmp_path)
    path = tmp_path / "landing" / "tiny" / "extract.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    error = read_error(config, path, caplog)
    assert problem in error.problem and error.row == 2


def test_null_values_are_found_as_normalize_token_finds_them():
    # as_strings decides most null markers without a Python call per value (ASCII text with
    # single spaces: lowercased); it must agree with normalize_series on every other value:
    # Unicode and control whitespace, runs of spaces, casefold beyond ASCII.
    import itertools
    import random

    from ctdc_harmonizer.ingest.extract import _is_null_key
    from ctdc_harmonizer.text import nfc, normalize_series, normalize_token

    nulls = ["", "N/A", "null", "not known", "ß", "İ", "Ⅸ", "n.a."]
    keys = [normalize_token(v) for v in nulls]
    spaces = [" ", "  ", "\t", "\n", "\x0b", "\x1c", "\x1f", "\u00a0", "\u2003", "\x85"]
    rng = random.Random(7)
    values = [*nulls, "NULL", "Null ", "n/a", "x", "1", "Côte", "SS", "ss", "i\u0307", "ix"]
    for null, _ in itertools.product(nulls, range(40)):
        values.append(
            "".join(
                (c.upper() if rng.random() < 0.5 else c)
                + (rng.choice(spaces) if rng.random() < 0.3 else "")
                for c in null
            )
        )
    text = nfc(pd.Series(values, dtype="string[pyarrow]")).str.strip()
    text = pd.Series(pd.unique(text.to_numpy()), dtype="string[pyarrow]")
    expected = normalize_series(text).isin(keys).to_numpy(dtype=bool)
    assert expected.sum() > len(nulls)  # the variants do hit the keys
    assert (_is_null_key(text, keys) == expected).all()
    with_missing = pd.Series(["NULL", None, "x"], dtype="string[pyarrow]")
    assert _is_null_key(with_missing, keys).tolist() == [True, False, False]
