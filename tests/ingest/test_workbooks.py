"""Workbooks as people make them (issue 15): what a person sees in a cell is what is read, or
the reader says it cannot. Real workbooks written by openpyxl, some with their XML edited the
way Excel writes it (a formula's stored result); an invented identifier is planted in every
sheet and must never reach a message or a log.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.columns import INVALID, REJECT, REJECT_COLUMN, ROW
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.harmonize.mapper import map_partner
from ctdc_harmonizer.ingest import workbook
from ctdc_harmonizer.ingest.deidentify import deidentify
from ctdc_harmonizer.ingest.extract import read_extract
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.samples import case_management

REPO = Path(__file__).resolve().parents[2]
CASE_MANAGEMENT = load_partner(REPO / "mappings" / "case_management")
NAME = "Zorbulina Quixwhistle"  # invented: any hit in a message is a leak
CONSENT = "con_Consent"
FIRST = 3  # the HTCDS template's first record row


def sample(tmp_path: Path):
    """The sample HTCDS workbook (20 records), every record consenting, a name planted."""
    (path,) = [
        p for p in case_management.generate(tmp_path / "landing", 20, 7) if p.suffix == ".xlsx"
    ]
    book = load_workbook(path)
    sheet = book.active
    header = [c.value for c in sheet[1]]
    for row in range(FIRST, FIRST + 20):
        sheet.cell(row=row, column=header.index(CONSENT) + 1, value="Yes")
    sheet.cell(row=FIRST, column=header.index("prs_FirstName") + 1, value=NAME)
    return path, book, sheet, header


def col(header: list, name: str) -> int:
    return header.index(name) + 1


def ref(header: list, name: str, row: int) -> str:
    return f"{workbook.column_letters(col(header, name))}{row}"


def with_results(path: Path, results: dict[str, str]) -> None:
    """Give formula cells the stored (cached) text result Excel writes on saving:
    <c r="C5" t="str"><f>..</f><v>No</v></c>."""
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    xml = parts["xl/worksheets/sheet1.xml"].decode()
    for cell, text in results.items():
        pattern = rf'<c r="{cell}"([^>]*)><f>(.*?)</f>(?:<v\s*/>|<v></v>)\s*</c>'
        xml, count = re.subn(pattern, rf'<c r="{cell}" t="str"><f>\2</f><v>{text}</v></c>', xml)
        assert count == 1, f"no formula without result at {cell}"
    parts["xl/worksheets/sheet1.xml"] = xml.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)


def read(path: Path, caplog, config=CASE_MANAGEMENT):
    with caplog.at_level(logging.DEBUG):
        return read_extract(config, path)


def refused(path: Path, caplog, config=CASE_MANAGEMENT) -> ExtractError:
    with caplog.at_level(logging.DEBUG), pytest.raises(ExtractError) as err:
        read_extract(config, path)
    assert NAME not in str(err.value) and NAME not in caplog.text
    assert err.value.__cause__ is None
    return err.value


def outcomes(frame):
    staged = deidentify(CASE_MANAGEMENT, frame)
    result = map_partner(staged, CASE_MANAGEMENT, default_codebook(), 2030)
    return result.outcomes.set_index(ROW)


# --- formulas ---------------------------------------------------------------------------------


def test_consent_formula_without_result_rejects_the_record_located(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    sheet.cell(row=5, column=col(header, CONSENT), value='=IF(1=1,"No","Yes")')
    book.save(path)
    result = read(path, caplog)
    frame = result.frame.set_index(ROW)
    assert frame.loc[5, REJECT] == workbook.FORMULA_WITHOUT_RESULT
    assert frame.loc[5, REJECT_COLUMN] == CONSENT and frame.loc[5, CONSENT] == INVALID
    (issue,) = result.cell_issues
    assert (issue.cell, issue.column, issue.sheet) == (
        ref(header, CONSENT, 5),
        CONSENT,
        "Case Sheet",
    )
    mapped = outcomes(result.frame)
    assert mapped.loc[5, "outcome"] == "rejected"
    assert mapped.loc[5, "reason"] == workbook.FORMULA_WITHOUT_RESULT
    assert (mapped.drop(5)["outcome"] == "harmonized").all()
    assert NAME not in caplog.text


def test_consent_formula_is_read_through_its_stored_result(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    sheet.cell(row=5, column=col(header, CONSENT), value='=IF(1=1,"No","Yes")')
    book.save(path)
    with_results(path, {ref(header, CONSENT, 5): "No"})
    result = read(path, caplog)
    frame = result.frame.set_index(ROW)
    assert frame.loc[5, CONSENT] == "No" and not result.cell_issues
    mapped = outcomes(result.frame)
    assert (mapped.loc[5, "outcome"], mapped.loc[5, "reason"]) == ("excluded", "consent_refused")


def test_formula_without_result_in_a_coded_field_is_invalid_not_empty(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    sheet.cell(row=6, column=col(header, "prs_Gender"), value='=IF(1=1,"Female","Male")')
    book.save(path)
    result = read(path, caplog)
    frame = result.frame.set_index(ROW)
    assert frame.loc[6, "prs_Gender"] == INVALID and frame[REJECT].isna().all()
    assert [i.reason for i in result.cell_issues] == [workbook.FORMULA_WITHOUT_RESULT]


def test_formula_without_result_in_the_header_is_a_located_error(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    sheet.cell(row=1, column=col(header, CONSENT), value='=CONCAT("con_","Consent")')
    book.save(path)
    error = refused(path, caplog)
    assert f"cell {ref(header, CONSENT, 1)}" in error.problem
    assert "formula without a stored result: open and save the file" in error.problem


# --- error cells ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["#N/A", "#REF!", "#DIV/0!"])
def test_error_cell_in_consent_rejects_the_record(tmp_path, caplog, code):
    path, book, sheet, header = sample(tmp_path)
    sheet.cell(row=7, column=col(header, CONSENT), value=code)  # openpyxl: an error cell
    sheet.cell(row=8, column=col(header, "prs_Gender"), value=code)
    book.save(path)
    result = read(path, caplog)
    frame = result.frame.set_index(ROW)
    assert frame.loc[7, REJECT] == workbook.ERROR_CELL and frame.loc[7, CONSENT] == INVALID
    assert frame.loc[8, "prs_Gender"] == INVALID and pd.isna(frame.loc[8, REJECT])
    assert outcomes(result.frame).loc[7, "reason"] == workbook.ERROR_CELL


# --- merged cells -----------------------------------------------------------------------------


def test_merged_consent_block_refuses_every_row_it_covers(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    c = col(header, CONSENT)
    sheet.cell(row=5, column=c, value="No")
    sheet.merge_cells(start_row=5, start_column=c, end_row=9, end_column=c)
    book.save(path)
    result = read(path, caplog)
    frame = result.frame.set_index(ROW)
    assert list(frame.loc[5:9, CONSENT]) == ["No"] * 5 and frame.loc[10, CONSENT] == "Yes"
    mapped = outcomes(result.frame)
    assert set(mapped.loc[5:9, "reason"]) == {"consent_refused"}
    assert mapped.loc[10, "outcome"] == "harmonized"


def test_merge_from_the_label_row_into_the_records_is_ambiguous(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    c = col(header, CONSENT)
    sheet.merge_cells(start_row=2, start_column=c, end_row=4, end_column=c)
    book.save(path)
    result = read(path, caplog)
    frame = result.frame.set_index(ROW)
    assert list(frame.loc[3:4, REJECT]) == [workbook.AMBIGUOUS_MERGE] * 2
    assert frame.loc[5, CONSENT] == "Yes"


# --- sheets, hidden rows and columns ----------------------------------------------------------


def test_hidden_sheet_in_front_is_never_read(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    old = book.create_sheet("Last year", 0)
    old.append(header)
    old.append(header)
    old.append([NAME] * len(header))
    old.sheet_state = "hidden"
    book.active = 1
    book.save(path)
    result = read(path, caplog)
    assert len(result.frame) == 20 and not (result.frame == NAME).any().any()


def test_two_visible_sheets_without_a_name_are_refused(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    other = book.create_sheet("Last year", 0)
    other.append([NAME])
    book.save(path)
    error = refused(path, caplog)
    assert "2 visible sheets and no reader.sheet" in error.problem


def test_a_configured_sheet_name_is_read(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    other = book.create_sheet("Last year", 0)
    other.append([NAME])
    book.save(path)
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings" / "case_management", mappings / "case_management")
    yaml_path = mappings / "case_management" / "partner.yaml"
    text = yaml_path.read_text(encoding="utf-8")
    yaml_path.write_text(text.replace("  header_row: 1", "  sheet: Case Sheet\n  header_row: 1"))
    config = load_partner(mappings / "case_management")
    assert len(read(path, caplog, config).frame) == 20
    yaml_path.write_text(text.replace("  header_row: 1", "  sheet: Cases 2025\n  header_row: 1"))
    error = refused(path, caplog, load_partner(mappings / "case_management"))
    assert "no sheet named as reader.sheet" in error.problem


def test_hidden_rows_and_columns_are_read(tmp_path, caplog):
    """Decision (mappings/README.md, Workbooks): hiding is a view, not a deletion."""
    path, book, sheet, header = sample(tmp_path)
    sheet.cell(row=6, column=col(header, CONSENT), value="No")
    sheet.row_dimensions[6].hidden = True
    sheet.column_dimensions[workbook.column_letters(col(header, CONSENT))].hidden = True
    book.save(path)
    frame = read(path, caplog).frame.set_index(ROW)
    assert len(frame) == 20 and frame.loc[6, CONSENT] == "No"


def test_rows_are_sheet_rows_when_the_sheet_starts_lower(tmp_path, caplog):
    """calamine drops leading empty rows; the scan puts them back (row = the sheet's row)."""
    path, book, sheet, header = sample(tmp_path)
    sheet.insert_rows(1, amount=2)
    book.save(path)
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings" / "case_management", mappings / "case_management")
    yaml_path = mappings / "case_management" / "partner.yaml"
    text = yaml_path.read_text(encoding="utf-8")
    text = text.replace("header_row: 1 ", "header_row: 3 ").replace(
        "data_start_row: 3 ", "data_start_row: 5 "
    )
    yaml_path.write_text(text, encoding="utf-8")
    frame = read(path, caplog, load_partner(mappings / "case_management")).frame
    assert frame[ROW].tolist() == list(range(5, 25))


# --- encrypted and hostile archives ----------------------------------------------------------


def test_encrypted_workbook_says_so(tmp_path, caplog):
    """An encrypted OOXML file is a compound file holding EncryptionInfo and
    EncryptedPackage streams (MS-OFFCRYPTO); its directory names them in UTF-16."""
    path = tmp_path / "landing" / "case_management" / "htcds.xlsx"
    path.parent.mkdir(parents=True)
    directory = "EncryptionInfo".encode("utf-16-le").ljust(64, b"\0")
    path.write_bytes(workbook.OLE_MAGIC + b"\0" * 1016 + directory + NAME.encode() * 10)
    error = refused(path, caplog)
    assert error.problem == "encrypted workbook: save it without a password"


def test_zip_bomb_is_refused_before_decompressing(tmp_path, caplog, monkeypatch):
    path, book, sheet, header = sample(tmp_path)
    book.save(path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/padding.bin", b"\0" * (64 << 20))  # 64 MB of zeros
    monkeypatch.setattr(
        workbook,
        "reader_limits",
        lambda: workbook.ReaderLimits(
            max_unpacked_bytes=32 << 20, max_compression_ratio=100, max_unreadable_cells=10
        ),
    )
    started = time.perf_counter()
    error = refused(path, caplog)
    assert time.perf_counter() - started < 2
    assert "too large once decompressed" in error.problem and "limit is 32 MB" in error.problem


def test_highly_compressed_workbook_is_refused(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    book.save(path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/padding.bin", b"\0" * (40 << 20))
    error = refused(path, caplog)
    assert "compressed" in error.problem and "reader_limits_v1.yaml" in error.problem


def test_declared_limits_are_read_from_the_versioned_file():
    limits = workbook.reader_limits()
    assert limits.max_unpacked_bytes == 768 << 20 and limits.max_compression_ratio == 100


def never_recalculated_beyond_the_limit(tmp_path, monkeypatch) -> tuple[Path, list]:
    """A workbook with 20 formula cells saved without results, the limit lowered to 10."""
    path, book, sheet, header = sample(tmp_path)
    for row in range(FIRST, FIRST + 20):
        sheet.cell(row=row, column=col(header, "prs_Gender"), value='=IF(1=1,"Female","Male")')
    book.save(path)
    monkeypatch.setattr(
        workbook,
        "reader_limits",
        lambda: workbook.ReaderLimits(
            max_unpacked_bytes=768 << 20, max_compression_ratio=100, max_unreadable_cells=10
        ),
    )
    return path, header


def test_never_recalculated_workbook_beyond_the_limit_is_refused(tmp_path, caplog, monkeypatch):
    path, header = never_recalculated_beyond_the_limit(tmp_path, monkeypatch)
    error = refused(path, caplog)
    assert "more than 10 cells cannot be read exactly" in error.problem
    assert f"cell {ref(header, 'prs_Gender', FIRST)}" in error.problem


# --- OpenDocument ----------------------------------------------------------------------------

ODS_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:calcext="urn:org:documentfoundation:names:experimental:calc:xmlns:calcext:1.0" '
    'xmlns:of="urn:oasis:names:tc:opendocument:xmlns:of:1.2" office:version="1.2"'
)


def ods_cell(value, special: str = "") -> str:
    if special == "formula":  # a formula saved without its result
        return '<table:table-cell table:formula="of:=IF(TRUE();&quot;No&quot;;&quot;Yes&quot;)"/>'
    if special == "error":
        return (
            '<table:table-cell table:formula="of:=1/0" office:value-type="float" '
            'office:value="0" calcext:value-type="error"><text:p>#DIV/0!</text:p>'
            "</table:table-cell>"
        )
    if special == "covered":
        return "<table:covered-table-cell/>"
    if value is None or value == "":
        return "<table:table-cell/>"
    if hasattr(value, "strftime"):
        iso = value.strftime("%Y-%m-%dT%H:%M:%S")
        return (
            f'<table:table-cell office:value-type="date" office:date-value="{iso}">'
            f"<text:p>{iso[:10]}</text:p></table:table-cell>"
        )
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    span = ' table:number-rows-spanned="4"' if special == "merge4" else ""
    return (
        f'<table:table-cell office:value-type="string"{span}><text:p>{text}</text:p>'
        "</table:table-cell>"
    )


def write_ods(path: Path, rows: list[list], specials: dict[tuple[int, int], str]) -> None:
    """A minimal OpenDocument spreadsheet, as LibreOffice lays it out (mimetype first and
    stored), its empty tail one row repeated a million times."""
    body = []
    for r, values in enumerate(rows, start=1):
        cells = "".join(ods_cell(v, specials.get((r, c), "")) for c, v in enumerate(values, 1))
        body.append(f"<table:table-row>{cells}</table:table-row>")
    body.append(
        '<table:table-row table:number-rows-repeated="1048000"><table:table-cell '
        'table:number-columns-repeated="1024"/></table:table-row>'
    )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODS_NS}>'
        '<office:body><office:spreadsheet><table:table table:name="Case Sheet">'
        + "".join(body)
        + "</table:table></office:spreadsheet></office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        archive.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)


def test_ods_is_read_with_the_same_consent_rules(tmp_path, caplog):
    path, book, sheet, header = sample(tmp_path)
    rows = [[c.value for c in row] for row in sheet.iter_rows(min_row=1, max_row=22)]
    c = col(header, CONSENT)
    rows[4][c - 1] = None  # row 5: a consent formula without a stored result
    rows[6][c - 1] = "No"  # rows 7-10: "No" merged over four rows
    for r in (8, 9, 10):
        rows[r - 1][c - 1] = None
    specials = {(5, c): "formula", (7, c): "merge4", (12, c): "error"}
    specials |= {(r, c): "covered" for r in (8, 9, 10)}
    ods = path.with_suffix(".ods")
    write_ods(ods, rows, specials)
    result = read(ods, caplog)
    frame = result.frame.set_index(ROW)
    assert len(frame) == 20 and frame.index[0] == 3
    assert frame.loc[5, REJECT] == workbook.FORMULA_WITHOUT_RESULT
    assert list(frame.loc[7:10, CONSENT]) == ["No"] * 4 and frame.loc[11, CONSENT] == "Yes"
    assert frame.loc[12, REJECT] == workbook.ERROR_CELL
    mapped = outcomes(result.frame)
    assert set(mapped.loc[7:10, "reason"]) == {"consent_refused"}
    assert mapped.loc[5, "outcome"] == mapped.loc[12, "outcome"] == "rejected"
    assert NAME not in caplog.text


def test_encrypted_ods_says_so(tmp_path, caplog):
    """A password-protected .ods keeps its zip but encrypts the members: the manifest
    carries their encryption-data."""
    path = tmp_path / "htcds.ods"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", NAME.encode() * 50)  # stands for ciphertext
        archive.writestr(
            "META-INF/manifest.xml",
            '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:'
            'manifest:1.0"><manifest:file-entry manifest:full-path="content.xml">'
            '<manifest:encryption-data manifest:checksum-type="SHA1/1K"/>'
            "</manifest:file-entry></manifest:manifest>",
        )
    assert refused(path, caplog).problem == workbook.ENCRYPTED


def test_legacy_xls_is_refused_with_what_to_do(tmp_path, caplog):
    """A compound file without encryption streams: an Excel 97-2003 workbook."""
    path = tmp_path / "htcds.xls"
    path.write_bytes(
        workbook.OLE_MAGIC + b"\0" * 1016 + "Workbook".encode("utf-16-le") + b"\0" * 64
    )
    error = refused(path, caplog)
    assert "legacy Excel 97-2003 workbook" in error.problem and ".xlsx or .ods" in error.problem


def test_ods_delivery_through_the_cli_never_publishes_the_refusals(tmp_path, capsys, caplog):
    """A partner whose configuration names *.ods: `ctdc run` reads it; the merged "No" and
    the consent formula without result are never in the release; no name escapes."""
    import csv
    import datetime as dt

    from ctdc_harmonizer import cli

    path, book, sheet, header = sample(tmp_path)
    rows = [[c.value for c in row] for row in sheet.iter_rows(min_row=1, max_row=22)]
    c, date = col(header, CONSENT), col(header, "cas_IncomingReferralDate")
    for r in (5, 7, 8, 9, 10):  # the refusing records, marked by a year no other has
        rows[r - 1][date - 1] = dt.datetime(2004, 3, 15)
    rows[6][c - 1] = "No"
    specials = {(5, c): "formula", (7, c): "merge4"}
    specials |= {(r, c): "covered" for r in (8, 9, 10)}
    path.unlink()
    write_ods(path.with_suffix(".ods"), rows, specials)
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings" / "case_management", mappings / "case_management")
    yaml_path = mappings / "case_management" / "partner.yaml"
    text = yaml_path.read_text(encoding="utf-8").replace('["*.xlsx"]', '["*.xlsx", "*.ods"]')
    yaml_path.write_text(text, encoding="utf-8")
    (tmp_path / "landing" / "case_management" / "withdrawals.csv").unlink(missing_ok=True)
    out = tmp_path / "out"
    argv = ["run", "--landing", str(tmp_path / "landing"), "--out", str(out)]
    argv += ["--release", "2025", "--partners", "case_management", "--mappings", str(mappings)]
    with caplog.at_level(logging.INFO):
        code = cli.main(argv)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    with (out / "2025" / "harmonized.csv").open(encoding="utf-8", newline="") as handle:
        years = [row["yearOfRegistration"] for row in csv.DictReader(handle)]
    assert len(years) >= 10 and "2004" not in years
    rejects = (out / "2025" / "rejects.csv").read_text(encoding="utf-8")
    assert "htcds_case_export.ods" in rejects and "formula_without_result" in rejects
    for text in (printed.out, printed.err, caplog.text):
        assert NAME not in text


# --- a large sheet parsed in a process of its own (ingest/sheet_process.py) ---------------------


def test_a_sheet_parsed_in_its_own_process_reads_the_same(tmp_path, caplog, monkeypatch):
    """Merges, a formula without result, a sheet starting in a later column: the child's table
    and column position give the frame the in-process parse gives, cell for cell."""
    from ctdc_harmonizer.ingest import excel

    path, book, sheet, header = sample(tmp_path)
    sheet.insert_cols(1, amount=2)  # the sheet's first column holding a value is C
    header = [None, None, *header]
    sheet.cell(row=5, column=col(header, CONSENT), value='=IF(1=1,"No","Yes")')
    sheet.merge_cells(
        start_row=7,
        start_column=col(header, "prs_Gender"),
        end_row=9,
        end_column=col(header, "prs_Gender"),
    )
    book.save(path)
    in_process = read(path, caplog)
    monkeypatch.setattr(excel, "SHEET_PROCESS_BYTES", 0)
    children = []
    started = excel.sheet_process.SheetInChild.__init__
    monkeypatch.setattr(
        excel.sheet_process.SheetInChild,
        "__init__",
        lambda self, *a: children.append(a) or started(self, *a),
    )
    in_child = read(path, caplog)
    assert len(children) == 1
    pd.testing.assert_frame_equal(in_child.frame, in_process.frame)
    assert in_child.cell_issues == in_process.cell_issues and in_child.cell_issues
    assert NAME not in caplog.text


def test_a_failed_child_parse_says_only_its_type(tmp_path, caplog, monkeypatch):
    from ctdc_harmonizer.ingest import excel, sheet_process

    path, book, sheet, header = sample(tmp_path)
    book.save(path)
    with (
        pytest.raises(sheet_process.SheetProcessError) as err,
        sheet_process.SheetInChild(path, NAME) as child,  # no such sheet; its message names it
    ):
        child.result()
    assert NAME not in str(err.value) and re.fullmatch(r"\w+", err.value.kind)
    # Through the reader: a value-free, located ExtractError.
    monkeypatch.setattr(excel, "SHEET_PROCESS_BYTES", 0)
    started = sheet_process.SheetInChild.__init__
    monkeypatch.setattr(
        sheet_process.SheetInChild, "__init__", lambda self, p, s: started(self, p, NAME)
    )
    error = refused(path, caplog)
    assert "cannot be read as excel" in str(error)


def test_a_refused_scan_stops_the_child_parsing_beside_it(tmp_path, caplog, monkeypatch):
    """The scan refuses the workbook while the child parses: the child is stopped and
    waited for, not left behind."""
    from ctdc_harmonizer.ingest import excel, sheet_process

    path, header = never_recalculated_beyond_the_limit(tmp_path, monkeypatch)
    monkeypatch.setattr(excel, "SHEET_PROCESS_BYTES", 0)
    children = []
    started = sheet_process.SheetInChild.__init__
    monkeypatch.setattr(
        sheet_process.SheetInChild,
        "__init__",
        lambda self, *a: children.append(self) or started(self, *a),
    )
    error = refused(path, caplog)
    assert "more than 10 cells cannot be read exactly" in error.problem
    (child,) = children
    assert child._child.returncode is not None  # ended and reaped
    assert child._child.stdout.closed and child._child.stderr.closed


def test_a_killed_child_is_reported_by_its_exit_code(tmp_path):
    """Killed (say by the kernel's out-of-memory killer): no table, an exit code, nothing else."""
    from ctdc_harmonizer.ingest import sheet_process

    path, book, sheet, header = sample(tmp_path)
    book.save(path)
    with sheet_process.SheetInChild(path, "Case Sheet") as child:
        child._child.kill()
        with pytest.raises(sheet_process.SheetProcessError) as err:
            child.result()
    assert err.value.kind == "exit code -9"
