"""Broken mapping files fail on load with the file, line and column named."""

import pytest

from ctdc_harmonizer.errors import MappingError
from ctdc_harmonizer.mapping.partner import available_partners, load_partner
from support.tiny_partner import FIELDS_CSV, PARTNER_YAML, VALUES_CSV, write_partner


def load_with(tmp_path, **files):
    return load_partner(write_partner(tmp_path, **files))


def test_bundled_mappings_all_load():
    partners = available_partners()
    assert "case_management" in partners
    for code in partners:
        assert load_partner(f"mappings/{code}").code == code


def test_unknown_target_value_names_file_line_and_column(tmp_path):
    values = VALUES_CSV + "gender,W,gender,Female,exact,\n"
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"values.csv": values})
    lines = VALUES_CSV.count("\n") + 1
    assert (err.value.file, err.value.line, err.value.column) == ("values.csv", lines, "value")
    assert f"values.csv, line {lines}, column 'value'" in str(err.value)


def test_unknown_target_variable(tmp_path):
    values = VALUES_CSV + "controls,kidnap,meansKidnapping,1,exact,\n"
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"values.csv": values})
    assert err.value.column == "variable" and err.value.line == VALUES_CSV.count("\n") + 1


def test_conflicting_duplicate_names_both_lines(tmp_path):
    values = VALUES_CSV + "gender,f ,gender,Man,exact,same key as F after trimming and case\n"
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"values.csv": values})
    assert err.value.line == VALUES_CSV.count("\n") + 1
    assert "conflicting" in str(err.value) and "line 6" in str(err.value)


def test_one_value_may_feed_several_variables(tmp_path):
    values = VALUES_CSV + "controls,bonded,meansThreats,1,approximate,\n"
    values += "controls,bonded,meansDebtBondageEarnings,1,exact,\n"
    assert len(load_with(tmp_path, **{"values.csv": values}).values) == VALUES_CSV.count("\n") + 1


def test_missing_required_key(tmp_path):
    broken = PARTNER_YAML.replace("reader:\n  format: csv\n", "reader:\n")
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"partner.yaml": broken})
    assert err.value.file == "partner.yaml" and "reader.format" in str(err.value)


def test_missing_year_source(tmp_path):
    broken = PARTNER_YAML.replace(
        "  yearOfRegistration:\n    - {method: date, field: registered_on}\n", ""
    )
    with pytest.raises(MappingError, match="derive.yearOfRegistration"):
        load_with(tmp_path, **{"partner.yaml": broken})


def test_derive_from_undeclared_field_names_the_line(tmp_path):
    broken = PARTNER_YAML.replace("field: found_in", "field: where_found")
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"partner.yaml": broken})
    assert err.value.line == PARTNER_YAML.splitlines().index("  CountryOfExploitation:") + 1


def test_unknown_role_in_fields(tmp_path):
    fields = FIELDS_CSV.replace("age,number", "age,numeric")
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"fields.csv": fields})
    assert (err.value.file, err.value.column) == ("fields.csv", "role")
    assert err.value.line == FIELDS_CSV.splitlines().index("age,number,,,Age in years") + 1


def test_value_for_a_field_that_is_not_coded(tmp_path):
    values = VALUES_CSV + "full_name,anything,gender,Woman,exact,\n"
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"values.csv": values})
    assert err.value.column == "field"


def test_bad_match_type(tmp_path):
    values = VALUES_CSV + "gender,W,gender,Woman,close enough,\n"
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"values.csv": values})
    assert err.value.column == "match"


def test_missing_column_in_values_file(tmp_path):
    values = VALUES_CSV.replace("field,source_value,variable,value", "field,source,variable,value")
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"values.csv": values})
    assert (err.value.line, err.value.column) == (1, "source_value")


def test_unreviewed_template_row_is_refused(tmp_path):
    values = VALUES_CSV + "gender,W,,,,TO MAP: seen 3 time(s) in the extract\n"
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"values.csv": values})
    assert (err.value.line, err.value.column) == (VALUES_CSV.count("\n") + 1, "match")


# --- partner.yaml: a schema (pydantic), every key, type and range -----------------------------

