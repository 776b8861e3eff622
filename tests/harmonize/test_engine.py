"""Unit tests of the mapping engine on small hand-written extracts."""

import json

import pandas as pd
import pytest

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.errors import CoverageError
from ctdc_harmonizer.harmonize.unmapped import CONTACT_REDACTED as REDACTED
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.run.file_check import harmonize_file
from support.tiny_partner import VALUES_CSV, row, write_extract, write_partner


def harmonize(tmp_path, rows, **mapping_files):
    """Rows -> (harmonized frame, mapping result), in input order (no shuffling here)."""
    folder = write_partner(tmp_path, **mapping_files)
    config = load_partner(folder)
    path = write_extract(tmp_path, rows)
    result = harmonize_file(config, path, year_max=2025)
    return result.harmonized, result


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        ("0", "0–8"),
        ("8", "0–8"),
        ("9", "9–17"),
        ("17", "9–17"),
        ("18", "18–20"),
        ("20", "18–20"),
        ("21", "21–23"),
        ("23", "21–23"),
        ("24", "24–26"),
        ("26", "24–26"),
        ("27", "27–29"),
        ("29", "27–29"),
        ("30", "30–38"),
        ("38", "30–38"),
        ("39", "39–47"),
        ("47", "39–47"),
        ("48", "48+"),
        ("97", "48+"),
    ],
)
def test_age_bin_edges(tmp_path, age, expected):
    frame, _ = harmonize(tmp_path, [row(age=age)])
    assert frame.loc[0, "ageBroad"] == expected


@pytest.mark.parametrize("age", ["-1", "17.5", "abc"])
def test_unusable_age_is_null_and_counted(tmp_path, age):
    frame, result = harmonize(tmp_path, [row(age=age)])
    assert pd.isna(frame.loc[0, "ageBroad"])
    issues = result.issues.set_index(["field", "issue"])["count"]
    assert issues[("age", "invalid_age")] == 1


@pytest.mark.parametrize(
    ("born", "expected"),
    [
        ("2000-06-02", "18–20"),  # 19: birthday not yet reached on 2020-06-01
        ("2000-06-01", "18–20"),  # 20 on the day
        ("2002-06-02", "9–17"),  # 17, one day short of 18
        ("2002-06-01", "18–20"),  # 18 on the day
        ("2011-06-02", "0–8"),  # 8
        ("2011-06-01", "9–17"),  # 9
    ],
)
def test_age_from_birthdate_in_whole_years(tmp_path, born, expected):
    frame, _ = harmonize(tmp_path, [row(born_on=born)])
    assert frame.loc[0, "ageBroad"] == expected


def test_exact_age_wins_over_birthdate(tmp_path):
    frame, _ = harmonize(tmp_path, [row(age="30", born_on="2010-01-01")])
    assert frame.loc[0, "ageBroad"] == "30–38"


@pytest.mark.parametrize(
    ("months", "expected"),
    [
        ("0", "0–12 (0-1 yr)"),
        ("12", "0–12 (0-1 yr)"),
        ("13", "13–24 (1-2 yrs)"),
        ("24", "13–24 (1-2 yrs)"),
        ("25", "25+ (2+ yrs)"),
        ("240", "25+ (2+ yrs)"),
    ],
)
def test_months_bin_edges(tmp_path, months, expected):
    frame, _ = harmonize(tmp_path, [row(months=months)])
    assert frame.loc[0, "traffickMonths"] == expected


def test_means_of_control_merge_and_binary_coding(tmp_path):
    frame, _ = harmonize(
        tmp_path,
        [
            row(controls="debt|earnings"),
            row(controls=" Threats | documents"),
            row(controls="other"),
        ],
    )
    assert frame["meansDebtBondageEarnings"].tolist()[0] == "1"
    assert frame.loc[1, ["meansThreats", "meansWithholdDocs"]].tolist() == ["1", "1"]
    # 'other' feeds no v3 variable; binaries are 1 or NULL, never 0
    assert frame.loc[2, default_codebook().binary_columns].isna().all()


@pytest.mark.parametrize(
    ("nationality", "expected"),
    [
        ("Kosovo", "SRB"),
        ("XK", "SRB"),
        ("Tibet", "CHN"),
        ("Kosovo;Albania", "SRB"),
        ("Albania; Kosovo", "ALB"),
        ("viet nam", "VNM"),
        ("VN", "VNM"),
        ("USA", "USA"),
    ],
)
def test_countries_iso3_with_codebook_rules(tmp_path, nationality, expected):
    frame, _ = harmonize(tmp_path, [row(nationality=nationality, exploited_in=nationality)])
    assert frame.loc[0, "citizenship"] == expected
    if ";" not in nationality:
        assert frame.loc[0, "CountryOfExploitation"] == expected


@pytest.mark.parametrize(
    ("exploited_in", "found_in", "expected"),
    [("TH", "MY", "THA"), ("", "MY", "MYS"), ("", "", None)],
)
def test_country_of_exploitation_order_of_preference(tmp_path, exploited_in, found_in, expected):
    frame, _ = harmonize(tmp_path, [row(exploited_in=exploited_in, found_in=found_in)])
    value = frame.loc[0, "CountryOfExploitation"]
    assert (pd.isna(value) and expected is None) or value == expected


def test_exclusion_rules_are_counted_by_name(tmp_path):
    rows = [
        row(consent="No"),
        row(consent="no "),
        row(status="Not a victim"),
        row(consent="No", status="Not a victim"),  # first rule wins: counted once
        row(),
    ]
    frame, result = harmonize(tmp_path, rows)
    outcomes = result.outcomes.groupby(["outcome", "reason"]).size().to_dict()
    assert outcomes == {
        ("excluded", "consent_refused"): 3,
        ("excluded", "not_a_victim"): 1,
        ("harmonized", ""): 1,
    }
    assert len(frame) == 1


