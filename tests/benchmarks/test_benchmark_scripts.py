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
    done = _script("bench_cli.py", "--records-per-partner", "30")
    assert "ratio run / floor" in done.stdout
