"""The ctdc_synthesis DAG: integrity, then end to end on the annual update's asset event.

One annual-update run with dag.test(), then the synthesis DAG on exactly the asset event that
run emitted (attached as the run's triggering event, as the scheduler does), then a manual
trigger with a release label, which reuses the stored DP aggregates and spends nothing.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from test_airflow_e2e import (  # noqa: F401  (fixtures)
    file_text,
    identifiers,
    leaks,
    metadata_db,
    partners,
)

DAG_ID = "ctdc_synthesis"
DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / f"{DAG_ID}.py"
RELEASE = "synth-e2e-2025"
STEPS = [
    "plan_synthesis",
    "verify_handoff",
    "account_people",
    "disclosure_risk",
    "suppress",
    "fit_aggregates",
    "sample",
    "evaluate",
    "publish",
]


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags[DAG_ID]


def test_dag_parses_and_is_scheduled_on_the_release_asset(dagbag, dag):
    assert dagbag.import_errors == {}
    assert dag.doc_md and "CTDC synthesis" in dag.doc_md
    assert dag.catchup is False
    assert dag.start_date == datetime(2024, 1, 1, tzinfo=UTC)
    assets = dag.timetable.asset_condition.objects
    assert [(a.name, a.uri) for a in assets] == [
        ("ctdc_harmonized_release", "ctdc://harmonized-release/")
    ]
    assert {k: dag.params[k] for k in dag.params} == dict.fromkeys(
        ["release", "handoff", "out", "epsilon", "delta", "reporting_length", "seed"]
    )


def test_tasks_run_in_order_one_line_each(dag):
    assert set(dag.task_ids) == set(STEPS)
    for upstream, downstream in zip(STEPS, STEPS[1:], strict=False):
        assert upstream in dag.get_task(downstream).upstream_task_ids
    assert [t.task_id for t in dag.leaves] == ["publish"]
    assert len(DAG_FILE.read_text(encoding="utf-8").splitlines()) <= 130


def test_parsing_imports_no_heavy_module(repo_root: Path):
    """The DAG file imports the synthesis's declaration, never pandas, pyarrow or pac-synth."""
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pandas', 'pacsynth', 'pyarrow', 'great_expectations'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(DAG_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo_root,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# --- end to end ---------------------------------------------------------------------------------


def _no_retries(dag) -> None:
    for task in dag.tasks:
        task.retries = 0


def _state(run) -> str:
    return str(getattr(run.state, "value", run.state))


@pytest.fixture(scope="module")
def annual_run(repo_root, metadata_db, sample_landing, partners, tmp_path_factory):  # noqa: F811
    from airflow.dag_processing.dagbag import DagBag

    out = tmp_path_factory.mktemp("synth_releases")
    annual = DagBag(dag_folder=str(repo_root / "dags")).dags["ctdc_annual_update"]
    _no_retries(annual)
    conf = {"landing": str(sample_landing), "out": str(out), "release": RELEASE}
    run = annual.test(run_conf={**conf, "partners": partners}, mark_success_pattern="approve")
    assert _state(run) == "success"
    return out


@pytest.fixture(scope="module")
def asset_run(annual_run, repo_root):
    from airflow.dag_processing.dagbag import DagBag

    from ctdc_harmonizer.synthesis.asset_run import latest_event_id, run_on_asset_event

    dag = DagBag(dag_folder=str(repo_root / "dags")).dags[DAG_ID]
    _no_retries(dag)
    event = latest_event_id(RELEASE)
    assert event is not None, "the annual update emitted no asset event for the release"
    return event, run_on_asset_event(dag, event)


@pytest.mark.airflow
def test_asset_event_carries_the_handoff_contract(annual_run, metadata_db):  # noqa: F811
    with sqlite3.connect(metadata_db) as conn:
        extras = [json.loads(e) for (e,) in conn.execute("SELECT extra FROM asset_event")]
    extra = next(e for e in extras if e.get("release") == RELEASE)
    assert set(extra) == {"release", "rows", "handoff", "manifest_sha256", "report"}
    assert Path(extra["handoff"]) == annual_run.resolve() / "handoff" / RELEASE
    assert Path(extra["report"]) == annual_run.resolve() / RELEASE  # the release report's folder
    assert extra["rows"] == len(pd.read_parquet(Path(extra["handoff"]) / "harmonized.parquet"))


@pytest.mark.airflow
def test_synthesis_runs_on_exactly_that_event(asset_run, annual_run, metadata_db):  # noqa: F811
    event, run = asset_run
    assert _state(run) == "success"
    with sqlite3.connect(metadata_db) as conn:
        consumed = conn.execute(
            "SELECT e.event_id FROM dagrun_asset_event e "
            "JOIN dag_run r ON r.id = e.dag_run_id WHERE r.run_id = ? AND r.dag_id = ?",
            (run.run_id, DAG_ID),
        ).fetchall()
        states = dict(
            conn.execute(
                "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (DAG_ID, run.run_id),
            ).fetchall()
        )
    assert consumed == [(event,)]
    assert states == dict.fromkeys(STEPS, "success")
    public = annual_run.resolve() / "public" / RELEASE
    meta = json.loads((public / "metadata.json").read_text("utf-8"))
    assert meta["version"]["release"] == RELEASE
    report = json.loads(
        (annual_run / "restricted" / RELEASE / "comparability.json").read_text("utf-8")
    )
    # the default engine computes the aggregates itself: pac-synth's sampler cannot follow
    assert set(report["samplers"]) == {"own"}
    stored = json.loads(
        next(
            (annual_run / "restricted" / RELEASE / "aggregates").glob("*/aggregates.json")
        ).read_text("utf-8")
    )
    assert stored["engine"] == "own"