@pytest.mark.parametrize(
    ("registered_on", "reason"),
    [
        ("", "missing_year_of_registration"),
        ("2020-13-45", "invalid_registration_date"),
        ("2001-12-31", "year_out_of_range"),
        ("2026-01-01", "year_out_of_range"),
    ],
)
def test_rows_without_a_usable_year_are_rejected_with_a_reason(tmp_path, registered_on, reason):
    frame, result = harmonize(tmp_path, [row(registered_on=registered_on), row()])
    rejected = result.outcomes[result.outcomes["outcome"] == "rejected"]
    assert rejected[["_row", "column", "reason"]].values.tolist() == [[2, "registered_on", reason]]
    assert len(frame) == 1


def test_unknown_values_are_reported_with_counts(tmp_path):
    rows = [
        row(controls="kidnapping|debt"),
        row(controls="kidnapping"),
        row(gender="Q"),
        row(nationality="Atlantis"),
        row(controls="call +15551234567"),
    ]
    _, result = harmonize(tmp_path, rows)
    unmapped = {(r.field, r.source_value): r.count for r in result.unmapped.itertuples()}
    assert unmapped == {
        ("controls", "kidnapping"): 2,
        ("gender", "Q"): 1,
        ("nationality", "Atlantis"): 1,
        ("controls", REDACTED): 1,
    }


def run_tiny(tmp_path, rows, **mapping_files):
    write_partner(tmp_path, **mapping_files)
    write_extract(tmp_path, rows)
    return run_annual_update(
        str(tmp_path / "landing"),
        str(tmp_path / "out"),
        "2025",
        ["tiny"],
        mappings=str(tmp_path / "mappings"),
        warehouse_url=f"sqlite:///{tmp_path}/w.sqlite",
    )


def test_withdrawals_erased_duplicates_merged_and_reconciled(tmp_path):
    rows = [
        row(case_id="CASE-WITHDRAWN-7731", full_name="Zorana Withdrawn"),
        row(case_id="B2"),
        row(case_id="B2"),
        row(case_id="C3", consent="No"),
        row(case_id="D4", registered_on=""),
        row(case_id=""),
    ]
    (tmp_path / "landing" / "tiny").mkdir(parents=True)
    (tmp_path / "landing" / "tiny" / "withdrawals.csv").write_text(
        "record_id\nCASE-WITHDRAWN-7731\n"
    )
    info = run_tiny(tmp_path, rows)
    recon = json.loads((tmp_path / "out" / "2025" / "reconciliation.json").read_text())
    file = recon["partners"]["tiny"]["files"]["extract.csv"]
    assert file["rows_read"] == 6
    assert file["erased"] == 1
    assert file["duplicates_merged"] == 1
    assert file["excluded"] == {"consent_refused": 1}
    assert file["rejected"] == {"missing_year_of_registration": 1}
    assert file["harmonized"] == 2
    assert file["unaccounted"] == 0 and recon["invariant_holds"]
    assert info.folder.rows == 2
    released = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert b"Zorana" not in released and b"CASE-WITHDRAWN-7731" not in released


def test_coverage_gate_fails_on_unknown_value_then_passes_once_mapped(tmp_path):
    strict = pipeline_yaml_with_threshold(0.0)
    rows = [row(case_id=str(i), controls="kidnapping" if i == 0 else "debt") for i in range(4)]
    with pytest.raises(CoverageError) as err:
        run_tiny(tmp_path, rows, **{"partner.yaml": strict})
    message = str(err.value)
    assert "controls: 1 of 4 rows (25.00%), 1 distinct unknown value(s)" in message
    assert "kidnapping" not in message  # counts only: the value may be a misplaced name
    assert "ctdc unmapped --partner tiny" in message
    fixed = VALUES_CSV + "controls,kidnapping,meansAbusePsyPhySex,1,approximate,abduction\n"
    info = run_tiny(tmp_path, rows, **{"partner.yaml": strict, "values.csv": fixed})
    assert info.folder.rows == 4


def pipeline_yaml_with_threshold(threshold: float) -> str:
    from support.tiny_partner import PARTNER_YAML

    return PARTNER_YAML.replace("threshold: 1.0", f"threshold: {threshold}")


def test_release_unmapped_csv_lists_unknown_values_with_counts(tmp_path):
    # 5 rows of 16 hold "kidnapping" (k = 5: listed), 2 hold "Zarqa Plantedname" (withheld).
    rows = [
        row(
            case_id=str(i),
            controls="kidnapping|debt" if i < 5 else "Zarqa Plantedname" if i < 7 else "debt",
        )
        for i in range(16)
    ]
    run_tiny(tmp_path, rows)  # the tiny partner tolerates unknown values (threshold 1.0)
    text = (tmp_path / "out" / "2025" / "unmapped.csv").read_text()
    assert "plantedname" not in text.casefold()
    unmapped = pd.read_csv(tmp_path / "out" / "2025" / "unmapped.csv", keep_default_na=False)
    assert unmapped.to_dict("records") == [
        {
            "partner": "tiny",
            "field": "controls",
            "source_value": "kidnapping",
            "count": 5,
            "note": "",
        },
        {
            "partner": "tiny",
            "field": "controls",
            "source_value": "",
            "count": 2,
            "note": "1 value(s) seen fewer than 5 times withheld",
        },
    ]
    coverage = json.loads((tmp_path / "out" / "2025" / "coverage.json").read_text())
    assert coverage["tiny"]["fields"] == [{"field": "controls", "rows": 7, "share": 0.4375}]
