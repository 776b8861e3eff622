"""The IOM partner (mappings/iom/): legacy and MiMOSA records, Appendix II rules, sample."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.samples import fake, iom
from support.harness import all_harmonized, mapped, run_partner

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"
CODEBOOK = default_codebook()
CONFIG = load_partner(MAPPINGS / "iom")
COLUMNS = [f.name for f in CONFIG.fields]
FLAGS = [name for name in COLUMNS if name.startswith("meansOfControl")]
LOCATIONS = [s.field for s in CONFIG.derive["CountryOfExploitation"]]
MEANS = [v.name for v in CODEBOOK.variables if v.group == "means_of_control"]


def legacy_row(**values: str) -> dict:
    """A legacy record (2002-2011 columns) with every flag 0; keyword arguments override."""
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        case_id="LGC-2010-000001",
        data_system="LEGACY",
        beneficiary_category="Victim of trafficking",
        consent_to_share_data="Y",
        beneficiary_first_name="Amara",
        beneficiary_last_name="Eze",
        legacy_sex="F",
        legacy_age="24",
        nationality="Ukraine",
        legacy_registration_year="2010",
        registering_mission_country="Ukraine",
        trafficking_duration_months="14",
        case_notes="Client disclosed that wages were withheld for seven months",
    )
    row.update(dict.fromkeys(FLAGS, "0"))
    row.update(values)
    return row


def mimosa_row(**values: str) -> dict:
    """A MiMOSA record (2012 on) with every flag No; keyword arguments override."""
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        case_id="MIM-2016-000001",
        data_system="MIMOSA",
        beneficiary_category="Victim of trafficking",
        consent_to_share_data="Yes",
        beneficiary_first_name="Bilal",
        beneficiary_last_name="Umarov",
        mimosa_gender="Female",
        mimosa_date_of_birth="15/03/1992",
        nationality="Ukraine",
        mimosa_registration_date="01/06/2016",
        registering_mission_country="Ukraine",
        trafficking_duration_months="14",
        phone_number="+380 67 1234567",
    )
    row.update(dict.fromkeys(FLAGS, "No"))
    row.update(values)
    return row


def write_csv(folder: Path, rows: list[dict], name: str = "iom_case_export_test.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


def harmonize(tmp_path: Path, rows: list[dict]):
    return mapped(CONFIG, write_csv(tmp_path / "landing" / "iom", rows))


def harmonized(tmp_path: Path, rows: list[dict]) -> pd.DataFrame:
    return all_harmonized(CONFIG, write_csv(tmp_path / "landing" / "iom", rows))


def run(landing: Path, tmp_path: Path) -> dict:
    return run_partner(landing, tmp_path, "iom", MAPPINGS)


def release_file(info: dict, name: str) -> Path:
    return Path(info.published.release_dir) / name


# --- Appendix II: the 17 flags of the previous scheme -----------------------------------------


def test_every_previous_flag_is_an_iom_coded_column():
    merges = CODEBOOK.merges()
    assert set(merges) | {"meansOfControlOther"} == set(FLAGS)
    assert len(FLAGS) == 17
    assert all(CONFIG.field(name).role == "coded" for name in FLAGS)


@pytest.mark.parametrize(("flag", "variable"), sorted(default_codebook().merges().items()))
def test_each_flag_lands_in_its_appendix_ii_variable_only(tmp_path, flag, variable):
    frame = harmonized(tmp_path, [legacy_row(**{flag: "1"}), mimosa_row(**{flag: "Yes"})])
    for i in range(2):
        assert frame.loc[i, variable] == "1"
        others = [name for name in CODEBOOK.binary_columns if name != variable]
        assert frame.loc[i, others].isna().all(), frame.loc[i, others].dropna()


def test_other_flag_and_unset_flags_feed_nothing(tmp_path):
    rows = [
        legacy_row(meansOfControlOther="1"),
        mimosa_row(meansOfControlOther="Yes"),
        legacy_row(),  # all 0
        mimosa_row(),  # all No
        legacy_row(**dict.fromkeys(FLAGS, "")),  # not recorded
    ]
    frame = harmonized(tmp_path, rows)
    assert frame[MEANS].isna().all().all()


def test_several_flags_of_one_merge_give_one(tmp_path):
    frame = harmonized(
        tmp_path,
        [
            legacy_row(
                meansOfControlThreats="1",
                meansOfControlUsesChildren="1",
                meansOfControlThreatOfLawEnforcement="1",
            )
        ],
    )
    assert frame.loc[0, "meansThreats"] == "1"
    assert frame.loc[0, [m for m in MEANS if m != "meansThreats"]].isna().all()


# --- countries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "iso3"),
    [
        ("Kosovo", "SRB"),
        ("Tibet", "CHN"),
        ("Kosovo (UNSCR 1244)", "SRB"),
        ("Viet Nam", "VNM"),
        ("Vietnam", "VNM"),
        ("Republic of Moldova", "MDA"),
        ("Lao PDR", "LAO"),
        ("Russia", "RUS"),
        ("Turkey", "TUR"),
        ("Cote d'Ivoire", "CIV"),
        ("Unknown", None),
        ("Stateless", None),
    ],
)
def test_country_spellings_for_citizenship_and_exploitation(tmp_path, spelling, iso3):
    frame = harmonized(
        tmp_path, [mimosa_row(nationality=spelling, last_country_of_exploitation=spelling)]
    )
    if iso3 is None:
        assert pd.isna(frame.loc[0, "citizenship"])
        # An unknown last country falls back to the next source (here the mission).
        assert frame.loc[0, "CountryOfExploitation"] == "UKR"
    else:
        assert frame.loc[0, "citizenship"] == iso3
        assert frame.loc[0, "CountryOfExploitation"] == iso3


@pytest.mark.parametrize("first", range(4))
def test_country_of_exploitation_fallback_order(tmp_path, first):
    """Source `first` is the first non-empty one: it wins over every later source."""
    countries = ["Thailand", "Malaysia", "Indonesia", "Viet Nam"]
    expected = ["THA", "MYS", "IDN", "VNM"][first]
    cells = {name: (countries[i] if i >= first else "") for i, name in enumerate(LOCATIONS)}
    only = {name: (countries[i] if i == first else "") for i, name in enumerate(LOCATIONS)}
    frame = harmonized(tmp_path, [legacy_row(**cells), legacy_row(**only)])
    assert frame.loc[0, "CountryOfExploitation"] == expected
    assert frame.loc[1, "CountryOfExploitation"] == expected


def test_fallback_sources_are_appendix_ii_order():
    assert LOCATIONS == [
        "last_country_of_exploitation",
        "screening_interview_location",
        "location_upon_registration",
        "registering_mission_country",
    ]


def test_no_location_gives_null(tmp_path):
    frame = harmonized(tmp_path, [legacy_row(registering_mission_country="")])
    assert pd.isna(frame.loc[0, "CountryOfExploitation"])


# --- legacy and MiMOSA columns -----------------------------------------------------------------


def test_legacy_and_mimosa_columns_give_the_same_values(tmp_path):
    shared = dict(
        nationality="Lao PDR",
        last_country_of_exploitation="Thailand",
        type_of_exploitation="Forced labour|Sexual exploitation",
        labour_sector="Fishing|Construction",
        sexual_exploitation_type="Prostitution",
        recruiter_relationship="Neighbour|Employer",
        trafficking_duration_months="30",
    )
    legacy = legacy_row(
        legacy_sex="m",
        legacy_age="17",
        legacy_registration_year="2011",
        meansOfControlDebtBondage="1",
        meansOfControlRestrictsMovement="1",
        meansOfControlWithholdsDocuments="1",
        **shared,
    )
    # 17 on the registration date: the 18th birthday is one day later.
    mimosa = mimosa_row(
        mimosa_gender="Male",
        mimosa_date_of_birth="02/03/1995",
        mimosa_registration_date="01/03/2013",
        meansOfControlDebtBondage="Yes",
        meansOfControlRestrictsMovement="Yes",
        meansOfControlWithholdsDocuments="Yes",
        **shared,
    )
    frame = harmonized(tmp_path, [legacy, mimosa])
    assert frame["yearOfRegistration"].tolist() == [2011, 2013]
    rest = [c for c in CODEBOOK.columns if c != "yearOfRegistration"]
    pd.testing.assert_series_equal(frame.loc[0, rest], frame.loc[1, rest], check_names=False)
    expected = {
        "gender": "Man",
        "ageBroad": "9–17",
        "citizenship": "LAO",
        "CountryOfExploitation": "THA",
        "traffickMonths": "25+ (2+ yrs)",
        "meansDebtBondageEarnings": "1",
        "meansDenyBasicNeeds": "1",
        "meansWithholdDocs": "1",
        "isForcedLabour": "1",
        "isSexualExploit": "1",
        "typeOfLabourConstruction": "1",
        "typeOfSexProstitution": "1",
        "recruiterRelationFriend": "1",
        "recruiterRelationOther": "1",
    }
    assert frame.loc[0, rest].dropna().to_dict() == expected


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("type_of_exploitation", "Begging", "isForcedLabour"),
        ("type_of_exploitation", "Forced marriage", "isOtherExploit"),
        ("type_of_exploitation", "Slavery and similar practices", "isOtherExploit"),
        ("type_of_exploitation", "Removal of organs", "isOtherExploit"),
        ("labour_sector", "Agriculture", "typeOfLabourAgriculture"),
        ("labour_sector", "Domestic work", "typeOfLabourDomesticWork"),
        ("labour_sector", "Hospitality", "typeOfLabourHospitality"),
        ("labour_sector", "Fishing", None),
        ("recruiter_relationship", "Neighbour", "recruiterRelationFriend"),
        ("recruiter_relationship", "Recruitment agency", "recruiterRelationOther"),
        ("recruiter_relationship", "Family member", "recruiterRelationFamily"),
        ("recruiter_relationship", "Intimate partner", "recruiterRelationIntimatePartner"),
    ],
)
def test_iom_wording(tmp_path, field, value, variable):
    frame = harmonized(tmp_path, [mimosa_row(**{field: value})])
    set_ = frame.loc[0, CODEBOOK.binary_columns].dropna().index.tolist()
    assert set_ == ([variable] if variable else [])


# --- row outcomes -------------------------------------------------------------------------------


def test_consent_category_and_missing_year(tmp_path):
    rows = [
        legacy_row(consent_to_share_data="N"),
        mimosa_row(consent_to_share_data="No"),
        mimosa_row(beneficiary_category="Vulnerable migrant"),
        legacy_row(legacy_registration_year=""),
        mimosa_row(mimosa_registration_date=""),
        legacy_row(consent_to_share_data=""),  # consent not recorded: not a refusal
        mimosa_row(beneficiary_category="Presumed victim of trafficking"),
    ]
    outcomes = harmonize(tmp_path, rows).outcomes
    assert outcomes["outcome"].tolist() == ["excluded"] * 3 + ["rejected"] * 2 + ["harmonized"] * 2
    assert outcomes["reason"].tolist()[:5] == [
        "consent_refused",
        "consent_refused",
        "not_a_victim",
        "missing_year_of_registration",
        "missing_year_of_registration",
    ]


def test_duplicates_merged_and_withdrawals_erased(tmp_path):
    landing = tmp_path / "landing"
    rows = [
        legacy_row(case_id="LGC-2011-000007", legacy_registration_year="2011"),
        legacy_row(case_id="LGC-2009-000008", legacy_registration_year="2009"),
        mimosa_row(case_id="MIM-2015-000009", mimosa_registration_date="03/02/2015"),
        # The legacy case cross-referenced in MiMOSA: exported again, the later copy stays.
        mimosa_row(case_id="LGC-2011-000007", mimosa_registration_date="10/10/2012"),
        mimosa_row(case_id="MIM-2020-000010", mimosa_registration_date="05/05/2020"),
    ]
    write_csv(landing / "iom", rows)
    # Every listed id must match a delivered record (one that matches none is an error:
    # tests/privacy/test_withdrawals.py).
    pd.DataFrame({"record_id": ["LGC-2009-000008"]}).to_csv(
        landing / "iom" / "withdrawals.csv", index=False
    )
    info = run(landing, tmp_path)
    recon = json.loads(release_file(info, "reconciliation.json").read_text())
    totals = recon["partners"]["iom"]["totals"]
    assert recon["invariant_holds"]
    assert totals == {
        "rows_read": 5,
        "harmonized": 3,
        "new": 3,  # a first delivery: every harmonized row is a new record
        "revised": 0,
        "unchanged": 0,
        "rejected": 0,
        "excluded": 0,
        "erased": 1,
        "duplicates_merged": 1,
        "unaccounted": 0,
    }
    out = pd.read_csv(release_file(info, "harmonized.csv"), dtype=str)
    assert sorted(out["yearOfRegistration"]) == ["2012", "2015", "2020"]


# --- the sample generator, end to end ----------------------------------------------------------


def test_sample_harmonizes_completely(tmp_path):
    landing = tmp_path / "landing"
    paths = iom.generate(landing, 600, 11)
    assert {p.name for p in paths} == {iom.FILE_NAME, "withdrawals.csv"}
    raw = pd.read_csv(landing / "iom" / iom.FILE_NAME, dtype=str, keep_default_na=False)
    assert len(raw) == 600
    assert raw.columns.tolist() == COLUMNS
    assert set(raw["data_system"]) == {"LEGACY", "MIMOSA"}
    legacy = raw[raw["data_system"] == "LEGACY"]
    assert legacy["mimosa_gender"].eq("").all() and legacy["mimosa_registration_date"].eq("").all()
    info = run(landing, tmp_path)
    recon = json.loads(release_file(info, "reconciliation.json").read_text())
    totals = recon["partners"]["iom"]["totals"]
    assert recon["invariant_holds"] and totals["unaccounted"] == 0
    assert totals["rows_read"] == 600
    assert totals["erased"] >= 1 and totals["duplicates_merged"] >= 1
    file = recon["partners"]["iom"]["files"][iom.FILE_NAME]
    assert file["excluded"].get("consent_refused", 0) >= 1
    assert file["rejected"].get("missing_year_of_registration", 0) >= 1
    assert set(file["rejected"]) == {"missing_year_of_registration"}
    assert pd.read_csv(release_file(info, "unmapped.csv")).empty
    assert pd.read_csv(release_file(info, "value_issues.csv")).empty
    out = pd.read_csv(release_file(info, "harmonized.csv"), dtype=str)
    assert len(out) == totals["harmonized"]
    assert out.columns.tolist() == CODEBOOK.columns
    years = out["yearOfRegistration"].astype(int)
    assert years.min() >= 2002 and years.max() <= 2024
    # No identifier value reaches the release.
    text = release_file(info, "harmonized.csv").read_text(encoding="utf-8")
    assert not any(name in text for name in (*fake.FIRST_NAMES, *fake.LAST_NAMES))


def test_sample_is_reproducible(tmp_path):
    first = iom.generate(tmp_path / "a", 300, 5)
    second = iom.generate(tmp_path / "b", 300, 5)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
