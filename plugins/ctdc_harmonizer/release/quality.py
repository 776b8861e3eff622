"""Data-quality checks of a release with Great Expectations, and their Data Docs.

The expectation suite is generated from the codebook (never retyped): the 27
columns in order, the year range, each variable's allowed values, ISO 3166-1
alpha-3 countries and `1`-or-NULL binaries. It runs on the harmonized frame and
writes, inside the release folder:

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

import contextlib
import json
import logging
import numbers
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def import_great_expectations():
    """Import Great Expectations quietly, with analytics off and its messages withheld."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
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
    return frame.astype(dict.fromkeys(text, "category"))


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


# Where the checks run: in this process (None), or in a process of their own that imported
# Great Expectations while the partner chains ran (`ctdc run`: pipeline/local.py).
_checks_process: Executor | None = None


@contextlib.contextmanager
def checks_in(process: Executor | None) -> Iterator[None]:
    """Run the release's quality checks in `process` (one worker) while the block runs."""
    global _checks_process
    earlier, _checks_process = _checks_process, process
    try:
        yield
    finally:
        _checks_process = earlier


def start_checks(
    table: pd.DataFrame, written: Path, codebook: Codebook, release_year: int, release_dir: Path
) -> Callable[[], dict]:
    """Start validating the release table (`table`, already written to `written` as Parquet);
    returns what waits for `validate_release`'s result. In a process of its own the checks
    read the written table and run while this process writes the rest of the folder (its
    memory and Great Expectations' stay out of this process)."""
    if _checks_process is None:
        validated = categorical(table)  # a few codes per column: the text table can go
        return lambda: validate_release(validated, codebook, release_year, release_dir)
    pending = _checks_process.submit(
        validate_written_release, written, codebook, release_year, release_dir
    )
    return pending.result


def validate_written_release(
    written: Path, codebook: Codebook, release_year: int, release_dir: Path
) -> dict:
    """`validate_release` of the table as written (Parquet): the same frame it was written
    from, read back with the release's dtypes."""
    return validate_release(
        categorical(pd.read_parquet(written)), codebook, release_year, release_dir
    )


def validate_release(
    frame: pd.DataFrame, codebook: Codebook, release_year: int, release_dir: Path
) -> dict:
    """Validate the harmonized frame; write quality/summary.json and quality/data_docs/.

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
    outcome = checkpoint.run(
        batch_parameters={"dataframe": categorical(frame)},
        run_id=RunIdentifier(run_name=f"release-{release_year}"),
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
