"""`ctdc run` end to end on the bundled HTCDS sample, plus its error behaviour."""

import csv
import hashlib
import json

import openpyxl
import pytest

from ctdc_harmonizer import cli, samples
from ctdc_harmonizer.codebook import default_codebook


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing")
    samples.generate("case_management", root, n=400, seed=7)
    return root


def run(landing, out, *extra):
    return cli.main(
        [
            "run",
            "--landing",
            str(landing),
            "--out",
            str(out),
            "--release",
            "2025",
            "--partners",
            "case_management",
            *extra,
        ]
    )


def digest(folder):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_run_writes_a_reconciled_release_and_is_idempotent(landing, tmp_path, capsys):
    assert run(landing, tmp_path) == 0
    release = tmp_path / "2025"
    with (release / "harmonized.csv").open(encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert header == default_codebook().columns
    recon = json.loads((release / "reconciliation.json").read_text())
    assert recon["invariant_holds"] and recon["totals"]["unaccounted"] == 0
    assert recon["totals"]["rows_read"] == 400
    assert recon["totals"]["excluded"] > 0
    assert (release / "unmapped.csv").read_text().strip() == "partner,field,source_value,count,note"
    meta = json.loads((release / "metadata.json").read_text())
    assert meta["codebook"]["version"] == "3"
    assert len(meta["partners"]["case_management"]["mapping_sha256"]) == 64
    first = digest(release)
    assert run(landing, tmp_path) == 0
    assert digest(release) == first
    assert "release 2025" in capsys.readouterr().out


def test_rows_are_not_in_input_order(landing, tmp_path):
    assert run(landing, tmp_path) == 0
    years = [
        r["yearOfRegistration"]
        for r in csv.DictReader((tmp_path / "2025" / "harmonized.csv").open())
    ]
    book = openpyxl.load_workbook(
        next((landing / "case_management").glob("*.xlsx")), read_only=True
    )
    assert years != sorted(years) and len(book.sheetnames) == 1


def test_missing_column_is_a_clear_error_without_values(landing, tmp_path, capsys):
    source = next((landing / "case_management").glob("*.xlsx"))
    book = openpyxl.load_workbook(source)
    sheet = book.active
    sheet.delete_cols(8)  # prs_Gender
    broken = tmp_path / "landing" / "case_management"
    broken.mkdir(parents=True)
    book.save(broken / "broken.xlsx")
    assert run(tmp_path / "landing", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "partner 'case_management'" in err and "broken.xlsx" in err and "prs_Gender" in err
    assert "@example.org" not in err


def test_unreadable_file_names_partner_and_file(tmp_path, capsys):
    folder = tmp_path / "landing" / "case_management"
    folder.mkdir(parents=True)
    (folder / "export.xlsx").write_bytes(b"not a workbook")
    assert run(tmp_path / "landing", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "partner 'case_management', file 'export.xlsx'" in err


def test_unknown_partner_exit_code(landing, tmp_path, capsys):
    code = cli.main(
        ["run", "--landing", str(landing), "--out", str(tmp_path), "--partners", "nobody"]
    )
    assert code == 1 and "unknown partner" in capsys.readouterr().err
