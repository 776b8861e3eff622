"""Broken mapping files fail on load with the file, line and column named."""

import pytest

from ctdc_harmonizer.config import available_partners, load_partner
from ctdc_harmonizer.errors import MappingError
from tiny_partner import FIELDS_CSV, PARTNER_YAML, VALUES_CSV, write_partner


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
