"""A DAG run where iom's first names were pasted into a coded column, beside a healthy hotline.

The coverage gate fails iom's `harmonize_partner`, at once (a data error is not retried), and
none of the planted names may be found in the task logs, XCom, the Airflow metadata database
or anywhere under the out folder (which the run's teardown leaves without a work folder and
with its release lease freed). The hotline's chain succeeds: its counts are kept for the run's
Release report tab, and `outcome` names both. One DAG run for the module.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.airflow

DAG_ID = "ctdc_annual_update"
RELEASE = "shifted-2025"
PARTNERS = ["iom", "hotline"]  # iom fails on data, the hotline is healthy
# Invented first names, each on many rows: were the shifted column not detected, the k-rule
# alone would let them into the unmapped report.
PLANTED = ["Zarqaplanta", "Oyelfictia", "Brunmadeup", "Quillonymus", "Fennigrasso"]


@dataclass
class Run:
    state: str
    run_id: str
    out: Path
    output: str


@pytest.fixture(scope="module")
def metadata_db(airflow_home: Path) -> Path:
    from airflow.utils import db

    db.upgradedb()
    return airflow_home / "airflow.db"


@pytest.fixture(scope="module")
def shifted_run(request, repo_root, metadata_db, sample_landing, tmp_path_factory) -> Run:
    from airflow.dag_processing.dagbag import DagBag

    landing = tmp_path_factory.mktemp("shifted_landing")
    (landing / "iom").mkdir()
    source = next((sample_landing / "iom").glob("iom_case_export_*.csv"))
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    names = [PLANTED[i % len(PLANTED)] for i in range(len(frame))]
    frame["mimosa_gender"] = names  # the first-name column, pasted one place off
    frame["beneficiary_first_name"] = ""
    frame.to_csv(landing / "iom" / source.name, index=False)
    shutil.copytree(sample_landing / "hotline", landing / "hotline")  # a healthy partner

    dag = DagBag(dag_folder=str(repo_root / "dags")).dags[DAG_ID]
    for task in dag.tasks:
        # A retry would show as try_number 2 one second later; fail-fast means none.
        task.retries = 1
        task.retry_delay = timedelta(seconds=1)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    capturing = capman is not None and capman.is_globally_capturing()
    if capturing:
        capman.read_global_capture()
    out = tmp_path_factory.mktemp("shifted_out")
    conf = {"landing": str(landing), "out": str(out), "release": RELEASE, "partners": PARTNERS}
    run = dag.test(run_conf=conf)
    output = "".join(capman.read_global_capture()) if capturing else ""
    return Run(str(getattr(run.state, "value", run.state)), run.run_id, out, output)


def tasks(db: Path, run_id: str) -> dict[str, tuple[str, int]]:
    """State and try of each task instance, a mapped one as `task[partner]` (the instances
    that ran are named by partner)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT task_id, map_index, rendered_map_index, state, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        ).fetchall()
    return {
        task if index < 0 else f"{task}[{name}]": (state, tries)
        for task, index, name, state, tries in rows
    }


def found(text: str) -> list[str]:
    folded = text.casefold()
    return [name for name in PLANTED if name.casefold() in folded]


def test_map_fails_at_once_and_the_run_is_cleaned_up(shifted_run, metadata_db):
    from ctdc_harmonizer.run import locks

    assert shifted_run.state == "failed"
    states = tasks(metadata_db, shifted_run.run_id)
    assert states["partner.harmonize_partner[iom]"] == ("failed", 1), states  # not retried
    assert states["partner.stage_partner[iom]"][0] == "success"
    assert states["partner.compare_with_store[hotline]"][0] == "success"
    assert states["assemble_release"][0] == "upstream_failed"
    assert states["finish_run"][0] == "success", states  # the teardown ran on failure
    assert not (shifted_run.out / ".work" / RELEASE).exists()
    assert not (shifted_run.out / RELEASE).exists()
    assert locks.lock_path(shifted_run.out, "store").read_text() == ""  # the lease is free
    if shifted_run.output:
        assert "mimosa_gender:" in shifted_run.output  # the gate names the field, with counts


def test_no_planted_name_in_logs(shifted_run, airflow_home):
    if not shifted_run.output:
        pytest.skip("pytest output capture is off (-s): the dag.test() logs were not captured")
    assert "planned release" in shifted_run.output, "pipeline log lines missing from capture"
    log_files = [p for p in (airflow_home / "logs").rglob("*") if p.is_file()]
    texts = [shifted_run.output, *(p.read_bytes().decode("utf-8", "ignore") for p in log_files)]
    assert found("\n".join(texts)) == []


