"""The one place where values meet messages and reports (ctdc_harmonizer.safety)."""

from __future__ import annotations

import csv
import errno
import logging

import pandas as pd
import pytest

from ctdc_harmonizer import safety
from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.harmonize.unmapped import CONTACT_REDACTED, SHIFTED_DISTINCT, restrict_unmapped

PLANTED = "Zarqa Plantedname"


# --- messages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        KeyError(PLANTED),
        ValueError(f"could not convert string to float: '{PLANTED}'"),
        UnicodeDecodeError("utf-8", PLANTED.encode(), 0, 1, PLANTED),
        RuntimeError(PLANTED),
    ],
)
def test_library_exceptions_are_described_by_type_only(exc):
    text = safety.describe(exc, "map_to_codebook")
    assert PLANTED not in text
    assert text.startswith(f"map_to_codebook: unexpected {type(exc).__name__}")


def test_os_errors_name_path_and_errno():
    exc = PermissionError(errno.EACCES, "Permission denied", "/srv/out/2025")
    assert safety.describe(exc) == "cannot use '/srv/out/2025': EACCES (Permission denied)"
    full = OSError(errno.ENOSPC, "No space left on device", "/srv/out/x.csv")
    assert "ENOSPC (No space left on device)" in safety.describe(full)


def test_ctdc_errors_keep_their_located_message():
    exc = ExtractError("iom", "x.csv", "required column is missing", column="sex", row=4)
    assert safety.describe(exc) == str(exc)


def test_log_filter_drops_exception_text(caplog):
    logger = logging.getLogger("ctdc_harmonizer.test_safety")
    handler = logging.StreamHandler()
    handler.addFilter(safety.ValueFreeTracebacks())
    records = []
    handler.emit = records.append  # keep what the handler would print
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(PLANTED)
        except ValueError:
            logger.exception("step failed")
    finally:
        logger.removeHandler(handler)
    (record,) = records
    assert record.exc_info is None
    assert PLANTED not in record.getMessage()
    assert "unexpected ValueError" in record.getMessage()


# --- CSV ------------------------------------------------------------------------------------


def test_formula_cells_are_escaped(tmp_path):
    frame = pd.DataFrame(
        {
            "source_value": ['=HYPERLINK("http://x","y")', "-2+3+cmd", "+1", "@SUM(A1)", "ok"],
            "note": ["\tx", "\rx", "", "a=b", "-"],
            "count": [-1, 2, 3, 4, 5],  # numbers stay numbers
        }
    )
    path = safety.write_report_csv(frame, tmp_path / "r.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        back = pd.DataFrame(list(csv.DictReader(handle)))
    assert back["source_value"].tolist() == [
        '\'=HYPERLINK("http://x","y")',
        "'-2+3+cmd",
        "'+1",
        "'@SUM(A1)",
        "ok",
    ]
    assert back["note"].tolist()[2:] == ["", "a=b", "'-"]
    assert back["note"].str.startswith("'").tolist()[:2] == [True, True]
    assert back["count"].tolist() == ["-1", "2", "3", "4", "5"]


def test_codebook_values_cannot_start_a_formula():
    """harmonized.csv holds codebook values only: none may look like a formula."""
    codebook = default_codebook()
    values = [str(v) for var in codebook.variables for v in (var.values or [])]
    assert values, "codebook values not found: the check would be vacuous"
    assert not [v for v in values if v.startswith(safety.FORMULA_START)]


# --- the restricted unmapped report -----------------------------------------------------------


def unmapped(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [("p", field, value, count) for field, value, count in rows],
        columns=["partner", "field", "source_value", "count"],
    )


def unknown(rows: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame({"field": list(rows), "rows": list(rows.values())})


def test_values_below_k_are_aggregated():
    frame = unmapped([("gender", "Q", 7), ("gender", PLANTED, 1), ("gender", "Zed", 4)])
    report = restrict_unmapped(frame, unknown({"gender": 12}), 100, ["gender"], 5)
    assert report[["source_value", "count", "note"]].values.tolist() == [
        ["Q", 7, ""],
        ["", 5, "2 value(s) seen fewer than 5 times withheld"],
    ]


def test_k_is_configurable():
    frame = unmapped([("gender", "Zed", 4)])
    report = restrict_unmapped(frame, unknown({"gender": 4}), 100, ["gender"], 3)
    assert report["source_value"].tolist() == ["Zed"]


def test_shifted_column_withholds_everything():
    names = [(f"Name{i}", 6) for i in range(10)]
    frame = unmapped([("gender", n, c) for n, c in names])
    report = restrict_unmapped(frame, unknown({"gender": 60}), 100, ["gender"], 5)
    assert report.values.tolist() == [
        ["p", "gender", "", 60, "10 distinct value(s) withheld: column looks shifted or free text"]
    ]


def test_many_distinct_values_withhold_everything():
    frame = unmapped([("gender", f"V{i}", 5) for i in range(SHIFTED_DISTINCT)])
    report = restrict_unmapped(frame, unknown({"gender": 125}), 10_000, ["gender"], 5)
    assert report["source_value"].tolist() == [""]


def test_field_not_declared_coded_is_withheld():
    frame = unmapped([("ageBroad", "Q", 9)])
    report = restrict_unmapped(frame, unknown({"ageBroad": 9}), 100, ["gender"], 5)
    assert report["note"].tolist() == ["1 distinct value(s) withheld: field is not declared coded"]


def test_contact_like_values_are_withheld():
    frame = unmapped([("gender", CONTACT_REDACTED, 8)])
    report = restrict_unmapped(frame, unknown({"gender": 8}), 100, ["gender"], 5)
    assert report["source_value"].tolist() == [""]