YAML_CASES = {
    "threshold not a number": (
        ("  threshold: 1.0", "  threshold: abc"),
        "  threshold: abc",
        "key 'coverage.threshold': Input should be a valid number",
    ),
    "threshold above 1": (
        ("  threshold: 1.0", "  threshold: 5"),
        "  threshold: 5",
        "key 'coverage.threshold': Input should be less than or equal to 1",
    ),
    "negative header row": (
        ("  format: csv\n", "  format: csv\n  header_row: -1\n"),
        "  header_row: -1",
        "key 'reader.header_row': Input should be greater than or equal to 1",
    ),
    "data before the header": (
        ("  format: csv\n", "  format: csv\n  header_row: 3\n  data_start_row: 2\n"),
        "reader:",
        "key 'reader': data_start_row must be greater than header_row",
    ),
    "sheet by position": (
        ("  format: csv\n", "  format: csv\n  sheet: 0\n"),
        "  sheet: 0",
        "key 'reader.sheet': name the sheet (a position may point at a hidden sheet)",
    ),
    "unknown encoding": (
        ("  format: csv\n", "  format: csv\n  encoding: klingon\n"),
        "  encoding: klingon",
        "unknown text encoding 'klingon'",
    ),
    "unknown format": (
        ("  format: csv\n", "  format: xls\n"),
        "  format: xls",
        "key 'reader.format': Input should be 'excel', 'csv' or 'jsonl'",
    ),
    "misspelt key": (
        ("coverage:\n", "coverrage:\n"),
        "coverrage:",
        "unknown key 'coverrage'",
    ),
    "key given twice": (
        ("null_values:", "record_id: other\nnull_values:"),
        "record_id: other",
        "key 'record_id' is given twice",
    ),
    "unquoted No is a boolean": (
        ('exclude: ["No"]', "exclude: [No]"),
        "  - {rule: consent_refused, field: consent, exclude: [No]}",
        'put the word in quotes ("No")',
    ),
    "method not allowed for the variable": (
        ("method: age_years", "method: years"),
        "    - {method: years, field: age}",
        "key 'derive.ageBroad[0].method': Input should be 'age_years'",
    ),
    "birthdate without reference": (
        (", reference: registered_on}", "}"),
        "    - {method: birthdate, field: born_on}",
        "key 'derive.ageBroad[1]': method birthdate needs 'reference'",
    ),
    "variable that cannot be derived": (
        ("  traffickMonths:", "  traffickDays:"),
        "  traffickDays:",
        "unknown key 'derive.traffickDays'",
    ),
    "year range reversed": (
        ("coverage:\n", "year_range: {min: 2020, max: 2010}\ncoverage:\n"),
        "year_range: {min: 2020, max: 2010}",
        "key 'year_range': min is greater than max",
    ),
    "withdrawal field not declared": (
        ("coverage:\n", "withdrawals: {match_on: [full_name, nickname]}\ncoverage:\n"),
        "withdrawals: {match_on: [full_name, nickname]}",
        "withdrawals.match_on field 'nickname' is not declared in fields.csv",
    ),
    "withdrawal field twice": (
        ("coverage:\n", "withdrawals:\n  match_on: [full_name, full_name]\ncoverage:\n"),
        "  match_on: [full_name, full_name]",
        "key 'withdrawals.match_on': a field is listed twice",
    ),
}


@pytest.mark.parametrize("case", YAML_CASES, ids=list(YAML_CASES))
def test_bad_partner_yaml_is_a_mapping_error_naming_the_line_and_key(tmp_path, case):
    (old, new), line_text, expected = YAML_CASES[case]
    assert old in PARTNER_YAML
    broken = PARTNER_YAML.replace(old, new, 1)
    with pytest.raises(MappingError) as err:  # never a ValueError or a pydantic traceback
        load_with(tmp_path, **{"partner.yaml": broken})
    assert err.value.file == "partner.yaml"
    assert err.value.line == broken.splitlines().index(line_text) + 1
    assert expected in str(err.value)


def test_partner_yaml_that_is_not_a_mapping(tmp_path):
    with pytest.raises(MappingError, match="must be a mapping of keys"):
        load_with(tmp_path, **{"partner.yaml": "- partner\n- reader\n"})


