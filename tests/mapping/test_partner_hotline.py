"""The hotline partner (mappings/hotline/): age ranges, citizenships, industries, years, sample."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.ingest.deidentify import deidentify
from ctdc_harmonizer.ingest.extract import read_extract
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.samples import fake, hotline
from support.harness import all_harmonized, mapped, run_partner

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"
CODEBOOK = default_codebook()
CONFIG = load_partner(MAPPINGS / "hotline")
COLUMNS = [f.name for f in CONFIG.fields]

# Each hotline age range: the codebook bin it lies inside, or None (NULL) and whether the
# NULL is counted as a range spanning several bins.
AGE_OUTCOMES = {
    "Minor": (None, True),
    "Adult": (None, True),
    "0-5": ("0–8", False),
    "6-8": ("0–8", False),
    "9-11": ("9–17", False),
    "12-14": ("9–17", False),
    "15-17": ("9–17", False),
    "18-24": (None, True),
    "25-29": (None, True),
    "30-34": ("30–38", False),
    "35-39": (None, True),
    "40-44": ("39–47", False),
    "45-49": (None, True),
    "50+": ("48+", False),
    "Unknown": (None, False),
}


def report(**values) -> dict:
    """A third-party report about one potential victim; keyword arguments override."""
    row = {
        "report_id": "HL-19-0000001",
        "report_date": "2019-04-02T10:15:00",
        "contact_method": "Phone",
        "caller_relationship": "Service provider",
        "caller_name": "Leticia Sandoval",
        "caller_phone": "+1 312 5550123",
        "caller_email": "leticia.sandoval10@example.org",
        "victim_name": "Perla",
        "victim_gender": "Female",
        "victim_age_range": "30-34",
        "victim_citizenship": ["Mexico"],
        "trafficking_type": "Not specified",
        "industries": [],
        "control_methods": [],
        "recruiter_relations": [],
        "exploitation_country": "United States",
        "location_state": "Texas",
        "location_city": "Riverbend",
        "hotline_advocate": "Advocate Eze",
        "narrative": "Caller reported that documents were confiscated on arrival",
    }
    row.update(values)
    return row


def write_jsonl(folder: Path, rows: list[dict], name: str = "hotline_reports_test.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def harmonize(tmp_path: Path, rows: list[dict]):
    return mapped(CONFIG, write_jsonl(tmp_path / "landing" / "hotline", rows))


def harmonized(tmp_path: Path, rows: list[dict]) -> pd.DataFrame:
    return all_harmonized(CONFIG, write_jsonl(tmp_path / "landing" / "hotline", rows))


def run(landing: Path, tmp_path: Path) -> dict:
    return run_partner(landing, tmp_path, "hotline", MAPPINGS)


def release_file(info: dict, name: str) -> Path:
    return Path(info.published.release_dir) / name


# --- ages ---------------------------------------------------------------------------------------


def test_every_generated_age_label_is_known():
    known = set(CONFIG.age_ranges["key"]) | {v.casefold() for v in CONFIG.null_values}
    assert {label.casefold() for label in hotline.AGE_RANGES} <= known
    assert set(AGE_OUTCOMES) == set(hotline.AGE_RANGES)


@pytest.mark.parametrize(("label", "outcome"), sorted(AGE_OUTCOMES.items()))
def test_age_range_outcome(tmp_path, label, outcome):
    expected, counted = outcome
    result = harmonize(tmp_path, [report(victim_age_range=label)])
    value = result.harmonized.loc[0, "ageBroad"]
    assert pd.isna(value) if expected is None else value == expected
    issues = result.issues.set_index(["field", "issue"])["count"].to_dict()
    assert issues.get(("victim_age_range", "age_range_spans_bins"), 0) == int(counted)


# --- countries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("citizenships", "expected"),
    [
        (["Mexico", "United States"], "MEX"),
        (["United States", "Mexico"], "USA"),
        (["US"], "USA"),
        (["USA", "Canada"], "USA"),
        (["South Korea", "USA"], "KOR"),
        (["Unknown"], None),
        (["Unknown", "Mexico"], None),
        ([], None),
        (None, None),
    ],
)
def test_first_citizenship_counts(tmp_path, citizenships, expected):
    frame = harmonized(tmp_path, [report(victim_citizenship=citizenships)])
    value = frame.loc[0, "citizenship"]
    assert pd.isna(value) if expected is None else value == expected


@pytest.mark.parametrize("spelling", ["United States", "US", "USA", "U.S.", "us"])
def test_us_spellings(tmp_path, spelling):
    frame = harmonized(tmp_path, [report(exploitation_country=spelling)])
    assert frame.loc[0, "CountryOfExploitation"] == "USA"


# --- industries, controls, recruiters ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "values", "expected"),
    [
        ("industries", ["Escort Services"], {"isSexualExploit", "typeOfSexProstitution"}),
        ("industries", ["Illicit Massage/Spa"], {"isSexualExploit", "typeOfSexProstitution"}),
        ("industries", ["Pornography"], {"isSexualExploit", "typeOfSexPornography"}),
        ("industries", ["Remote Interactive Sexual Acts"], {"isSexualExploit"}),
        ("industries", ["Agriculture/Farms"], {"isForcedLabour", "typeOfLabourAgriculture"}),
        ("industries", ["Restaurant/Food Service"], {"isForcedLabour", "typeOfLabourHospitality"}),
        ("industries", ["Domestic Work"], {"isForcedLabour", "typeOfLabourDomesticWork"}),
        ("industries", ["Construction"], {"isForcedLabour", "typeOfLabourConstruction"}),
        ("industries", ["Traveling Sales Crews"], {"isForcedLabour"}),
        (
            "industries",
            ["Residential Brothel", "Domestic Work"],
            {
                "isSexualExploit",
                "typeOfSexProstitution",
                "isForcedLabour",
                "typeOfLabourDomesticWork",
            },
        ),
        ("industries", ["Other"], set()),
        ("trafficking_type", "Sex and Labor", {"isSexualExploit", "isForcedLabour"}),
        (
            "control_methods",
            ["Threats to report to immigration", "Withholding earnings"],
            {"meansThreats", "meansDebtBondageEarnings"},
        ),
        (
            "control_methods",
            ["Emotional abuse", "Physical abuse", "Sexual abuse"],
            {"meansAbusePsyPhySex"},
        ),
        ("control_methods", ["Isolation/Confinement"], {"meansDenyBasicNeeds"}),
        ("control_methods", ["Confiscated documents"], {"meansWithholdDocs"}),
        ("control_methods", ["Induced/Exploited substance abuse"], {"meansDrugsAlcohol"}),
        (
            "recruiter_relations",
            ["Intimate partner/Marriage proposition"],
            {"recruiterRelationIntimatePartner"},
        ),
        (
            "recruiter_relations",
            ["Family member/Caregiver", "Smuggler"],
            {"recruiterRelationFamily", "recruiterRelationOther"},
        ),
    ],
)
def test_typology_sets_variables(tmp_path, field, values, expected):
    frame = harmonized(tmp_path, [report(**{field: values})])
    assert set(frame.loc[0, CODEBOOK.binary_columns].dropna().index) == expected


def test_gender_and_unknown(tmp_path):
    genders = ["Female", "Male", "Transgender Female", "Gender Non-Conforming", "Unknown", None]
    frame = harmonized(tmp_path, [report(victim_gender=g) for g in genders])
    assert frame["gender"].tolist()[:4] == [
        "Woman",
        "Man",
        "Trans/Transgender/NonConforming",
        "Trans/Transgender/NonConforming",
    ]
    assert frame["gender"].iloc[4:].isna().all()


# --- years --------------------------------------------------------------------------------------


def test_reports_before_2015_are_rejected_and_counted(tmp_path):
    rows = [
        report(report_id="HL-14-0000001", report_date="2014-12-31T23:59:59"),
        report(report_id="HL-15-0000002", report_date="2015-01-01T00:00:00"),
        report(report_id="HL-13-0000003", report_date="2013-06-01T12:00:00"),
        report(report_id="HL-20-0000004", report_date=None),
    ]
    result = harmonize(tmp_path, rows)
    assert result.outcomes["outcome"].tolist() == ["rejected", "harmonized", "rejected", "rejected"]
    assert result.outcomes["reason"].tolist() == [
        "year_out_of_range",
        "",
        "year_out_of_range",
        "missing_year_of_registration",
    ]
    assert result.harmonized["yearOfRegistration"].tolist() == [2015]


def test_caller_fields_never_leave_the_reader(tmp_path):
    path = write_jsonl(tmp_path / "landing" / "hotline", [report()])
    staged = deidentify(CONFIG, read_extract(CONFIG, path).frame)
    dropped = {
        "caller_name",
        "caller_phone",
        "caller_email",
        "caller_relationship",
        "victim_name",
        "narrative",
        "hotline_advocate",
        "location_city",
        "contact_method",
        "location_state",
    }
    assert not dropped & set(staged.columns)
    assert staged.loc[0, "report_date"] == "2019"


def test_withdrawn_report_is_erased(tmp_path):
    landing = tmp_path / "landing"
    write_jsonl(
        landing / "hotline", [report(report_id="HL-19-0000001"), report(report_id="HL-19-0000002")]
    )
    pd.DataFrame({"record_id": ["HL-19-0000002"]}).to_csv(
        landing / "hotline" / "withdrawals.csv", index=False
    )
    info = run(landing, tmp_path)
    totals = json.loads(release_file(info, "reconciliation.json").read_text())["totals"]
    assert totals["erased"] == 1 and totals["harmonized"] == 1 and totals["unaccounted"] == 0


# --- the sample generator, end to end ----------------------------------------------------------


def test_sample_harmonizes_completely(tmp_path):
    landing = tmp_path / "landing"
    paths = hotline.generate(landing, 600, 3)
    assert {p.name for p in paths} == {hotline.FILE_NAME, "withdrawals.csv"}
    raw = pd.read_json(landing / "hotline" / hotline.FILE_NAME, lines=True, dtype=False)
    assert len(raw) == 600 and raw.columns.tolist() == COLUMNS
    assert raw["victim_citizenship"].map(lambda v: isinstance(v, list)).all()
    info = run(landing, tmp_path)
    recon = json.loads(release_file(info, "reconciliation.json").read_text())
    file = recon["partners"]["hotline"]["files"][hotline.FILE_NAME]
    assert recon["invariant_holds"] and file["unaccounted"] == 0 and file["rows_read"] == 600
    assert file["rejected"].get("year_out_of_range", 0) >= 1
    assert file["erased"] >= 1
    assert pd.read_csv(release_file(info, "unmapped.csv")).empty
    issues = pd.read_csv(release_file(info, "value_issues.csv"))
    assert set(issues["issue"]) <= {"age_range_spans_bins"}
    out = pd.read_csv(release_file(info, "harmonized.csv"), dtype=str)
    assert len(out) == file["harmonized"]
    assert out["yearOfRegistration"].astype(int).min() >= 2015
    assert (out["CountryOfExploitation"] == "USA").mean() > 0.8
    text = release_file(info, "harmonized.csv").read_text(encoding="utf-8")
    assert not any(name in text for name in (*fake.FIRST_NAMES, *fake.LAST_NAMES))


def test_sample_is_reproducible(tmp_path):
    first = hotline.generate(tmp_path / "a", 300, 5)
    second = hotline.generate(tmp_path / "b", 300, 5)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
