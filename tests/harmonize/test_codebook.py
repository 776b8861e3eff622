"""The codebook file matches the codebook v3 text, and the schema is generated from it."""

import pandas as pd
import pytest

from ctdc_harmonizer.codebook import default_codebook, harmonized_schema
from ctdc_harmonizer.errors import ContractError
from ctdc_harmonizer.harmonize.contracts import validate

# Section 5 of the codebook v3, in order.
CODEBOOK_V3_LIST = [
    "yearOfRegistration",
    "gender",
    "ageBroad",
    "citizenship",
    "CountryOfExploitation",
    "traffickMonths",
    "meansDebtBondageEarnings",
    "meansThreats",
    "meansAbusePsyPhySex",
    "meansFalsePromises",
    "meansDrugsAlcohol",
    "meansDenyBasicNeeds",
    "meansExcessiveWorkHours",
    "meansWithholdDocs",
    "isForcedLabour",
    "isSexualExploit",
    "isOtherExploit",
    "typeOfLabourAgriculture",
    "typeOfLabourConstruction",
    "typeOfLabourDomesticWork",
    "typeOfLabourHospitality",
    "typeOfSexProstitution",
    "typeOfSexPornography",
    "recruiterRelationIntimatePartner",
    "recruiterRelationFriend",
    "recruiterRelationFamily",
    "recruiterRelationOther",
]

# Appendix II, as printed.
APPENDIX_II = {
    "meansDebtBondageEarnings": {"meansOfControlDebtBondage", "meansOfControlTakesEarnings"},
    "meansThreats": {
        "meansOfControlThreats",
        "meansOfControlUsesChildren",
        "meansOfControlThreatOfLawEnforcement",
    },
    "meansAbusePsyPhySex": {
        "meansOfControlPsychologicalAbuse",
        "meansOfControlPhysicalAbuse",
        "meansOfControlSexualAbuse",
    },
    "meansFalsePromises": {"meansOfControlFalsePromises"},
    "meansDrugsAlcohol": {"meansOfControlPsychoactiveSubstances"},
    "meansDenyBasicNeeds": {
        "meansOfControlRestrictsFinancialAccess",
        "meansOfControlRestrictsMovement",
        "meansOfControlRestrictsMedicalCare",
        "meansOfControlWithholdsNecessities",
    },
    "meansExcessiveWorkHours": {"meansOfControlExcessiveWorkingHours"},
    "meansWithholdDocs": {"meansOfControlWithholdsDocuments"},
}


@pytest.fixture(scope="module")
def codebook():
    return default_codebook()


def test_27_variables_in_codebook_order(codebook):
    assert codebook.columns == CODEBOOK_V3_LIST
    assert codebook.version == "3"


def test_groups_cover_every_variable(codebook):
    assert {v.group for v in codebook.variables} == {
        "demographics",
        "means_of_control",
        "type_of_exploitation",
        "type_of_labour",
        "type_of_sexual_exploitation",
        "recruiter_relation",
    }


def test_appendix_ii_merges(codebook):
    merged = {v.name: set(v.merged_from) for v in codebook.variables if v.merged_from}
    assert merged == APPENDIX_II


def test_withhold_docs_alias(codebook):
    assert codebook.variable("meansWithholdDocuments").name == "meansWithholdDocs"


@pytest.mark.parametrize(
    ("variable", "spelling", "canonical"),
    [
        ("ageBroad", "18--20", "18–20"),
        ("ageBroad", "18–20", "18–20"),
        ("ageBroad", "09--17", "9–17"),
        ("ageBroad", "48+", "48+"),
        ("traffickMonths", "0--12 (0-1 yr)", "0–12 (0-1 yr)"),
        ("traffickMonths", "25+ (2+ yrs)", "25+ (2+ yrs)"),
        ("gender", "woman", "Woman"),
        ("isForcedLabour", "1", "1"),
    ],
)
def test_variant_spellings_accepted(codebook, variable, spelling, canonical):
    assert codebook.canonical(variable, spelling) == canonical


@pytest.mark.parametrize(("variable", "spelling"), [("ageBroad", "18-24"), ("isForcedLabour", "0")])
def test_unknown_spellings_refused(codebook, variable, spelling):
    assert codebook.canonical(variable, spelling) is None


def _row(codebook, **values):
    frame = pd.DataFrame({c: pd.Series([pd.NA], dtype="string") for c in codebook.columns})
    frame["yearOfRegistration"] = pd.Series([2020], dtype="Int64")
    for key, value in values.items():
        frame[key] = pd.Series([value], dtype="Int64" if key == "yearOfRegistration" else "string")
    return frame


def test_generated_schema_accepts_a_valid_row(codebook):
    schema = harmonized_schema(codebook, year_max=2025)
    validate(schema, _row(codebook, gender="Woman", citizenship="SRB", isForcedLabour="1"), "t")


@pytest.mark.parametrize(
    "values",
    [
        {"gender": "Female"},
        {"ageBroad": "18--20"},
        {"citizenship": "RS"},
        {"isForcedLabour": "0"},
        {"yearOfRegistration": 2001},
        {"yearOfRegistration": 2026},
    ],
)
def test_generated_schema_rejects_off_codebook_values(codebook, values):
    schema = harmonized_schema(codebook, year_max=2025)
    with pytest.raises(ContractError) as err:
        validate(schema, _row(codebook, **values), "partner 'x' harmonized rows")
    column = next(iter(values))
    assert f"column '{column}'" in str(err.value)
    assert str(values[column]) not in str(err.value).replace("2025", "")
