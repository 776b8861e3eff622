"""`ctdc check-delivery`: a partner checks its extract before sending it (no Airflow, no
warehouse, nothing sent): exit 0 and the receipt on each bundled sample; exit 1 with every
located problem on a broken extract; no planted value ever printed or written."""

import csv
import json
import subprocess
import sys

import pytest

from ctdc_harmonizer import cli, samples
from ctdc_harmonizer.paths import mapped_partners
from ctdc_harmonizer.release import receipts

ROWS = 150
CANARY_NAME = "Qzxwvy Canarynamé"  # identifiers planted in a broken file
CANARY_CODE = "Canary-Shifted-Cell"  # a rare value in a coded column (seen fewer than k times)


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing")
    samples.generate_all(root, ROWS, seed=5)
    return root


def check(*args):
    return cli.main(["check-delivery", *map(str, args)])


@pytest.mark.parametrize("partner", mapped_partners())
def test_each_bundled_sample_passes_and_gets_its_receipt(partner, landing, tmp_path, capsys):
    assert check("--partner", partner, landing / partner, "--out", tmp_path / "r") == 0
    out = capsys.readouterr().out
    assert f"Delivery check for partner {partner}" in out and "nothing was sent" in out
    receipt = receipts.read_receipt(tmp_path / "r")
    assert receipt.kind == "check" and receipt.partner == partner and receipt.ok
    assert receipt.totals.rows_read == ROWS * len(receipt.files) or partner == "ctdc_legacy"
    assert receipt.totals.harmonized > 0 and receipt.reconciles
    assert (tmp_path / "r" / "receipt.html").is_file()


def test_the_landing_folder_stands_for_the_partner_folder(landing, capsys):
    assert check("--partner", "iom", landing) == 0  # <landing>/iom/ is taken; nothing written
    assert "receipt written" not in capsys.readouterr().out


def _rewrite(source, target, change):
    with source.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    for index, row in enumerate(rows):
        change(index, row)
    header = [h for h in header if h in rows[0]]
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, header, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def broken(landing, tmp_path):
    """An IOM delivery with three broken files and a broken withdrawals file, names and
    shifted cells planted."""
    source = next((landing / "iom").glob("iom_case_export_*.csv"))
    folder = tmp_path / "send"
    folder.mkdir()

    def missing_column(index, row):
        row["beneficiary_first_name"] = CANARY_NAME
        del row["nationality"]

    def names_in_a_coded_column(index, row):
        row["beneficiary_last_name"] = CANARY_NAME
        row["case_id"] = f"{CANARY_NAME}-{index}"
        # A name typed in the sex column of every row (shifted), and a rare odd code.
        row["legacy_sex"] = f"{CANARY_NAME} {index}" if index % 2 else CANARY_CODE
        if index == 3:
            row["type_of_exploitation"] = CANARY_CODE

    _rewrite(source, folder / "iom_case_export_a.csv", missing_column)
    _rewrite(source, folder / "iom_case_export_b.csv", names_in_a_coded_column)
    (folder / "iom_case_export_c.csv").write_bytes(b"\xff\xfe\x00garbage\x00" * 20)
    (folder / "withdrawals.csv").write_text(f'"record_id","x"\n"{CANARY_NAME}-1","a"\n"","b"\n')
    return folder


def _everything(capsys, out):
    captured = capsys.readouterr()
    written = "".join(p.read_text(encoding="utf-8") for p in sorted(out.iterdir()))
    return captured.out, captured.err, written


def test_a_broken_delivery_exits_1_with_located_problems_and_no_value(broken, tmp_path, capsys):
    out = tmp_path / "receipt"
    assert check("--partner", "iom", broken, "--out", out) == 1
    stdout, stderr, written = _everything(capsys, out)
    receipt = receipts.read_receipt(out)
    assert not receipt.ok
    where = {(p.file, p.column) for p in receipt.problems}
    assert ("iom_case_export_a.csv", "nationality") in where  # the missing column
    assert any(p.file == "iom_case_export_c.csv" for p in receipt.problems)  # unreadable
    assert ("withdrawals.csv", "record_id") in where  # an empty request, located by line
    assert any(p.row == 3 for p in receipt.problems if p.file == "withdrawals.csv")
    assert any(
        p.column == "legacy_sex" and p.reason.startswith("coverage") for p in receipt.problems
    )
    assert "ctdc: problem: partner 'iom', file 'iom_case_export_a.csv', column 'nationality'" in (
        stderr
    )
    assert "ctdc: error: partner 'iom'" in stderr
    # PRIVACY: no planted name, id or rare code anywhere the check prints or writes.
    for text in (stdout, stderr, written, json.dumps(receipt.model_dump())):
        assert "Canarynam" not in text and "Qzxwvy" not in text
        assert CANARY_CODE not in text
    assert "distinct value(s) withheld" in written  # the shifted column: counted only


def test_files_named_one_by_one(broken, landing, tmp_path, capsys):
    good = next((landing / "iom").glob("iom_case_export_*.csv"))
    assert check("--partner", "iom", good) == 0
    capsys.readouterr()
    stray = tmp_path / "cases.csv"
    stray.write_text(good.read_text(encoding="utf-8"), encoding="utf-8")
    assert check("--partner", "iom", good, stray, tmp_path / "absent.csv") == 1
    err = capsys.readouterr().err
    assert "file 'cases.csv'" in err and "file patterns" in err
    assert "file 'absent.csv'" in err and "not found" in err


def test_an_extra_file_in_the_folder_is_a_note(landing, tmp_path, capsys):
    folder = tmp_path / "iom"
    folder.mkdir()
    for path in (landing / "iom").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "README.txt").write_text("notes of the data officer\n")
    assert check("--partner", "iom", folder) == 0
    assert "file README.txt not read" in capsys.readouterr().out


def test_unknown_partner_is_a_clear_error(landing, capsys):
    assert check("--partner", "nobody", landing) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_the_check_imports_no_airflow(landing, tmp_path):
    """What the check imports must install without Airflow (pyproject's `airflow` extra)."""
    code = (
        "import sys\n"
        "from ctdc_harmonizer import cli\n"
        f"code = cli.main(['check-delivery', '--partner', 'hotline', {str(landing)!r}])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'airflow')\n"
        "assert not loaded, loaded\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_out_names_any_folder_and_only_the_receipt_is_written(landing, tmp_path, capsys):
    """--out may be a folder holding the partner's other files: none is touched."""
    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    assert check("--partner", "hotline", landing, "--out", mine) == 0
    assert check("--partner", "hotline", landing, "--out", mine) == 0  # replaced in place
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "receipt.html", "receipt.json"]
    assert (mine / "notes.txt").read_text() == "keep me\n"
