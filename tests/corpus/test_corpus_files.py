"""Corpus, issue 15 (files half): every delivered file accounted for, located errors over the
whole file, and deliveries of many small files. Each case plants invented identifiers where
it mutates and asserts the exit code, the message and that no planted value escapes."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest

from support.corpus import (
    CASE_NO,
    EMAIL,
    HOTLINE_FILE,
    HTCDS_FILE,
    IOM_FILE,
    NAME,
    PHONE,
    Case,
    Env,
    JsonLines,
    RunResult,
    case_ids,
    line,
    rejected_rows,
    run_case,
)

HOTLINE, IOM, HTCDS = "hotline", "iom", "case_management"


def metadata(result: RunResult) -> dict:
    return json.loads((result.release_dir / "metadata.json").read_text(encoding="utf-8"))


def not_read_is(partner: str, expected: dict[str, str]):
    """The run names each file it did not read, with its reason code, in its output, in the
    release's reconciliation and metadata, and counts them in the approval summary."""

    def check(result: RunResult) -> None:
        assert metadata(result)["partners"][partner]["not_read"] == expected
        recon = json.loads((result.release_dir / "reconciliation.json").read_text())
        assert recon["partners"][partner]["not_read"] == expected
        for name, reason in expected.items():
            shown = name.encode("unicode_escape").decode() if not name.isprintable() else name
            assert f"not read: {shown}: {reason}" in result.stdout, name
        from ctdc_harmonizer.release.report import headline

        body = headline(result.release_dir)["body"]
        for reason in set(expected.values()):
            assert reason in body
        assert not any(name in body for name in expected)  # counts only: names are in metadata

    return check


def office_lock_files(env: Env) -> None:
    """An Excel lock file and a LibreOffice one beside the workbook: never read, named."""
    folder = env.landing / HTCDS
    (folder / f"~${HTCDS_FILE}").write_bytes(env.plant(NAME).encode() + b"\x00" * 40)
    (folder / f".~lock.{HTCDS_FILE}#").write_text(f"{env.plant(EMAIL)},host,2025\n")


def hidden_file(env: Env) -> None:
    (env.landing / IOM / f".{IOM_FILE}").write_text(f"case_id\n{env.plant(CASE_NO)}\n")