def test_unquoted_numbers_are_text(tmp_path):
    config = load_with(tmp_path, **{"partner.yaml": PARTNER_YAML.replace('"-99"', "-99")})
    assert config.null_values == ("", "-99")


def test_withdrawal_match_fields_are_loaded(tmp_path):
    yaml_text = PARTNER_YAML + "withdrawals:\n  match_on: [full_name, born_on]\n"
    assert load_with(tmp_path, **{"partner.yaml": yaml_text}).withdrawal_match == (
        "full_name",
        "born_on",
    )


# --- the CSV tables: pandera schemas, first failing line -----------------------------------------

TABLE_CASES = {
    "required flag": (
        "fields.csv",
        FIELDS_CSV.replace(
            "field,role,delimiter,format,description",
            "field,role,delimiter,format,description,required",
        ).replace("Months in exploitation", "Months in exploitation,maybe"),
        ("required", FIELDS_CSV.count("\n")),
        "required must be yes or no",
    ),
    "field listed twice": (
        "fields.csv",
        FIELDS_CSV + "age,number,,,Again\n",
        ("field", FIELDS_CSV.count("\n") + 1),
        "field is listed twice",
    ),
    "empty field name": (
        "fields.csv",
        FIELDS_CSV + ",coded,,,No name\n",
        ("field", FIELDS_CSV.count("\n") + 1),
        "field name is empty",
    ),
    "derived variable in values": (
        "values.csv",
        VALUES_CSV + "gender,Old,ageBroad,48+,exact,\n",
        ("variable", VALUES_CSV.count("\n") + 1),
        "'ageBroad' is derived",
    ),
    "value without variable": (
        "values.csv",
        VALUES_CSV + "gender,Q,,Woman,exact,\n",
        ("value", VALUES_CSV.count("\n") + 1),
        "a value is given without a variable",
    ),
    "country code not ISO": (
        "countries.csv",
        "source_value,iso3,match,note\nTurkey,TUR,exact,\nNarnia,NRN,exact,\n",
        ("iso3", 3),
        "'NRN' is not an ISO 3166-1 alpha-3 code",
    ),
    "country listed twice": (
        "countries.csv",
        "source_value,iso3,match,note\nTurkey,TUR,exact,\n turkey ,TUR,exact,\n",
        ("source_value", 3),
        "source value is listed twice",
    ),
    "country match unknown": (
        "countries.csv",
        "source_value,iso3,match,note\nTurkey,TUR,sure,\n",
        ("match", 2),
        "unknown match type 'sure'",
    ),
    "age not a whole number": (
        "age_ranges.csv",
        "source_value,min_age,max_age,note\nKids,0,17,\nOld,4.5,,\n",
        ("min_age", 3),
        "not a whole number of years",
    ),
    "age negative": (
        "age_ranges.csv",
        "source_value,min_age,max_age,note\nKids,-1,17,\n",
        ("min_age", 2),
        "not a whole number of years",
    ),
    "age range reversed": (
        "age_ranges.csv",
        "source_value,min_age,max_age,note\nKids,17,9,\n",
        ("max_age", 2),
        "max_age is below min_age",
    ),
    "min age missing": (
        "age_ranges.csv",
        "source_value,min_age,max_age,note\nAdult,,,\n",
        ("min_age", 2),
        "min_age is required",
    ),
}


@pytest.mark.parametrize("case", TABLE_CASES, ids=list(TABLE_CASES))
def test_bad_mapping_table_names_file_line_and_column(tmp_path, case):
    file, text, (column, line), expected = TABLE_CASES[case]
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{file: text})
    assert (err.value.file, err.value.line, err.value.column) == (file, line, column)
    assert expected in str(err.value)


def test_first_failing_line_is_reported_whatever_the_rule(tmp_path):
    values = VALUES_CSV + "gender,W,gender,Female,exact,\ngender,Z,,,,\n"
    with pytest.raises(MappingError) as err:
        load_with(tmp_path, **{"values.csv": values})
    assert (err.value.line, err.value.column) == (VALUES_CSV.count("\n") + 1, "value")