@pytest.mark.airflow
def test_the_synthesis_tab_shows_what_was_spent_and_published(asset_run, annual_run):
    """The run tab of a synthesis run: ε spent, ledger totals, risk and suppression counts,
    comparability figures, links to the public files; a page, never JSON."""
    from ctdc_release_report import app

    _, run = asset_run
    page = app.run_report_page(DAG_ID, run.run_id)
    assert page.startswith("<!doctype html>") and '{"detail"' not in page
    assert f"Synthesis of release {RELEASE}: succeeded" in page
    assert "ε spent by this run" in page and "counted against release" in page
    assert "records in classes below k" in page and "cells suppressed" in page
    # A flag in words: this run fitted the aggregates, it did not reuse them.
    reused = '<td>aggregates reused (nothing spent)</td><td class="n">no</td>'
    assert reused in page and "False" not in page
    assert "Comparability (public view)" in page
    assert "/files/" in page and "synthetic.csv" in page
    # Called directly, nobody is the data team: the restricted view is only named.
    assert "is for the data team" in page and "(restricted view)" not in page
    # For the data team: the restricted figures, read from this run's restricted folder.
    from ctdc_release_report import html

    data = app._synthesis(run.run_id, restricted=True)
    restricted = html.synthesis_page(data, app.PREFIX)
    assert "Comparability (restricted view): synthetic data vs the sensitive data" in restricted
    sensitive = data["restricted_view"]["sensitive_records"]
    assert sensitive and f"{sensitive} records in the sensitive table" in restricted
    assert "classes smaller than k" in restricted and "is for the data team" not in restricted
    served = app.public_file(run.run_id, "metadata.json")
    assert Path(served.path).parent == annual_run.resolve() / "public" / RELEASE
    with pytest.raises(Exception, match="no such public file"):
        app.public_file(run.run_id, "..%2Fwarehouse.sqlite")


@pytest.mark.airflow
def test_manual_trigger_with_a_release_label_spends_nothing(asset_run, annual_run, repo_root):
    from airflow.dag_processing.dagbag import DagBag

    ledger = annual_run / "warehouse.sqlite"
    with sqlite3.connect(ledger) as conn:
        before = conn.execute("SELECT * FROM privacy_budget_ledger").fetchall()
    dag = DagBag(dag_folder=str(repo_root / "dags")).dags[DAG_ID]
    _no_retries(dag)
    run = dag.test(run_conf={"release": RELEASE, "out": str(annual_run)})
    assert _state(run) == "success"
    with sqlite3.connect(ledger) as conn:
        after = conn.execute("SELECT * FROM privacy_budget_ledger").fetchall()
    assert after == before and len(before) == 2  # one fit in all: started + spent
    summary = json.loads(
        (annual_run / "restricted" / RELEASE / "synthesis.json").read_text("utf-8")
    )
    assert summary["reused"] is True and summary["epsilon_spent_now"] == 0.0


@pytest.mark.airflow
def test_nothing_sensitive_in_public_xcom_or_logs(
    asset_run,
    annual_run,
    identifiers,  # noqa: F811
    metadata_db,  # noqa: F811
):
    public = annual_run.resolve() / "public" / RELEASE
    files = [p for p in public.iterdir() if p.is_file()]
    texts = {p.name: file_text(p) for p in files}
    assert leaks(identifiers, "\n".join(texts.values())) == []
    # No harmonized row in any public file but the synthetic one, and in the synthetic one
    # none of the rows whose rare value was suppressed (their value never reaches the fit).
    harmonized = (annual_run / RELEASE / "harmonized.csv").read_text("utf-8").splitlines()[1:]
    for name, text in texts.items():
        if name != "synthetic.csv":
            assert not any(row in text for row in harmonized if row.count(",") == 26), name
    frame = pd.read_csv(annual_run / RELEASE / "harmonized.csv", dtype=str, keep_default_na=False)
    rare = set()
    for column in ("citizenship", "CountryOfExploitation"):
        counts = frame[column][frame[column] != ""].value_counts()
        rare |= {(column, v) for v in counts[counts < 10].index}
    assert rare, "no rare value in the sample: the check below would be vacuous"
    # the rare-value rule is decided on the DP aggregates: none reaches the public aggregates
    released = pd.read_csv(public / "aggregates.csv", dtype=str, keep_default_na=False)
    parts = {p for c in released.iloc[:, 0] for p in str(c).split(";")}
    assert not {f"{column}:{value}" for column, value in rare} & parts
    synthetic = pd.read_csv(public / "synthetic.csv", dtype=str, keep_default_na=False)
    for column, value in rare:
        assert not (synthetic[column] == value).any()
    with sqlite3.connect(metadata_db) as conn:
        xcoms = conn.execute("SELECT value FROM xcom WHERE dag_id = ?", (DAG_ID,)).fetchall()
    assert xcoms
    assert leaks(identifiers, "\n".join(str(v) for (v,) in xcoms)) == []


@pytest.mark.airflow
def test_a_data_error_fails_at_once_without_retry(repo_root, metadata_db, tmp_path):  # noqa: F811
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(repo_root / "dags")).dags[DAG_ID]
    assert dag.get_task("verify_handoff").retries == 1  # infra errors would be retried
    run = dag.test(run_conf={"release": "missing-2025", "out": str(tmp_path)})
    assert _state(run) == "failed"
    with sqlite3.connect(metadata_db) as conn:
        states = dict(
            conn.execute(
                "SELECT task_id, state || ':' || try_number FROM task_instance "
                "WHERE dag_id = ? AND run_id = ?",
                (DAG_ID, run.run_id),
            ).fetchall()
        )
    assert states["verify_handoff"] == "failed:1"
    assert states["publish"] == "upstream_failed:0"
    assert not (tmp_path / "public").exists()
