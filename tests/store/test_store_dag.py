"""The three years of tests/support/store_scenario.py through the DAG (dag.test()), beside the
command line: each year's release is the same, byte for byte, by either runner of the one
declaration.
(tests/store/test_store.py shows the command line's releases equal fresh builds of each year's
effective deliveries; so do the DAG's.)"""

from __future__ import annotations

import json
import sqlite3

import pytest

from ctdc_harmonizer.pipeline.local import run_annual_update
from support.harness import release_files
from support.store_scenario import build

pytestmark = pytest.mark.airflow
DAG_ID = "ctdc_annual_update"


@pytest.fixture(scope="module")
def both(tmp_path_factory, repo_root, airflow_home):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.upgradedb()
    root = tmp_path_factory.mktemp("store_dag")
    scenario = build(root / "scenario")
    out_cli, out_dag = root / "cli", root / "dag"
    dag = DagBag(dag_folder=str(repo_root / "dags")).dags[DAG_ID]
    for task in dag.tasks:
        task.retries = 0
    made, states = {}, {}
    monkeypatch = pytest.MonkeyPatch()
    try:
        for year in scenario.years:
            run_annual_update(
                str(scenario.landing(year)),
                str(out_cli),
                year,
                mappings=str(scenario.mappings(year)),
            )
            monkeypatch.setenv("CTDC_MAPPINGS_DIR", str(scenario.mappings(year)))
            run = dag.test(
                run_conf={
                    "landing": str(scenario.landing(year)),
                    "out": str(out_dag),
                    "release": year,
                },
                mark_success_pattern="approve",
            )
            states[year] = str(getattr(run.state, "value", run.state))
            made[year] = (release_files(out_cli / year), release_files(out_dag / year))
    finally:
        monkeypatch.undo()
    return scenario, out_dag, made, states


def test_every_year_the_dag_and_the_command_line_make_the_same_release(both):
    scenario, _, made, states = both
    for year in scenario.years:
        assert states[year] == "success", year
        from_cli, from_dag = made[year]
        assert len(from_cli) > 8
        assert from_cli == from_dag, year


def test_the_dag_reconciles_over_time_and_erases_the_withdrawn_survivor(both):
    scenario, out, _, _ = both
    for year in scenario.years:
        assert json.loads((out / year / "reconciliation.json").read_text())["invariant_holds"]
    with sqlite3.connect(out / "warehouse.sqlite") as conn:
        held = dict(conn.execute("SELECT release_label, count(*) FROM ctdc_release_v3 GROUP BY 1"))
        counts = dict(conn.execute("SELECT label, row_count FROM data_release"))
    assert held == counts and sorted(held) == scenario.years
    for year in scenario.years[:2]:  # purged after year 3's withdrawal
        audit = json.loads((out / year / "audit.json").read_text())
        assert audit["entries"][-1]["records_removed"] == 1
