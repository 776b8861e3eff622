"""Issue 15 (files half), unit level: which entries of a delivery are read and why the others
are not; the whole-file encoding check; NaN/Infinity and nesting in JSON lines; a delivery of
many files read as one frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_reader_robustness import CASE_MANAGEMENT, HOTLINE, NAME, hotline_file, report

from ctdc_harmonizer.columns import FILE, REJECT, REJECT_COLUMN, ROW
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest import files as delivered
from ctdc_harmonizer.ingest.encoding import CHUNK_BYTES, check_encoding
from ctdc_harmonizer.ingest.extract import read_delivery, read_extract
from ctdc_harmonizer.ingest.jsonl import MAX_JSON_DEPTH
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.safety import printable_name
from support.tiny_partner import row, write_extract, write_partner


def test_every_entry_is_read_or_has_a_reason(tmp_path):
    folder = tmp_path / "landing" / "case_management"
    folder.mkdir(parents=True)
    names = {
        "export.xlsx": None,
        "~$export.xlsx": delivered.LOCK_FILE,
        ".~lock.export.xlsx#": delivered.LOCK_FILE,
        ".DS_Store": delivered.HIDDEN_FILE,
        "export_second_half.ods": delivered.UNEXPECTED_FORMAT,
        "export.xls": delivered.UNEXPECTED_FORMAT,
        "notes.txt": delivered.UNEXPECTED_FORMAT,
    }
    for name in names:
        (folder / name).write_bytes(b"x")
    (folder / "2024").mkdir()
    (folder / "withdrawals.csv").write_text("x\n")  # handled apart: neither read nor listed
    listing = delivered.list_delivery(CASE_MANAGEMENT, tmp_path / "landing")
    assert [p.name for p in listing.files] == ["export.xlsx"]
    assert listing.not_read == {n: r for n, r in names.items() if r} | {
        "2024": delivered.NOT_A_FILE
    }


def test_the_format_of_the_partner_under_another_name_is_not_matching(tmp_path):
    folder = tmp_path / "landing" / "hotline"
    folder.mkdir(parents=True)
    (folder / "hotline_reports_2025.jsonl").write_text("{}\n")
    (folder / "caller_notes.jsonl").write_text("{}\n")
    listing = delivered.list_delivery(HOTLINE, tmp_path / "landing")
    assert listing.not_read == {"caller_notes.jsonl": delivered.NOT_MATCHING}


def test_names_cannot_forge_output():
    assert printable_name("export 2025 (ü).xlsx") == "export 2025 (ü).xlsx"
    shown = printable_name("a\nctdc: error: fake\x1b[2J.csv")
    assert "\n" not in shown and "\x1b" not in shown and "\\n" in shown and "\\x1b" in shown


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_encoding_checked_over_the_whole_file_in_slices(tmp_path, encoding):
    """A bad byte beyond the first slice is found at its physical line."""
    line = b"a,b,c\n"
    lines = CHUNK_BYTES // len(line) + 1000
    bad = b"\x81" if encoding == "cp1252" else b"\xff"
    data = line * (lines - 1) + b"x," + bad + b",z\n"
    path = tmp_path / "big.csv"
    with pytest.raises(ExtractError) as caught:
        check_encoding("p", path, data, encoding)
    assert caught.value.row == lines and "not readable as" in caught.value.problem
    check_encoding("p", path, line * lines, encoding)  # a clean file passes


def test_utf8_bom_is_not_an_error(tmp_path):
    check_encoding("p", tmp_path / "x.csv", b"\xef\xbb\xbfa,b\n1,2\n", "utf-8")


def test_csv_bad_byte_in_a_column_never_read_is_refused_at_its_line(tmp_path):
    write_partner(tmp_path)
    rows = [row(case_id=f"C{i}", full_name="Ann") for i in range(40)]
    path = write_extract(tmp_path, rows)
    lines = path.read_bytes().split(b"\n")
    lines[37] = lines[37].replace(b"Ann", b"An\xedn")  # full_name: an identifier, not kept
    path.write_bytes(b"\n".join(lines))
    config = load_partner(tmp_path / "mappings" / "tiny")
    with pytest.raises(ExtractError) as caught:
        read_extract(config, path)
    assert caught.value.row == 38 and caught.value.problem == "not readable as utf-8"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_reject_their_record(tmp_path, constant):
    lines = [json.dumps(report(i)) for i in range(1, 4)]
    lines[1] = json.dumps(report(2, victim_age_range="@@")).replace('"@@"', constant)
    frame = read_extract(HOTLINE, hotline_file(tmp_path, lines)).frame
    assert frame[REJECT].tolist()[1] == "non_finite_number"
    assert frame[REJECT_COLUMN].tolist()[1] == "victim_age_range"
    assert frame[REJECT].isna().sum() == 2


def test_non_finite_numbers_leave_the_fast_path(tmp_path):
    """pyarrow reads a column of numbers with a NaN as doubles: the record is still rejected."""
    records = [report(i, victim_age_range=float(i)) for i in range(1, 4)]
    lines = [json.dumps(r) for r in records]
    lines[2] = lines[2].replace('"victim_age_range": 3.0', '"victim_age_range": NaN')
    frame = read_extract(HOTLINE, hotline_file(tmp_path, lines)).frame
    assert frame[REJECT].tolist() == [None, None, "non_finite_number"] or frame[REJECT].fillna(
        ""
    ).tolist() == ["", "", "non_finite_number"]


def test_nesting_beyond_the_declared_depth_is_located(tmp_path):
    ok = json.dumps(report(1))
    at_limit = (
        ok[:-1] + ', "extra": ' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}"
    )
    deep = ok[:-1] + ', "industries": ' + "[" * 50_000 + "]" * 50_000 + "}"
    read_extract(HOTLINE, hotline_file(tmp_path / "a", [ok, at_limit]))  # within the limit
    with pytest.raises(ExtractError) as caught:
        read_extract(HOTLINE, hotline_file(tmp_path / "b", [ok, ok, deep]))
    assert caught.value.row == 3 and f"deeper than {MAX_JSON_DEPTH}" in caught.value.problem
    assert NAME not in str(caught.value)


def test_many_files_read_as_one_frame_equal_the_files_read_one_by_one(tmp_path):
    paths = []
    for i in range(5):
        lines = [json.dumps(report(10 * i + j)) for j in range(3)]
        path = hotline_file(tmp_path / str(i), lines)
        target = tmp_path / "all" / f"hotline_reports_{i}.jsonl"
        target.parent.mkdir(exist_ok=True)
        path.rename(target)
        paths.append(target)
    together = read_delivery(HOTLINE, paths)
    alone = [read_extract(HOTLINE, p) for p in paths]
    assert [f.file for f in together.files] == [p.name for p in paths]
    assert [f.sha256 for f in together.files] == [r.sha256 for r in alone]
    assert together.frame[FILE].tolist() == [n for r in alone for n in r.frame[FILE]]
    assert together.frame[ROW].tolist() == [n for r in alone for n in r.frame[ROW]]
    for column in together.frame.columns:
        assert together.frame[column].fillna("").astype(str).tolist() == [
            v for r in alone for v in r.frame[column].fillna("").astype(str)
        ], column


def test_bench_split_keeps_every_record(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_many_files import _slices

    assert sum(b - a for a, b in _slices(3000, 2000)) == 3000 and len(_slices(5, 9)) == 5


def _delivery(tmp_path: Path, contents: list[str], suffix: str) -> list[Path]:
    folder = tmp_path / "all"
    folder.mkdir(exist_ok=True)
    paths = []
    for i, text in enumerate(contents):
        path = folder / f"part_{i:02d}{suffix}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _same_as_one_by_one(config, paths: list[Path]) -> None:
    together = read_delivery(config, paths)
    alone = [read_extract(config, p) for p in paths]
    assert [f.file for f in together.files] == [p.name for p in paths]
    assert [(f.blank_rows, f.dropped_columns) for f in together.files] == [
        (r.blank_rows, r.dropped_columns) for r in alone
    ]
    assert together.frame[ROW].tolist() == [n for r in alone for n in r.frame[ROW]]
    for column in together.frame.columns:
        assert together.frame[column].fillna("").astype(str).tolist() == [
            v for r in alone for v in r.frame[column].fillna("").astype(str)
        ], column


@pytest.mark.parametrize("odd", ["none", "blank_lines", "null_in_one_file", "nan", "typed_apart"])
def test_small_jsonl_files_parsed_together_read_as_one_by_one(tmp_path, odd):
    """The small files are parsed as one buffer; a file the buffer cannot stand for (NaN, a
    value whose type differs between files) sends the delivery back to one read per file."""
    contents = []
    for i in range(4):
        records = [report(10 * i + j, victim_age_range=float(j + 1)) for j in range(2)]
        if odd == "null_in_one_file" and i == 1:
            records = [r | {"victim_age_range": None} for r in records]
        lines = [json.dumps(r) for r in records]
        if odd == "blank_lines":
            lines = ["", lines[0], "  ", lines[1], ""]
        if odd == "nan" and i == 2:
            lines[1] = lines[1].replace('"victim_age_range": 2.0', '"victim_age_range": NaN')
        if odd == "typed_apart" and i == 3:
            lines[0] = lines[0].replace('"victim_age_range": 1.0', '"victim_age_range": "1"')
        contents.append("\n".join(lines) + "\n")
    _same_as_one_by_one(HOTLINE, _delivery(tmp_path, contents, ".jsonl"))


def test_small_csv_files_parsed_together_read_as_one_by_one(tmp_path):
    config = load_partner(write_partner(tmp_path))
    header = ",".join(row())
    files = [[row(case_id=f"A{i}{j}", age=str(20 + j)) for j in range(3)] for i in range(3)]
    contents = [header + "\n" + "\n".join(",".join(r.values()) for r in f) + "\n" for f in files]
    contents[1] = contents[1].replace("\n", "\n\n", 2)  # blank lines move the records down
    _same_as_one_by_one(config, _delivery(tmp_path, contents, ".csv"))


def test_a_bad_small_file_among_many_is_named_with_its_line(tmp_path):
    lines = [json.dumps(report(i)) for i in range(3)]
    contents = ["\n".join(lines) + "\n"] * 4
    contents[2] = "\n".join([lines[0], lines[1][:-3], lines[2]]) + "\n"
    with pytest.raises(ExtractError) as caught:
        read_delivery(HOTLINE, _delivery(tmp_path, contents, ".jsonl"))
    assert caught.value.file == "part_02.jsonl" and caught.value.row == 2
    assert NAME not in str(caught.value)


def test_read_text_is_pandas_text_kept_in_arrow_and_an_empty_column_stays_as_it_was(tmp_path):
    """The delivery's text columns are what a frame makes of their cells as Python strings
    (pandas' `str` text, a null token missing), built from Arrow without a Python object per
    cell; a column without any value is left as such a frame leaves it."""
    import numpy as np
    import pandas as pd

    config = load_partner(write_partner(tmp_path))
    rows = [row(case_id="1", gender=" Female ", months="-99"), row(case_id="2", gender="-99")]
    read = read_extract(config, write_extract(tmp_path, rows))
    gender, status, months = read.frame["gender"], read.frame["status"], read.frame["months"]
    for column in (gender, status):
        as_objects = pd.DataFrame({"x": column.to_numpy(dtype=object)})["x"]
        assert column.dtype == as_objects.dtype and str(column.dtype) == "str"
        assert column.dtype.storage == "pyarrow"  # Arrow-backed
    assert gender.tolist()[0] == "Female" and pd.isna(gender.tolist()[1])
    assert months.isna().all()
    assert months.dtype == pd.DataFrame({"x": np.array([np.nan, np.nan], dtype=object)})["x"].dtype
