"""The benchmark scripts run to their end at a tiny size. A benchmark is run by hand, months
apart; bench_store.py broke when bench_cli.measure gained an argument (a8cba38) and nothing
noticed. These tests time nothing: they only run the scripts (make test-e2e)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.benchmarks


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_bench_store_runs_its_six_releases(tmp_path):
    results = tmp_path / "store.jsonl"
    _script(
        "bench_store.py",
        "--records-per-partner",
        "60",
        "--increment",
        "5",
        "--results",
        str(results),
    )
    (line,) = results.read_text().splitlines()
    report = json.loads(line)
    runs = report["runs"]
    assert {"initial", "incremental", "full", "reharmonize", "original"} <= set(runs)
    assert all(run["tree_cpu_s"] > 0 for run in runs.values())  # every process counted
    # Rows harmonized from this run's deliveries (a re-harmonization delivers none).
    assert runs["initial"]["rows"] == runs["full"]["rows"] - runs["incremental"]["rows"] > 0
    assert runs["reharmonize"]["rows"] == 0
    # The incremental release and the fresh build of the same deliveries make one table.
    assert runs["incremental"]["parquet_sha256"] == runs["full"]["parquet_sha256"]


def test_bench_cli_runs_the_floor_and_the_run(tmp_path):
    results = tmp_path / "results.jsonl"
    done = _script("bench_cli.py", "--records-per-partner", "30", "--results", str(results))
    assert "ratio run / floor" in done.stdout
    (line,) = results.read_text().splitlines()
    assert json.loads(line)["records"] == 30 * 4


def test_bench_many_files_measures_one_file_and_many(tmp_path):
    results = tmp_path / "many_files.jsonl"
    _script(
        "bench_many_files.py",
        "--records",
        "40",
        "--files",
        "4",
        "--formats",
        "csv,xlsx",
        "--results",
        str(results),
    )
    (line,) = results.read_text().splitlines()
    formats = json.loads(line)["formats"]
    assert set(formats) == {"csv", "xlsx"}
    for entry in formats.values():
        assert entry["files"] == 4 and entry["records"] == 40
        # Both runs measured to their end: None would mean a run failed or its process tree's
        # CPU was not known (bench_cli.adopt_orphans).
        assert entry["one_cpu_s"] > 0 and entry["many_cpu_s"] > 0
        assert entry["ratio"] is not None


def test_bench_years_runs_the_schedules_first_years(tmp_path):
    done = _script(
        "bench_years.py", "--records-per-partner", "20", "--years", "3", "--work", str(tmp_path)
    )
    year_rows = [line for line in done.stdout.splitlines() if line[:4].isdigit()]
    assert len(year_rows) == 3
    assert "first release" in done.stdout
    assert len(list((tmp_path / "logs").glob("*.err"))) == 3  # one run per year, each logged


@pytest.mark.processes
def test_bench_airflow_runs_the_first_hour_through_real_airflow(tmp_path):
    results = tmp_path / "airflow.jsonl"
    # Enough records for the synthesis to accept the release (synthesis config release_size).
    _script("bench_airflow.py", "--records-per-partner", "80", "--results", str(results))
    (line,) = results.read_text().splitlines()
    result = json.loads(line)
    assert result["state"] == "annual update success, synthesis success"
    assert result["trigger_to_approval_seconds"] > 0
    assert result["approve_to_public_dataset_seconds"] > 0


def test_compare_commits_runs_both_commits_on_one_partner(tmp_path):
    results = tmp_path / "compare.jsonl"
    _script(
        "compare_commits.py",
        "--before",
        "HEAD",
        "--partners",
        "iom",
        "--records-per-partner",
        "20",
        "--pairs",
        "1",
        "--results",
        str(results),
    )
    (line,) = results.read_text().splitlines()
    report = json.loads(line)
    assert report["partners"] == ["iom"]
    (size,) = report["sizes"]
    assert size["records"] == 20 and size["pairs"] == 1
    assert size["before_cpu_s"][0] > 0 and size["after_cpu_s"][0] > 0  # whole trees counted


def test_bench_synthesis_and_compare_engines_run_on_a_small_release(tmp_path):
    _script(
        "bench_synthesis.py", "--sizes", "2000", "--pacsynth-up-to", "0", "--out", str(tmp_path)
    )
    (line,) = (tmp_path / "synthesis.jsonl").read_text().splitlines()
    report = json.loads(line)
    assert report["rows"] > 1500 and report["combinations"] > 0 and not report["reused_fit"]
    assert set(report["seconds_by_step"]) >= {"fit_aggregates", "sample", "evaluate"}
    handoff = tmp_path / "releases" / "n2000" / "handoff" / "bench2k-2025"
    done = _script("compare_engines.py", "--release", str(handoff), "--fits", "1")
    compared = json.loads(done.stdout[done.stdout.index("{") :])
    assert compared["rows"] == report["rows"] and compared["fits_per_engine"] == 1
    assert set(compared["seconds_per_fit"]) == {"own", "pacsynth"}
    assert compared["measures"]["released_1"]["own"] > 0


def test_bench_explorer_opens_the_page_in_chromium(tmp_path):
    done = _script("bench_explorer.py", "--rows", "2000", "--repeat", "1")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rows"] == 2000 and report["open_seconds_best"] > 0


def test_bench_workbooks_reads_a_workbook_and_refuses_a_bomb(tmp_path):
    done = _script(
        "bench_workbooks.py", "--records", "200", "--bomb-mb", "5", "--workdir", str(tmp_path)
    )
    assert "refused:" in done.stdout and "read 200 rows" in done.stdout
