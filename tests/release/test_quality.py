"""Great Expectations suite from the codebook, release validation, Data Docs without values."""

from __future__ import annotations

import json
import logging
import os
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from ctdc_harmonizer.codebook import default_codebook, iso3_codes
from ctdc_harmonizer.release import quality

CODEBOOK = default_codebook()
RELEASE_YEAR = 2025
SENTINEL = "Zq-SENTINEL"  # planted in bad cells; must never reach any output or log
ROWS = 12


def make_frame() -> pd.DataFrame:
    """A valid harmonized frame: every codebook column, cycling allowed values and NULLs."""
    data: dict[str, pd.Series] = {}
    for var in CODEBOOK.variables:
        if var.type == "year":
            data[var.name] = pd.Series([2018 + i % 5 for i in range(ROWS)], dtype="Int64")
            continue
        pool = ["USA", "PHL", "UKR"] if var.type == "country" else var.allowed
        values = [pd.NA if i % 4 == 0 else pool[i % len(pool)] for i in range(ROWS)]
        data[var.name] = pd.Series(values, dtype="string")
    return pd.DataFrame(data)


def make_bad_frame() -> pd.DataFrame:
    frame = make_frame()
    frame.loc[1, "gender"] = f"{SENTINEL}-Name"
    frame.loc[2, "citizenship"] = f"{SENTINEL}-Country"
    frame.loc[3, "yearOfRegistration"] = RELEASE_YEAR + 1
    frame.loc[5, "meansThreats"] = "0"  # binary variables are 1 or NULL, never 0
    return frame


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Validate three frames once (GX is slow to import), from an empty working directory."""
    cwd = tmp_path_factory.mktemp("cwd")
    handler = _Records()
    root = logging.getLogger()
    root.addHandler(handler)
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        out = {}
        sparse = make_frame()
        sparse["gender"] = pd.Series(pd.NA, index=sparse.index, dtype="string")
        for name, frame in (("good", make_frame()), ("bad", make_bad_frame()), ("sparse", sparse)):
            release_dir = tmp_path_factory.mktemp(name)
            info = quality.validate_release(frame, CODEBOOK, RELEASE_YEAR, release_dir)
            out[name] = {"info": info, "dir": release_dir}
    finally:
        os.chdir(previous)
        root.removeHandler(handler)
    out["cwd"] = cwd
    out["logs"] = handler.messages
    return out


def _summary(run: dict) -> dict:
    return json.loads((run["dir"] / quality.QUALITY_DIR / quality.SUMMARY_FILE).read_text("utf-8"))


def test_suite_is_generated_from_the_codebook():
    suite = quality.build_suite(CODEBOOK, RELEASE_YEAR)
    by_type: dict[str, list] = {}
    for exp in suite.expectations:
        by_type.setdefault(exp.expectation_type, []).append(exp)

    (ordered,) = by_type["expect_table_columns_to_match_ordered_list"]
    assert ordered.column_list == CODEBOOK.columns and len(CODEBOOK.columns) == 27
    (row_count,) = by_type["expect_table_row_count_to_be_between"]
    assert row_count.min_value == 1

    covered = {exp.column for exp in suite.expectations if getattr(exp, "column", None)}
    assert covered == set(CODEBOOK.columns)

    (year,) = by_type["expect_column_values_to_be_between"]
    assert (year.column, year.min_value, year.max_value) == ("yearOfRegistration", 2002, 2025)
    assert "yearOfRegistration" in {
        e.column for e in by_type["expect_column_values_to_not_be_null"]
    }

    in_set = {e.column: e.value_set for e in by_type["expect_column_values_to_be_in_set"]}
    for var in CODEBOOK.variables:
        if var.type == "country":
            assert set(in_set[var.name]) == set(iso3_codes())
        elif var.type == "binary":
            assert list(in_set[var.name]) == ["1"]
        elif var.type == "categorical":
            assert list(in_set[var.name]) == var.allowed
    # Completeness is a warning, not a gate.
    for exp in by_type["expect_column_proportion_of_non_null_values_to_be_between"]:
        assert quality._severity(exp) == "warning"


def test_valid_frame_passes(runs):
    info = runs["good"]["info"]
    assert info["success"] is True
    assert info["failed"] == 0
    assert info["evaluated"] == len(quality.build_suite(CODEBOOK, RELEASE_YEAR).expectations)
    release_dir = runs["good"]["dir"]
    assert (release_dir / info["data_docs"]).is_file()
    assert (release_dir / info["summary"]).is_file()
    assert list((release_dir / "quality/data_docs/validations").rglob("*.html"))
    assert _summary(runs["good"])["success"] is True


def test_out_of_codebook_values_fail_by_column(runs):
    info = runs["bad"]["info"]
    assert info["success"] is False
    summary = _summary(runs["bad"])
    failed = {r["column"]: r for r in summary["results"] if not r["success"]}
    assert set(failed) == {"gender", "citizenship", "yearOfRegistration", "meansThreats"}
    assert info["failed"] == 4
    for row in failed.values():
        assert row["severity"] == "critical"
        assert row["unexpected_count"] == 1
        assert row["unexpected_percent"] > 0


def test_no_value_reaches_summary_docs_or_logs(runs):
    written = [p for p in (runs["bad"]["dir"] / quality.QUALITY_DIR).rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in written)
    for path in written:
        assert SENTINEL.encode() not in path.read_bytes(), path
    summary_text = (runs["bad"]["dir"] / quality.QUALITY_DIR / quality.SUMMARY_FILE).read_text()
    for key in ("partial_unexpected", "unexpected_list", "unexpected_index", "unexpected_rows"):
        assert key not in summary_text
    assert not any(SENTINEL in message for message in runs["logs"])


def test_nothing_is_written_outside_the_release_folder(runs):
    assert list(runs["cwd"].iterdir()) == []


def test_completeness_is_a_warning_only(runs):
    info = runs["sparse"]["info"]
    assert info["success"] is True
    assert info["failed"] == info["warnings"] == 1
    (row,) = [r for r in _summary(runs["sparse"])["results"] if not r["success"]]
    assert (row["column"], row["severity"], row["observed_value"]) == ("gender", "warning", 0.0)


def test_scrub_keeps_counts_and_withholds_exception_messages():
    quality.import_great_expectations()
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    result = ExpectationValidationResult(
        success=False,
        expectation_config=ExpectationConfiguration(
            type="expect_column_values_to_be_in_set",
            kwargs={"column": "gender", "value_set": ["Man"]},
        ),
        result={
            "element_count": 3,
            "unexpected_count": 1,
            "unexpected_percent": 33.3,
            "observed_value": f"{SENTINEL}-observed",
            "partial_unexpected_list": [f"{SENTINEL}-a"],
            "partial_unexpected_counts": [{"value": f"{SENTINEL}-b", "count": 1}],
            "partial_unexpected_index_list": [0],
            "unexpected_rows": f"{SENTINEL}-row",
        },
        exception_info={
            "metric": {
                "exception_message": f"could not convert {SENTINEL}-c",
                "exception_traceback": f"Traceback ... {SENTINEL}-d",
            }
        },
    )
    quality._scrub(result)
    assert result.result == {"element_count": 3, "unexpected_count": 1, "unexpected_percent": 33.3}
    assert result.exception_info["raised_exception"] is True
    assert SENTINEL not in json.dumps(result.to_json_dict(), default=str)


def test_gx_log_messages_are_withheld():
    """A GX error reaches the log handlers as level + logger name only."""
    quality.import_great_expectations()
    handler = _Records()
    logging.getLogger().addHandler(handler)  # where Airflow's and the CLI's handlers live
    try:
        logging.getLogger("great_expectations.validator.validation_graph").error(
            "Caught exception could not convert %s", SENTINEL
        )
    finally:
        logging.getLogger().removeHandler(handler)
    assert handler.messages, "the GX error must still be visible, redacted"
    assert all(SENTINEL not in message for message in handler.messages)
    assert "withheld" in handler.messages[-1]


def test_docs_and_summary_paths_are_relative(runs):
    info = runs["good"]["info"]
    assert not Path(info["data_docs"]).is_absolute()
    assert info["data_docs"] == "quality/data_docs/index.html"


@pytest.mark.parametrize("checked_rows", [[0, 4, 7], [1, 2, 3, 5]])
def test_counting_new_versions_with_gx_reports_what_gx_on_the_whole_release_does(
    runs, tmp_path, checked_rows, caplog
):
    """GX on the new versions only (bad cells among them, or only among the rows counted
    without it) gives the summary GX gives on the whole release, failures included."""
    checked = pd.Series(False, index=range(ROWS))
    checked[checked_rows] = True
    caplog.set_level(logging.INFO, logger=quality.__name__)
    info = quality.validate_release(
        make_bad_frame(), CODEBOOK, RELEASE_YEAR, tmp_path, checked=checked.to_numpy()
    )
    assert info == runs["bad"]["info"]
    ran = [r.getMessage() for r in caplog.records if "Great Expectations ran" in r.getMessage()]
    assert ran == [
        f"quality: Great Expectations ran on {len(checked_rows)} of {ROWS} row(s) "
        "(the versions new in this release; the rest counted)"
    ]
    ours = json.loads((tmp_path / quality.QUALITY_DIR / quality.SUMMARY_FILE).read_text("utf-8"))
    assert ours == _summary(runs["bad"])
    docs = (tmp_path / info["data_docs"]).read_text("utf-8")
    assert SENTINEL not in docs


def test_a_deferred_module_is_imported_on_first_use(tmp_path, monkeypatch):
    """`defer_imports`: `import` binds a stand-in without running the module; its first
    attribute (or a submodule's import) runs it once, and every name reads the real one."""
    package = tmp_path / "deferred_probe"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import pathlib\nRUNS = pathlib.Path(__file__).with_name('runs')\n"
        "RUNS.write_text(RUNS.read_text() + 'x' if RUNS.exists() else 'x')\nVALUE = 41\n",
        encoding="utf-8",
    )
    (package / "sub.py").write_text("DOUBLE = 82\n", encoding="utf-8")
    runs = package / "runs"
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("deferred_probe", "deferred_probe.sub"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    missing = ("not_an_installed_module_at_all", "not_an_installed_package.sub")
    quality.defer_imports(("deferred_probe", *missing))
    assert not any(name in sys.modules for name in missing)
    import deferred_probe as bound

    assert not runs.exists()  # imported, not run
    assert bound.VALUE == 41 and runs.read_text() == "x"
    from deferred_probe import VALUE
    from deferred_probe.sub import DOUBLE

    assert (VALUE, DOUBLE, runs.read_text()) == (41, 82, "x")
    assert type(sys.modules["deferred_probe"]) is types.ModuleType


def test_a_submodule_import_runs_a_deferred_package(tmp_path, monkeypatch):
    package = tmp_path / "deferred_probe2"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 1\n", encoding="utf-8")
    (package / "sub.py").write_text("from deferred_probe2 import VALUE\nDOUBLE = 2 * VALUE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    quality.defer_imports(("deferred_probe2",))
    import deferred_probe2.sub

    assert deferred_probe2.sub.DOUBLE == 2
    assert type(sys.modules["deferred_probe2"]) is types.ModuleType


# Run in a fresh interpreter: what Great Expectations' import leaves unrun, the same checks
# through it, then the deferred modules used as Great Expectations' own module would.
FRESH_IMPORT = """
import json, sys
from pathlib import Path
import pandas as pd
from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.release import quality
already = [n for n in quality.DEFERRED_IMPORTS if n in sys.modules]
quality.import_great_expectations()
ran = [n for n in ("scipy.stats._stats_py", "altair.vegalite") if n in sys.modules]
frame = pd.read_parquet(sys.argv[1])
info = quality.validate_release(frame, default_codebook(), int(sys.argv[3]), Path(sys.argv[2]))
still_deferred = [n for n in quality.DEFERRED_IMPORTS
                  if type(sys.modules[n]).__name__ == "_Deferred"]
from great_expectations.expectations.core import (
    expect_column_kl_divergence_to_be_less_than as kl,
)
entropy = kl.stats.entropy([0.5, 0.5], [0.25, 0.75])
import altair
import scipy.stats
from scipy.stats import entropy as direct
print(json.dumps({
    "already": already, "ran": ran, "info": info, "still_deferred": still_deferred,
    "entropy": entropy, "direct": direct([0.5, 0.5], [0.25, 0.75]),
    "chart": kl.alt.Chart is altair.Chart, "real": [type(sys.modules[n]).__name__
        for n in quality.DEFERRED_IMPORTS],
}))
"""


def test_great_expectations_runs_without_the_modules_it_does_not_use(runs, tmp_path):
    """scipy.stats and altair (about 1 s of a run's CPU) are not run by Great Expectations'
    import nor by the suite's validation and Data Docs; the results are the same, and whoever
    uses them still gets them."""
    import subprocess

    written = tmp_path / "bad.parquet"
    make_bad_frame().to_parquet(written, index=False)
    release_dir = tmp_path / "release"
    release_dir.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", FRESH_IMPORT, str(written), str(release_dir), str(RELEASE_YEAR)],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["already"] == [] and seen["ran"] == []
    assert seen["still_deferred"] == list(quality.DEFERRED_IMPORTS)
    assert seen["info"] == runs["bad"]["info"]
    summary = release_dir / quality.QUALITY_DIR / quality.SUMMARY_FILE
    assert json.loads(summary.read_text("utf-8"))["results"] == _summary(runs["bad"])["results"]
    assert seen["entropy"] == seen["direct"] > 0 and seen["chart"]
    assert seen["real"] == ["module", "module"]
