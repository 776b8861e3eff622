"""Withdrawals that cannot be lost: the normaliser, matching, every error case, end to end.

Planted identifiers (names, dates of birth, case ids) must never appear in an error
message, stdout, a log line or a file under the out folder.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from ctdc_harmonizer import cli, samples
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest.withdrawals import (
    KEY_SEPARATOR,
    erased_rows,
    identity_key,
    is_withdrawals_file,
    load_withdrawals,
    normalized_date,
    normalized_text,
)
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.mapping.spec import FieldSpec
from ctdc_harmonizer.pipeline.annual_update import stage_partner
from ctdc_harmonizer.run import plan as planning
from ctdc_harmonizer.run.workdir import PartnerWork
from support.tiny_partner import PARTNER_YAML, row, write_extract, write_partner

PLANTED = ["Zorana", "Plantedova", "1987-11-23", "23/11/1987", "CASE-PLANTED-4411"]
BY_IDENTITY_YAML = PARTNER_YAML.replace(
    "record_id: case_id\n", "withdrawals:\n  match_on: [full_name, born_on]\n"
)
NO_METHOD_YAML = PARTNER_YAML.replace("record_id: case_id\n", "")


# --- the normaliser ------------------------------------------------------------------------


def test_names_ignore_accents_case_and_spacing():
    names = pd.Series(
        ["Zoë  Núñez", "ZOE NUNEZ", " zoe\tnunez ", "Janković", "Straße", "", None, "ﬁona"],
        dtype=object,
    )
    assert normalized_text(names).tolist() == [
        "zoe nunez",
        "zoe nunez",
        "zoe nunez",
        "jankovic",
        "strasse",
        pd.NA,
        pd.NA,
        "fiona",
    ]


def test_different_names_stay_different():
    names = normalized_text(pd.Series(["Jankovic", "Jankovich", "Jan Kovic"]))
    assert names.nunique() == 3


def test_dates_from_excel_cells_iso_text_and_declared_format():
    cells = pd.Series(
        [
            dt.datetime(1987, 11, 23),
            pd.Timestamp("1987-11-23 00:00"),
            "1987-11-23",
            " 1987-11-23 ",
            "23/11/1987",
            "not a date",
            None,
            33000.0,
        ],
        dtype=object,
    )
    assert normalized_date(cells, "%d/%m/%Y").tolist() == ["1987-11-23"] * 5 + [pd.NA] * 3
    # Without a declared format only ISO 8601 (and date cells) are dates.
    assert normalized_date(cells.iloc[[2, 4]]).tolist() == ["1987-11-23", pd.NA]


def test_identity_key_is_missing_when_any_part_is():
    fields = [FieldSpec("first", "identifier"), FieldSpec("born", "date")]
    frame = pd.DataFrame(
        {
            "first": ["Zoë", "zoe", None, "Zoe"],
            "born": ["2001-02-03", "2001-02-03", "2001-02-03", ""],
        }
    )
    keys = identity_key(frame, fields)
    assert keys.iloc[0] == keys.iloc[1] == f"zoe{KEY_SEPARATOR}2001-02-03"
    assert keys.iloc[2:].isna().all()


def test_withdrawals_file_name_in_any_case():
    assert all(map(is_withdrawals_file, ["withdrawals.csv", "Withdrawals.csv", "WITHDRAWALS.CSV"]))
    assert not is_withdrawals_file("withdrawals_2024.csv")


# --- matching ------------------------------------------------------------------------------


def identity_partner(tmp_path, withdrawals: str, name="Withdrawals.csv"):
    config = load_partner(write_partner(tmp_path, **{"partner.yaml": BY_IDENTITY_YAML}))
    folder = tmp_path / "landing" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(withdrawals, encoding="utf-8")
    return config, load_withdrawals(config, tmp_path / "landing")


def test_a_person_with_two_records_is_erased_twice_others_kept(tmp_path):
    config, withdrawals = identity_partner(
        tmp_path, "full_name,born_on\n  ZORANA   plantedova ,1987-11-23\n"
    )
    extract = pd.DataFrame(
        {
            "full_name": ["Zorana Plantedova", "Zoräna Plantedova", "Zorana Plantedova", "Ana B"],
            "born_on": ["1987-11-23", "1987-11-23", "1987-11-24", "1987-11-23"],
        }
    )
    keys = [
        identity_key(extract.iloc[:2], withdrawals.fields),
        identity_key(extract.iloc[2:], withdrawals.fields),
    ]
    assert erased_rows(withdrawals, keys).tolist() == [True, True, False, False]


def test_a_withdrawal_matching_nothing_names_its_line_never_its_value(tmp_path):
    config, withdrawals = identity_partner(
        tmp_path, "full_name,born_on\nAna B,1990-01-01\n\nZorana Plantedova,1987-11-23\n"
    )
    extract = pd.DataFrame({"full_name": ["Ana B"], "born_on": ["1990-01-01"]})
    with pytest.raises(ExtractError) as err:
        erased_rows(withdrawals, [identity_key(extract, withdrawals.fields)])
    assert (err.value.file, err.value.row) == ("Withdrawals.csv", 4)  # the blank line counts
    assert_no_planted(str(err.value))


# --- the pipeline: every withdrawals file that cannot be applied is exit 1 -------------------


def assert_no_planted(*texts: str) -> None:
    for text in texts:
        for value in PLANTED:
            assert value.casefold() not in text.casefold(), "a planted identifier escaped"


def run_cli(
    tmp_path,
    capsys,
    caplog,
    partner_yaml: str,
    withdrawals: str | bytes,
    name="withdrawals.csv",
    *options: str,
):
    write_partner(tmp_path, **{"partner.yaml": partner_yaml})
    rows = [
        row(case_id="CASE-PLANTED-4411", full_name="Zorana Plantedova", born_on="1987-11-23"),
        row(case_id="B2", full_name="Zorana Plantedova", born_on="1987-11-23", gender="F"),
        row(case_id="C3", full_name="Ana Kept", born_on="1990-01-01"),
    ]
    write_extract(tmp_path, rows)
    path = tmp_path / "landing" / "tiny" / name
    if isinstance(withdrawals, bytes):
        path.write_bytes(withdrawals)
    else:
        path.write_text(withdrawals, encoding="utf-8")
    caplog.set_level(logging.DEBUG)
    code = cli.main(
        [
            "run",
            "--landing",
            str(tmp_path / "landing"),
            "--out",
            str(tmp_path / "out"),
            "--release",
            "2025",
            "--mappings",
            str(tmp_path / "mappings"),
            "--warehouse",
            f"sqlite:///{tmp_path}/w.sqlite",
            *options,
        ]
    )
    captured = capsys.readouterr()
    written = "".join(
        p.read_bytes().decode("utf-8", errors="ignore")
        for p in (tmp_path / "out").rglob("*")
        if p.is_file() and p.suffix != ".sqlite"
    )
    assert_no_planted(captured.out, captured.err, caplog.text, written)
    return code, captured.err


ERROR_CASES = {
    "no record id and no match fields (ctdc_legacy)": (
        NO_METHOD_YAML,
        "record_id\nCASE-PLANTED-4411\n",
        ["neither 'record_id' nor 'withdrawals: {match_on", "mappings/tiny/partner.yaml"],
    ),
    "record id column misnamed": (
        PARTNER_YAML,
        "case_id\nCASE-PLANTED-4411\n",
        ["column 'record_id', row 1: required column is missing"],
    ),
    "identity column missing": (
        BY_IDENTITY_YAML,
        "full name,born_on\nZorana Plantedova,1987-11-23\n",
        ["column 'full_name', row 1: required column is missing", "full_name + born_on"],
    ),
    "record id matches nothing": (
        PARTNER_YAML,
        "record_id\nCASE-PLANTED-4411\nCASE-PLANTED-4411X\n",
        ["row 3: withdrawal matches no delivered record"],
    ),
    "identity matches nothing (other date of birth)": (
        BY_IDENTITY_YAML,
        "full_name,born_on\nZorana Plantedova,1987-11-22\n",
        ["row 2: withdrawal matches no delivered record", "full_name, born_on"],
    ),
    "empty cell": (
        BY_IDENTITY_YAML,
        "full_name,born_on\nZorana Plantedova,\n",
        ["column 'born_on', row 2: empty value"],
    ),
    "unreadable date": (
        BY_IDENTITY_YAML,
        "full_name,born_on\nZorana Plantedova,23/11/1987\n",
        ["column 'born_on', row 2: not a date (YYYY-MM-DD)"],
    ),
    "too many fields on a line": (
        PARTNER_YAML,
        "record_id\nCASE-PLANTED-4411\nB2,Zorana Plantedova\n",
        ["row 3: line has 2 fields, the header has 1"],
    ),
    "unclosed quote": (
        PARTNER_YAML,
        'record_id\n"CASE-PLANTED-4411\n',
        ["cannot be parsed as CSV"],
    ),
    "not UTF-8": (
        BY_IDENTITY_YAML,
        "full_name,born_on\nZoräna Plantedova,1987-11-23\n".encode("latin-1"),
        ["not readable as utf-8"],
    ),
    "empty file": (PARTNER_YAML, "", ["the file is empty"]),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=list(ERROR_CASES))
def test_withdrawals_that_cannot_be_applied_stop_the_run(tmp_path, capsys, caplog, case):
    partner_yaml, withdrawals, expected = ERROR_CASES[case]
    code, err = run_cli(tmp_path, capsys, caplog, partner_yaml, withdrawals, "Withdrawals.csv")
    assert code == 1
    assert err.startswith("ctdc: error: partner 'tiny', file 'Withdrawals.csv'")
    for text in expected:
        assert text in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "2025").exists()


def test_unreadable_file_is_an_error_not_a_skip(tmp_path, capsys, caplog, monkeypatch):
    # Tests may run as root, which reads any file: the OS refusal is simulated.
    read_bytes = Path.read_bytes

    def refuse(self, *args, **kwargs):
        if is_withdrawals_file(self):
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    # In this process: a worker forked from the fork server would not have the patch.
    code, err = run_cli(
        tmp_path,
        capsys,
        caplog,
        PARTNER_YAML,
        "record_id\nB2\n",
        "withdrawals.csv",
        "--workers",
        "1",
    )
    assert code == 1
    assert "file 'withdrawals.csv': cannot be read: EACCES (Permission denied)" in err


def test_a_folder_or_a_link_out_of_the_landing_is_refused(tmp_path, capsys, caplog):
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("record_id\nCASE-PLANTED-4411\n")
    (tmp_path / "landing" / "tiny").mkdir(parents=True)
    (tmp_path / "landing" / "tiny" / "WITHDRAWALS.CSV").symlink_to(outside)
    code, err = run_cli(tmp_path, capsys, caplog, PARTNER_YAML, "record_id\nB2\n", "notes.txt")
    assert code == 1 and "not a regular file inside the partner's landing folder" in err


def test_two_withdrawals_files_differing_in_case(tmp_path, capsys, caplog):
    (tmp_path / "landing" / "tiny").mkdir(parents=True)
    (tmp_path / "landing" / "tiny" / "withdrawals.csv").write_text("record_id\nB2\n")
    code, err = run_cli(
        tmp_path, capsys, caplog, PARTNER_YAML, "record_id\nC3\n", "Withdrawals.csv"
    )
    assert code == 1 and "second withdrawals file" in err


# --- applied: counted as erased, never read as an extract ---------------------------------------


def reconciliation(tmp_path) -> dict:
    return json.loads((tmp_path / "out" / "2025" / "reconciliation.json").read_text())


@pytest.mark.parametrize("name", ["withdrawals.csv", "Withdrawals.csv", "WITHDRAWALS.CSV"])
def test_file_name_in_any_case_is_applied_not_read_as_an_extract(tmp_path, capsys, caplog, name):
    code, err = run_cli(
        tmp_path, capsys, caplog, PARTNER_YAML, "Record_ID\n CASE-PLANTED-4411 \n", name
    )
    assert code == 0, err
    recon = reconciliation(tmp_path)
    assert list(recon["partners"]["tiny"]["files"]) == [
        "extract.csv"
    ]  # the tiny partner reads *.csv
    assert recon["totals"]["erased"] == 1 and recon["totals"]["rows_read"] == 3


def test_by_identity_erases_every_record_of_the_person(tmp_path, capsys, caplog):
    code, err = run_cli(
        tmp_path,
        capsys,
        caplog,
        BY_IDENTITY_YAML,
        "FULL_NAME,born_on\n zorana  PLANTEDOVA,1987-11-23\n",
    )
    assert code == 0, err
    file = reconciliation(tmp_path)["partners"]["tiny"]["files"]["extract.csv"]
    assert (file["rows_read"], file["erased"], file["harmonized"], file["unaccounted"]) == (
        3,
        2,
        1,
        0,
    )


def test_match_fields_are_read_only_for_matching_and_dropped(tmp_path):
    write_partner(tmp_path, **{"partner.yaml": BY_IDENTITY_YAML})
    write_extract(tmp_path, [row(full_name="Zorana Plantedova", born_on="1987-11-23"), row()])
    (tmp_path / "landing" / "tiny" / "withdrawals.csv").write_text(
        "full_name,born_on\nZorana Plantedova,1987-11-23\n"
    )
    plan = planning.plan_release(
        str(tmp_path / "landing"),
        str(tmp_path / "out"),
        "2025",
        ["tiny"],
        str(tmp_path / "mappings"),
    )
    counts = stage_partner(plan, "tiny")
    work = PartnerWork(counts.work, "tiny")
    staged = work.read_frame(work.STAGED)
    assert counts.erased == 1 and len(staged) == 1
    assert "full_name" not in staged.columns
    assert_no_planted(staged.astype(str).to_csv())


# --- the HTCDS template (no case id), end to end ------------------------------------------------


def test_htcds_sample_withdraws_by_name_and_birthdate(tmp_path, capsys):
    paths = samples.generate("case_management", tmp_path / "landing", n=120, seed=5)
    assert [p.name for p in paths] == ["htcds_case_export.xlsx", "withdrawals.csv"]
    requests = pd.read_csv(paths[1], dtype=str, keep_default_na=False)
    assert list(requests.columns) == ["prs_FirstName", "prs_SecondName", "prs_Birthdate"]
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
            "case_management",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    totals = reconciliation(tmp_path)["partners"]["case_management"]["totals"]
    # Two people withdrew; the first was referred twice: three records erased.
    assert totals["erased"] == 3 and totals["unaccounted"] == 0
    names = requests["prs_SecondName"].str.strip().str.casefold()
    released = "".join(
        p.read_bytes().decode("utf-8", errors="ignore").casefold()
        for p in (tmp_path / "out").rglob("*")
        if p.is_file()
    )
    for text in [*names, *requests["prs_Birthdate"]]:
        assert text not in released and text not in captured.out + captured.err