def test_no_planted_name_in_xcom_or_metadata_db(shifted_run, metadata_db):
    with sqlite3.connect(metadata_db) as conn:
        xcoms = conn.execute(
            "SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, shifted_run.run_id),
        ).fetchall()
        dump = "\n".join(conn.iterdump())
    assert {"plan_release", "partner.stage_partner"} <= {task for task, _ in xcoms}
    assert found("\n".join(str(value) for _, value in xcoms)) == []
    raw = metadata_db.read_bytes().decode("utf-8", errors="ignore")
    assert found(dump + raw) == []


def test_no_planted_name_in_the_out_folder(shifted_run):
    files = [p for p in shifted_run.out.rglob("*") if p.is_file()]
    texts = []
    for path in files:
        if path.suffix == ".parquet":
            texts.append(pd.read_parquet(path).astype(str).to_csv(index=False))
        if path.suffix == ".arrow":  # a work-folder frame (lz4): decoded to be searched
            texts.append(pd.read_feather(path).astype(str).to_csv(index=False))
        texts.append(path.read_bytes().decode("utf-8", errors="ignore"))
    assert found("\n".join(texts)) == []


def test_the_failure_is_kept_value_free_and_outcome_names_the_partner(shifted_run, metadata_db):
    """The failed step's record (XCom `ctdc_failure`): task, partner, reason code, message;
    `outcome`'s own failure says the same, so the run's page explains itself."""
    import json

    with sqlite3.connect(metadata_db) as conn:
        rows = conn.execute(
            "SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = ?",
            (DAG_ID, shifted_run.run_id, "ctdc_failure"),
        ).fetchall()
    records = {task: json.loads(value) for task, value in rows}
    failed = records["partner.harmonize_partner"]
    assert failed["partner"] == "iom" and failed["retryable"] is False
    assert failed["code"] and "mimosa_gender" in failed["message"]
    said = records["outcome"]["message"]
    assert "partner.harmonize_partner failed for partner iom" in said
    assert "the checked work of hotline is reported on the run's Release report tab" in said
    assert found(json.dumps(records)) == []


def test_the_run_tab_explains_the_failure_in_html(shifted_run, metadata_db):
    """No release was written: the tab says which step failed, for which partner, why and
    what to do, as a page (never JSON); the releases page shows the run with its reason."""
    from ctdc_release_report import app, html
    from ctdc_release_report.status import run_status

    status = run_status(DAG_ID, shifted_run.run_id)
    assert status["state"] == "failed" and status["release"] == RELEASE
    assert {"step": "partner.harmonize_partner", "partner": "iom", "state": "failed"} in (
        status["steps"]
    )
    page = app.run_report_page(DAG_ID, shifted_run.run_id)
    assert page.startswith("<!doctype html>") and '{"detail"' not in page
    assert "Step <b>partner.harmonize_partner</b> failed for partner <b>iom</b>" in page
    assert "What to do:" in page and "mimosa_gender" in page
    assert found(page) == []
    # The healthy hotline's checked work, counted: its table beside iom's message.
    healthy = status["healthy"]
    assert [p["partner"] for p in healthy["partners"]] == ["hotline"]
    hotline = healthy["partners"][0]
    assert hotline["rows_read"] > 0 and hotline["reconciles"] is True
    assert hotline["rows_read"] == sum(
        hotline[k] for k in ("harmonized", "rejected", "excluded", "erased", "duplicates_merged")
    )
    assert hotline["new"] > 0 and hotline["revised"] == hotline["retired"] == 0  # empty store
    assert "The other partners' checked work" in page
    counts = f'<td class="n">{hotline["files"]}</td><td class="n">{hotline["rows_read"]}</td>'
    assert f"<td>hotline</td>{counts}" in page
    assert "Their rejected rows by reason" in page
    history = app.history_page()
    assert RELEASE in history and "failed: " in history and "harmonize_partner" in history
    assert html.STATE_WORDS["queued"].startswith("queued: waiting for a free run slot")
    other = app.run_report_page("some_other_dag", "x")
    assert "has no CTDC report" in other and '{"detail"' not in other


def test_every_mapped_instance_is_named_by_its_partner(shifted_run, metadata_db):
    """Instances that never ran (upstream failed) get their partner's name at the run's end
    (the scheduler's listener), like those that ran."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from ctdc_release_report.run_note import write_note
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(
            select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.run_id == shifted_run.run_id)
        )
        write_note(run)
    with sqlite3.connect(metadata_db) as conn:
        named = conn.execute(
            "SELECT task_id, state, rendered_map_index FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? AND map_index >= 0",
            (DAG_ID, shifted_run.run_id),
        ).fetchall()
    assert "upstream_failed" in {state for _, state, _ in named}, named
    assert {name for _, _, name in named} == set(PARTNERS), named