def _ods_bytes(planted: str) -> bytes:
    """A minimal OpenDocument spreadsheet (zip) whose content holds a planted name."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        body = f"<office:document-content>{planted}</office:document-content>"
        archive.writestr("content.xml", body)
    return out.getvalue()


def ods_beside_xlsx(env: Env) -> None:
    """A second delivery saved as .ods beside the expected .xlsx: the configuration reads
    *.xlsx only, so it is named as not read (unexpected_format), never ignored silently."""
    (env.landing / HTCDS / "htcds_case_export_second_half.ods").write_bytes(
        _ods_bytes(env.plant(NAME))
    )


def not_matching_and_odd_names(env: Env) -> None:
    """A JSON-lines file the patterns exclude, a text file, a sub-folder, and a file name
    holding a terminal escape (shown escaped: a name cannot forge output)."""
    folder = env.landing / HOTLINE
    (folder / "hotline_notes_2025.jsonl").write_text(json.dumps({"caller_name": env.plant(NAME)}))
    (folder / "README.txt").write_text(f"call {env.plant(PHONE)}\n")
    (folder / "old").mkdir()
    (folder / "old" / HOTLINE_FILE).write_text(json.dumps({"caller_email": env.plant(EMAIL)}))
    (folder / "odd\x1b[31mname.pdf").write_bytes(b"%PDF-1.4")


def bad_byte_far_down(env: Env) -> None:
    """An invalid UTF-8 byte in a name (a column never read) on line 55 of 61: refused at
    its line, as the same byte near the top is."""
    path = env.path(IOM, IOM_FILE)
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    rows[54][rows[0].index("beneficiary_first_name")] = "Zorbaxina\udcedQuill"
    env.plant("Zorbaxina", "Zorbax\ufffdQuill", "ZorbaxinaQuill")
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\n").writerows(rows)
    path.write_bytes(text.getvalue().encode("utf-8", "surrogateescape"))


def non_finite(value: str, key: str, index: int):
    """NaN / Infinity / -Infinity in a JSON record: that record is rejected at its line
    (reason non_finite_number), the others are read."""

    def mutate(env: Env) -> None:
        j = JsonLines(env.path(HOTLINE, HOTLINE_FILE))
        j.records[index]["caller_name"] = env.plant(NAME)
        lines = j.lines()
        record = json.loads(lines[index])
        record[key] = "@@" if key != "victim_citizenship" else ["Mexico", "@@"]
        lines[index] = json.dumps(record, ensure_ascii=False).replace('"@@"', value)
        j.write(lines)
        env.expect_rejected(HOTLINE_FILE, index + 1)

    return mutate


def reason_is(reason: str):
    def check(result: RunResult) -> None:
        assert any(r["reason"] == reason for r in rejected_rows(result))

    return check


def deep_nesting(env: Env) -> None:
    """A value nested 100,000 levels deep on line 9: a located error, never a RecursionError."""
    j = JsonLines(env.path(HOTLINE, HOTLINE_FILE))
    j.records[8]["caller_name"] = env.plant(NAME)
    lines = j.lines()
    lines[8] = lines[8][:-1] + ', "industries": ' + "[" * 100_000 + "]" * 100_000 + "}"
    j.write(lines)


def many_small_files(env: Env) -> None:
    """The hotline's 60 reports delivered as 30 files of two: read as one delivery, each
    file reconciled on its own, a reject located in its own file."""
    path = env.path(HOTLINE, HOTLINE_FILE)
    j = JsonLines(path)
    j.records[41]["report_date"] = "2013-05-05T10:00:00"  # before the hotline: rejected
    j.records[41]["caller_name"] = env.plant(NAME)
    lines = j.lines()
    path.unlink()
    for i in range(0, len(lines), 2):
        name = f"hotline_reports_2025_{i // 2:03d}.jsonl"
        env.path(HOTLINE, name).write_text("\n".join(lines[i : i + 2]) + "\n", encoding="utf-8")
    env.expect_rejected("hotline_reports_2025_020.jsonl", 2)


def thirty_files(result: RunResult) -> None:
    files = metadata(result)["partners"][HOTLINE]["files"]
    assert len(files) == 30
    assert metadata(result)["partners"][HOTLINE]["not_read"] == {}
    assert metadata(result)["partners"][HOTLINE]["unreadable_cells"] == {}  # no workbook


CASES = [
    Case(
        id="files-office-lock-files",
        partner=HTCDS,
        mutate=office_lock_files,
        exit=0,
        check=not_read_is(
            HTCDS, {f".~lock.{HTCDS_FILE}#": "lock_file", f"~${HTCDS_FILE}": "lock_file"}
        ),
        promise="Excel and LibreOffice lock files: not read, named (lock_file)",
    ),
    Case(
        id="files-hidden-file",
        partner=IOM,
        mutate=hidden_file,
        exit=0,
        check=not_read_is(IOM, {f".{IOM_FILE}": "hidden_file"}),
        promise="a hidden file: not read, named (hidden_file)",
    ),
    Case(
        id="files-ods-beside-xlsx",
        partner=HTCDS,
        mutate=ods_beside_xlsx,
        exit=0,
        check=not_read_is(HTCDS, {"htcds_case_export_second_half.ods": "unexpected_format"}),
        promise="an .ods the configuration does not read: named (unexpected_format)",
    ),
    Case(
        id="files-not-matching-and-odd-names",
        partner=HOTLINE,
        mutate=not_matching_and_odd_names,
        exit=0,
        check=not_read_is(
            HOTLINE,
            {
                "README.txt": "unexpected_format",
                "hotline_notes_2025.jsonl": "not_matching_patterns",
                "odd\x1b[31mname.pdf": "unexpected_format",
                "old": "not_a_file",
            },
        ),
        promise="files outside the patterns and a sub-folder: named; odd names escaped",
    ),
    Case(
        id="files-csv-bad-byte-far-down",
        partner=IOM,
        mutate=bad_byte_far_down,
        exit=1,
        names=[f"'{IOM}'", IOM_FILE, line(55), "not readable as utf-8"],
        promise="the encoding is checked over the whole file, at the physical line",
    ),
    Case(
        id="files-jsonl-nan",
        partner=HOTLINE,
        mutate=non_finite("NaN", "victim_age_range", 12),
        exit=0,
        check=reason_is("non_finite_number"),
        promise="NaN in a JSON record: that record rejected at its line",
    ),
    Case(
        id="files-jsonl-infinity-in-array",
        partner=HOTLINE,
        mutate=non_finite("-Infinity", "victim_citizenship", 30),
        exit=0,
        check=reason_is("non_finite_number"),
        promise="-Infinity in a JSON array: that record rejected at its line",
    ),
    Case(
        id="files-jsonl-deep-nesting",
        partner=HOTLINE,
        mutate=deep_nesting,
        exit=1,
        names=[f"'{HOTLINE}'", HOTLINE_FILE, line(9), "deeper than 32 levels"],
        promise="nesting beyond the declared depth: a located error, no RecursionError",
    ),
    Case(
        id="files-many-small-files",
        partner=HOTLINE,
        mutate=many_small_files,
        exit=0,
        check=thirty_files,
        promise="a delivery of 30 small files: each file reconciled, rejects located",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_files(case, corpus_env, capsys, caplog):
    run_case(case, corpus_env(case), capsys, caplog)
