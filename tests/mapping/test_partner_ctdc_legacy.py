"""Partner ctdc_legacy: the previous CTDC Global Dataset layout, onboarded with files only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.ingest.files import find_extract_files
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.run.file_check import harmonize_file
from ctdc_harmonizer.samples import ctdc_legacy

CODEBOOK = default_codebook()
PARTNER = "ctdc_legacy"
MAPPING = mappings_dir() / PARTNER
RELEASE = "2025"
NON_YEAR = [c for c in CODEBOOK.columns if c != "yearOfRegistration"]


def harmonize_rows(tmp_path: Path, rows: list[dict], missing: str = "-99"):
    """Rows (other columns `missing`) as one old-layout file, mapped by the engine."""
    folder = tmp_path / "land" / PARTNER
    folder.mkdir(parents=True, exist_ok=True)
    base = dict.fromkeys(ctdc_legacy.COLUMNS, missing) | {"yearOfRegistration": "2015"}
    frame = pd.DataFrame([base | row for row in rows], columns=ctdc_legacy.COLUMNS)
    frame.to_csv(folder / "ctdc_global_2019_kanon.csv", index=False)
    config = load_partner(MAPPING)
    (path,) = find_extract_files(config, tmp_path / "land")
    return harmonize_file(config, path, year_max=int(RELEASE))


def run_pipeline(landing: Path, out: Path, partner: str = PARTNER, mappings: str | None = None):
    return run_annual_update(
        str(landing),
        str(out),
        RELEASE,
        [partner],
        mappings,
        warehouse_url=f"sqlite:///{out}/w.sqlite",
    )


def test_header_has_the_63_columns_of_codebook_v7():
    columns = ctdc_legacy.COLUMNS
    assert len(columns) == 63 and len(set(columns)) == 63
    assert columns[:9] == [
        "yearOfRegistration",
        "Datasource",
        "gender",
        "ageBroad",
        "majorityStatus",
        "majorityStatusAtExploit",
        "majorityEntry",
        "citizenship",
        "meansOfControlDebtBondage",
    ]
    assert columns[-1] == "recruiterRelationUnknown"
    declared = [f.name for f in load_partner(MAPPING).fields]
    assert [c for c in declared if c in columns] == columns  # every column, in file order


def test_no_record_id_so_no_withdrawals_or_duplicates():
    assert load_partner(MAPPING).record_id == ""


def test_sample_harmonizes_with_every_row_accounted_for(tmp_path):
    paths = ctdc_legacy.generate(tmp_path / "land", 600, 7)
    assert [p.name for p in paths] == ["ctdc_global_2020_kanon.csv", "ctdc_global_2021.csv"]
    assert pd.read_csv(paths[0], dtype=str, nrows=0).columns.tolist() == ctdc_legacy.COLUMNS
    info = run_pipeline(tmp_path / "land", tmp_path / "out")
    totals = info.folder.totals
    assert totals["rows_read"] == 600
    assert totals["unaccounted"] == 0
    assert totals["harmonized"] == 600
    release = Path(info.published.release_dir)
    assert pd.read_csv(release / "unmapped.csv").empty
    assert pd.read_csv(release / "value_issues.csv").empty
    harmonized = pd.read_csv(release / "harmonized.csv", dtype=str, keep_default_na=False)
    assert harmonized["yearOfRegistration"].astype(int).between(2002, 2021).all()
    assert set(harmonized["ageBroad"]) - {""} <= set(CODEBOOK.variable("ageBroad").allowed)
    for column in CODEBOOK.binary_columns:
        assert set(harmonized[column]) <= {"", "1"}


@pytest.mark.parametrize(("old", "new"), sorted(CODEBOOK.merges().items()))
def test_appendix_ii_merge_of_each_old_flag(tmp_path, old, new):
    result = harmonize_rows(tmp_path, [{old: "1"}])
    row = result.harmonized.iloc[0]
    assert row[new] == "1"
    assert row[[c for c in NON_YEAR if c != new]].isna().all()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("isSexAndLabour", {"isForcedLabour", "isSexualExploit"}),
        ("isForcedMarriage", {"isOtherExploit"}),
        ("isForcedMilitary", {"isOtherExploit"}),
        ("isOrganRemoval", {"isOtherExploit"}),
        ("isSlaveryAndPractices", {"isOtherExploit"}),
        ("typeOfLabourHospitality", {"typeOfLabourHospitality"}),
        ("recruiterRelationFriend", {"recruiterRelationFriend"}),
        ("typeOfLabourAquafarming", set()),
        ("meansOfControlOther", set()),
        ("recruiterRelationUnknown", set()),
    ],
)
def test_other_flags(tmp_path, old, new):
    row = harmonize_rows(tmp_path, [{old: "1"}]).harmonized.iloc[0]
    assert set(row[NON_YEAR].dropna().index) == new


def test_concatenated_columns_are_not_read(tmp_path):
    row = harmonize_rows(
        tmp_path,
        [
            {
                "meansOfControlConcatenated": "Debt bondage;Physical abuse",
                "typeOfExploitConcatenated": "Forced labour",
                "typeOfLabourConcatenated": "Construction",
                "typeOfSexConcatenated": "Prostitution",
                "RecruiterRelationship": "Family/Relative",
            }
        ],
    ).harmonized.iloc[0]
    assert row[NON_YEAR].isna().all()


@pytest.mark.parametrize("missing", ["-99", "", "NULL"])
def test_missing_everywhere_gives_nulls(tmp_path, missing):
    result = harmonize_rows(tmp_path, [{}], missing=missing)
    assert len(result.harmonized) == 1
    assert result.harmonized.iloc[0][NON_YEAR].isna().all()
    assert result.unmapped.empty and result.issues.empty


def test_zero_flags_feed_nothing(tmp_path):
    flags = [f.name for f in load_partner(MAPPING).fields_with_role("coded")]
    flags = [f for f in flags if f not in {"Datasource", "gender"}]
    row = harmonize_rows(tmp_path, [dict.fromkeys(flags, "0")]).harmonized.iloc[0]
    assert row[NON_YEAR].isna().all()


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("18--20", "18–20"), ("09--17", "9–17"), ("9--17", "9–17"), ("0--8", "0–8"), ("48+", "48+")],
)
def test_old_age_spellings(tmp_path, spelling, canonical):
    result = harmonize_rows(tmp_path, [{"ageBroad": spelling}])
    assert result.harmonized.iloc[0]["ageBroad"] == canonical
    assert result.unmapped.empty


@pytest.mark.parametrize(
    ("code", "iso3"),
    [
        ("00", None),
        ("ZZ", None),
        ("AN", None),
        ("UA", "UKR"),
        ("ZR", "COD"),
        ("Y1", "SRB"),
        ("TB", "CHN"),
        ("XK", "SRB"),
    ],
)
def test_countries(tmp_path, code, iso3):
    result = harmonize_rows(tmp_path, [{"citizenship": code, "CountryOfExploitation": code}])
    row = result.harmonized.iloc[0]
    for column in ("citizenship", "CountryOfExploitation"):
        assert (row[column] if pd.notna(row[column]) else None) == iso3
    assert result.unmapped.empty


@pytest.mark.parametrize(
    ("gender", "expected"),
    [
        ("Male", "Man"),
        ("Female", "Woman"),
        ("Transgender/NonConforming", "Trans/Transgender/NonConforming"),
        ("Transgender", "Trans/Transgender/NonConforming"),
        ("Unknown", None),
    ],
)
def test_gender(tmp_path, gender, expected):
    row = harmonize_rows(tmp_path, [{"gender": gender}]).harmonized.iloc[0]
    assert (row["gender"] if pd.notna(row["gender"]) else None) == expected


def test_unknown_value_is_reported_not_guessed(tmp_path):
    result = harmonize_rows(tmp_path, [{"gender": "Other"}, {"meansOfControlThreats": "2"}])
    assert set(result.unmapped["field"]) == {"gender", "meansOfControlThreats"}
    assert result.harmonized[NON_YEAR].isna().all().all()


def test_year_after_the_last_old_release_is_rejected(tmp_path):
    result = harmonize_rows(tmp_path, [{"yearOfRegistration": "2023"}, {"Datasource": "Hotline"}])
    assert result.outcomes["reason"].tolist() == ["year_out_of_range", ""]


def test_onboarding_from_a_folder_of_mapping_files_only(tmp_path):
    """A new partner in the old layout: copy the folder, rename the code, run. No Python."""
    mappings = tmp_path / "mappings"
    folder = mappings / "some_new_partner"
    shutil.copytree(MAPPING, folder)
    config = yaml.safe_load((folder / "partner.yaml").read_text(encoding="utf-8"))
    text = (folder / "partner.yaml").read_text(encoding="utf-8")
    text = text.replace(f"partner: {config['partner']}", "partner: some_new_partner", 1)
    (folder / "partner.yaml").write_text(text, encoding="utf-8")

    landing = tmp_path / "land"
    ctdc_legacy.generate(landing, 300, 11)
    (landing / PARTNER).rename(landing / "some_new_partner")
    info = run_pipeline(landing, tmp_path / "out", "some_new_partner", str(mappings))
    assert info.folder.totals["rows_read"] == 300
    assert info.folder.totals["harmonized"] == 300
    assert info.folder.totals["unaccounted"] == 0
    assert pd.read_csv(Path(info.published.release_dir) / "unmapped.csv").empty
