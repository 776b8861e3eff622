"""Data-quality checks of a release with Great Expectations, and their Data Docs.

The expectation suite is generated from the codebook (never retyped): the 27
columns in order, the year range, each variable's allowed values, ISO 3166-1
alpha-3 countries and `1`-or-NULL binaries. It runs on the versions new in the release
(an earlier release checked every other row when it was new); each expectation is then counted
over the whole release, a count GX's own results on the new rows must match (`validate_release`).
It writes, inside the release folder:

    quality/summary.json      one line per expectation: type, column, severity,
                              success and counts; never a value
    quality/data_docs/        the rendered Data Docs site (index.html)

Privacy: the validation asks for counts only (no unexpected values, no row
indexes, no unexpected rows), and every result is scrubbed again before it is
stored or rendered: a result keeps counts and percentages only, and an
exception message (which may quote a cell) is withheld. Only then are the Data
Docs built, from the scrubbed results.

Great Expectations is imported inside the functions: it is slow to import and
noisy at INFO level. Its own log records never reach a handler: a redacted line
(level and logger name only) is logged instead, since GX error messages can
quote a cell ("Caught exception <message> while trying to resolve..."). No
analytics are sent and nothing is written outside the release folder (the
context is ephemeral, with in-memory stores).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import logging
import numbers
import os
import shutil
import sys
import threading
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ctdc_harmonizer.codebook import Codebook, iso3_codes

if TYPE_CHECKING:
    import great_expectations as gx

log = logging.getLogger(__name__)

SUITE_NAME = "ctdc_harmonized_v3"
DOCS_SITE = "ctdc_release_docs"
QUALITY_DIR = "quality"
DOCS_DIR = "data_docs"
SUMMARY_FILE = "summary.json"

# Counts only: no unexpected values, no value counts, no row indexes, no rows.
# BASIC gives the counts at about half the cost of SUMMARY on large releases.
RESULT_FORMAT = {
    "result_format": "BASIC",
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
    "exclude_unexpected_values": True,
}
# The only keys of a column expectation's result that survive scrubbing.
COUNT_KEYS = (
    "element_count",
    "missing_count",
    "missing_percent",
    "unexpected_count",
    "unexpected_percent",
    "unexpected_percent_total",
    "unexpected_percent_nonmissing",
    "observed_value",  # kept only when it is a number (a proportion, a row count)
)
WITHHELD = "metric computation failed; message withheld (it may quote a cell value)"


class _Withheld(logging.Handler):
    """Forwards GX warnings and errors without their text (it can quote a cell value)."""

    def emit(self, record: logging.LogRecord) -> None:
        log.log(
            record.levelno,
            "great_expectations %s in %s (message withheld: it may quote a cell value)",
            record.levelname,
            record.name,
        )


# Imported by Great Expectations (its KL-divergence expectation, at import time) and used
# by no expectation of the suite nor by their Data Docs: about 1 s of CPU (scipy.stats
# 0.7 s, altair 0.4 s) that a run need not pay. They are imported on first use instead.
DEFERRED_IMPORTS = ("scipy.stats", "altair")
_deferring = threading.Lock()


class _Deferred(types.ModuleType):
    """Stands in `sys.modules` for a module not imported yet. `import name` binds it; the
    first attribute it lacks (anything but its name and spec, `__path__` included, so a
    submodule's import too) imports the real module, which replaces it in `sys.modules`,
    and every later attribute is read from the real module."""

    def __init__(self, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(spec.name)
        self.__spec__ = spec

    def __getattr__(self, attribute: str) -> Any:
        name = self.__spec__.name
        with _deferring:
            if sys.modules.get(name) is self:
                del sys.modules[name]
        # Outside the lock: the import system's own lock per module makes a second thread
        # here wait for the first one's import.
        return getattr(importlib.import_module(name), attribute)


def defer_imports(names: tuple[str, ...] = DEFERRED_IMPORTS) -> None:
    """Put each module of `names` not imported yet in `sys.modules` as `_Deferred`."""
    for name in names:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)  # a submodule's: imports its package
        except ModuleNotFoundError:  # its package is not installed
            spec = None
        if spec is not None:  # not installed: GX's own import says so
            sys.modules.setdefault(name, _Deferred(spec))


def import_great_expectations():
    """Import Great Expectations quietly, with analytics off and its messages withheld."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    if "great_expectations" not in sys.modules:
        defer_imports()
    gx_log = logging.getLogger("great_expectations")
    gx_log.setLevel(logging.WARNING)
    if not any(isinstance(h, _Withheld) for h in gx_log.handlers):
        gx_log.addHandler(_Withheld(level=logging.WARNING))
    gx_log.propagate = False
    import great_expectations as gx

    # A few GX modules pin their own logger to INFO; keep them all at WARNING.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("great_expectations"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return gx


def build_suite(codebook: Codebook, release_year: int | None = None) -> gx.ExpectationSuite:
    """The expectation suite of the harmonized table, generated from the codebook.

    `release_year` bounds yearOfRegistration (default: the current year).
    Codebook rules are critical; completeness of the demographic profile is a warning.
    """
    gx = import_great_expectations()
    expect = gx.expectations
    year_max = int(release_year or pd.Timestamp.now().year)
    # Collected first, then handed to the suite: `add_expectation` needs a live context.
    expectations = [
        expect.ExpectTableColumnsToMatchOrderedList(
            column_list=codebook.columns,
            notes=f"The {len(codebook.columns)} codebook v{codebook.version} variables, in order.",
        ),
        expect.ExpectTableRowCountToBeBetween(min_value=1, notes="A release is never empty."),
    ]
    countries = sorted(iso3_codes())
    for var in codebook.variables:
        note = f"Codebook v{codebook.version} variable {var.number}: {var.label}."
        if var.required:
            expectations.append(expect.ExpectColumnValuesToNotBeNull(column=var.name, notes=note))
        if var.type == "year":
            expectations.append(
                expect.ExpectColumnValuesToBeBetween(
                    column=var.name, min_value=codebook.year_min, max_value=year_max, notes=note
                )
            )
        elif var.type == "country":
            expectations.append(
                expect.ExpectColumnValuesToBeInSet(
                    column=var.name,
                    value_set=countries,
                    notes=f"{note} ISO 3166-1 alpha-3 code.",
                )
            )
        else:  # categorical, and binary ("1" or NULL)
            expectations.append(
                expect.ExpectColumnValuesToBeInSet(
                    column=var.name, value_set=var.allowed, notes=note
                )
            )
    # Dataset-level completeness (codebook file: expect_known_share). A warning, not a
    # gate: a release is still valid with more unknowns, but the team should look.
    for var in codebook.variables:
        if var.expect_known_share is not None:
            share = var.expect_known_share
            expectations.append(
                expect.ExpectColumnProportionOfNonNullValuesToBeBetween(
                    column=var.name,
                    min_value=share,
                    max_value=1.0,
                    severity="warning",
                    notes=f"Completeness: {var.name} known in {share:.0%}+ of records.",
                )
            )
    return gx.ExpectationSuite(
        name=SUITE_NAME,
        expectations=expectations,
        meta={"codebook": {"title": codebook.title, "version": codebook.version}},
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _scrub(result) -> None:
    """Keep counts only in one ExpectationValidationResult, in place."""
    config = result.expectation_config
    raw = dict(result.result or {})
    kept = {
        k: raw[k] for k in COUNT_KEYS if k in raw and (k != "observed_value" or _is_number(raw[k]))
    }
    if config.type == "expect_table_columns_to_match_ordered_list" and "observed_value" in raw:
        # Column names, not cell values: what the failure is about.
        kept["observed_value"] = [str(c) for c in raw["observed_value"]]
    result.result = kept
    info = result.exception_info or {}
    raised = bool(info.get("raised_exception")) or any(
        isinstance(v, dict) and (v.get("exception_message") or v.get("exception_traceback"))
        for v in info.values()
    )
    result.exception_info = {
        "raised_exception": raised,
        "exception_message": WITHHELD if raised else None,
        "exception_traceback": WITHHELD if raised else None,
    }


def _severity(config) -> str:
    severity = getattr(config, "severity", None)
    return str(getattr(severity, "value", severity) or "critical")


def _summary_row(result) -> dict:
    config = result.expectation_config
    counts = result.result or {}
    return {
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "severity": _severity(config),
        "success": bool(result.success),
        "exception": bool(result.exception_info.get("raised_exception")),
        "unexpected_count": counts.get("unexpected_count"),
        "unexpected_percent": counts.get("unexpected_percent"),
        "missing_count": counts.get("missing_count"),
        "observed_value": counts.get("observed_value")
        if _is_number(counts.get("observed_value"))
        else None,
    }


def categorical(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as categories: a release column holds a few dozen codes, and GX's set and
    null checks then work on the categories instead of every string (about 3x faster at 1M
    rows; the same results)."""
    text = [c for c in frame.columns if pd.api.types.is_string_dtype(frame[c].dtype)]
    # Already categorical (the caller converted it): no copy of the whole release.
    return frame.astype(dict.fromkeys(text, "category")) if text else frame


def _context(gx, docs_dir: Path):
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        data_docs_sites={
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _percent(part: int, whole: int) -> float | None:
    return part / whole * 100 if whole else None


def _counted(config, frame: pd.DataFrame) -> tuple[bool, dict]:
    """One expectation of the suite counted over `frame` without Great Expectations: its
    success and the counts of its BASIC result, as GX computes them (every expectation of
    the suite is a count over one column, or over the table's shape)."""
    kind, kwargs, rows = config.type, config.kwargs, len(frame)
    if kind == "expect_table_columns_to_match_ordered_list":
        observed = [str(c) for c in frame.columns]
        return observed == list(kwargs["column_list"]), {"observed_value": observed}
    if kind == "expect_table_row_count_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        ok = (low is None or rows >= low) and (high is None or rows <= high)
        return ok, {"observed_value": rows}
    column = frame[kwargs["column"]]
    missing = int(column.isna().sum())
    if kind == "expect_column_values_to_not_be_null":
        counts = {"element_count": rows, "unexpected_count": missing}
        return missing == 0, counts | {"unexpected_percent": _percent(missing, rows)}
    if kind == "expect_column_proportion_of_non_null_values_to_be_between":
        share = (rows - missing) / rows if rows else None
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        ok = share is not None and (low is None or share >= low) and (high is None or share <= high)
        return ok, {"observed_value": share}
    present = column.dropna()
    if kind == "expect_column_values_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        inside = pd.Series(True, index=present.index)
        if low is not None:
            inside &= present >= low
        if high is not None:
            inside &= present <= high
        unexpected = int((~inside).sum())
    elif kind == "expect_column_values_to_be_in_set":
        unexpected = int((~present.isin(list(kwargs["value_set"]))).sum())
    else:
        raise ValueError(f"no count for expectation {kind}")
    nonmissing = rows - missing
    return unexpected == 0, {
        "element_count": rows,
        "unexpected_count": unexpected,
        "unexpected_percent": _percent(unexpected, nonmissing),
        "missing_count": missing,
        "missing_percent": _percent(missing, rows),
        "unexpected_percent_total": _percent(unexpected, rows),
        "unexpected_percent_nonmissing": _percent(unexpected, nonmissing),
    }


def _same_counts(gx_counts: dict, ours: dict) -> bool:
    def plain(value):
        return float(value) if _is_number(value) else value

    return all(plain(gx_counts.get(k)) == plain(v) for k, v in ours.items())


def _counted_over_release(validation, frame: pd.DataFrame) -> None:
    """Replace each result of `validation` (GX over the release's new versions) by its
    counts over the whole release, and the validation's statistics with them."""
    for result in validation.results:
        result.success, result.result = _counted(result.expectation_config, frame)
    evaluated = len(validation.results)
    successful = sum(bool(r.success) for r in validation.results)
    validation.success = successful == evaluated
    validation.statistics = {
        "evaluated_expectations": evaluated,
        "successful_expectations": successful,
        "unsuccessful_expectations": evaluated - successful,
        "success_percent": successful / evaluated * 100 if evaluated else None,
    }


def validate_release(
    frame: pd.DataFrame,
    codebook: Codebook,
    release_year: int,
    release_dir: Path,
    checked: np.ndarray | None = None,
) -> dict:
    """Validate the harmonized frame; write quality/summary.json and quality/data_docs/.

    `checked` (a boolean mask over the rows) names the rows Great Expectations runs on: the
    versions new in this release. Every other row is a version an earlier release validated
    when it was new, unchanged since; the whole release is then counted expectation by
    expectation (`_counted`, value counts over categories: a fraction of a second at a
    million rows), and GX's own results on the new rows must equal those counts over the
    same rows, else GX runs on the whole release. The summary and the Data Docs report the
    whole release. None (or no new row): GX runs on the whole release.

    Returns {"success", "evaluated", "failed", "warnings", "data_docs", "summary"}:
    `success` is False when a critical (codebook) expectation failed; `failed` counts
    every failed expectation, `warnings` the failed warning-level ones. Paths are
    relative to `release_dir`, so they stay true after the folder is moved.
    """
    gx = import_great_expectations()
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    quality = Path(release_dir) / QUALITY_DIR
    docs_dir = quality / DOCS_DIR
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    quality.mkdir(parents=True, exist_ok=True)

    context = _context(gx, docs_dir)
    suite = context.suites.add(build_suite(codebook, release_year))
    batch = (
        context.data_sources.add_pandas("ctdc")
        .add_dataframe_asset("harmonized")
        .add_batch_definition_whole_dataframe("release")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="ctdc_release", data=batch, suite=suite)
    )
    # No actions: the Data Docs are built below, from scrubbed results only.
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="ctdc_release",
            validation_definitions=[definition],
            result_format=RESULT_FORMAT,
            actions=[],
        )
    )
    frame = categorical(frame)
    whole = checked is None or not checked.any() or checked.all()
    run_id = RunIdentifier(run_name=f"release-{release_year}")
    subset = frame if whole else frame.loc[checked].reset_index(drop=True)
    outcome = checkpoint.run(batch_parameters={"dataframe": subset}, run_id=run_id)
    if not whole:
        agree = all(
            not (r.exception_info or {}).get("raised_exception")
            and _same_counts(r.result or {}, _counted(r.expectation_config, subset)[1])
            and bool(r.success) == _counted(r.expectation_config, subset)[0]
            for validation in outcome.run_results.values()
            for r in validation.results
        )
        if agree:
            for validation in outcome.run_results.values():
                _counted_over_release(validation, frame)
        else:
            log.warning("quality: the counts differ from Great Expectations'; it runs on all")
            outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    log.info(
        "quality: Great Expectations ran on %d of %d row(s)%s",
        len(subset) if not whole else len(frame),
        len(frame),
        "" if whole else " (the versions new in this release; the rest counted)",
    )

    rows = []
    for key, validation in outcome.run_results.items():
        for result in validation.results:
            _scrub(result)
            rows.append(_summary_row(result))
        context.validation_results_store.set(key, validation)
    context.build_data_docs(
        site_names=[DOCS_SITE],
        resource_identifiers=[
            *outcome.run_results.keys(),
            ExpectationSuiteIdentifier(name=SUITE_NAME),
        ],
    )

    failed = [r for r in rows if not r["success"]]
    critical = [r for r in failed if r["severity"] == "critical"]
    summary = {
        "suite": SUITE_NAME,
        "codebook_version": codebook.version,
        "release_year": int(release_year),
        "rows": len(frame),
        "success": not critical,
        "evaluated": len(rows),
        "failed": len(failed),
        "failed_critical": len(critical),
        "warnings": len(failed) - len(critical),
        "great_expectations": gx.__version__,
        "results": rows,
    }
    (quality / SUMMARY_FILE).write_text(
        json.dumps(summary, indent=2, sort_keys=True), encoding="utf-8"
    )
    info = {
        "success": summary["success"],
        "evaluated": summary["evaluated"],
        "failed": summary["failed"],
        "warnings": summary["warnings"],
        "data_docs": f"{QUALITY_DIR}/{DOCS_DIR}/index.html",
        "summary": f"{QUALITY_DIR}/{SUMMARY_FILE}",
    }
    log.info(
        "quality: %d expectations, %d failed (%d critical); data docs in %s",
        info["evaluated"],
        info["failed"],
        len(critical),
        docs_dir,
    )
    return info
