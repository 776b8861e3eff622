"""The DAG files parse, cheaply, and the annual-update DAG is wired as documented."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

DAG_ID = "ctdc_annual_update"
DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / f"{DAG_ID}.py"
# The DAG file imports the pipeline's declaration (ctdc_harmonizer.pipeline), never a stage
# library: those load in the task that runs a step.
HEAVY = ("pandas", "great_expectations", "pyarrow", "pandera")  # sqlalchemy: Airflow loads it
CHAIN = [
    "stage_partner",
    "check_staged_contract",
    "harmonize_partner",
    "check_codebook_contract",
    "compare_with_store",
]
TASK_IDS = {
    "wait_for_deliveries",
    "pull_deliveries",
    "plan_release",
    "partners_with_work",
    *(f"partner.{step}" for step in CHAIN),
    "read_carried_records",
    "assemble_release",
    "write_receipts",
    "send_receipts",
    "build_release_folder",
    "summarize_release",
    "approve",
    "commit_release",
    "publish_release_folder",
    "purge_withdrawn_records",
    "hand_off_release",
    "clear_pulled_deliveries",
    "announce_release",
    "outcome",
    "finish_run",
}


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags[DAG_ID]


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dags


def test_dag_settings(dagbag, dag):
    assert dag.doc_md and "CTDC annual update" in dag.doc_md
    assert dag.catchup is False
    assert dag.start_date is None  # with run_immediately=False: no past interval fires
    assert dag.max_active_runs > 1  # a rival run is refused by the lease, never queued
    assert dag.default_args["retries"] >= 1
    assert callable(dag.default_args["on_failure_callback"])
    assert dag.tags
    # Both DAGs name the team as owner (the UI's owner filter), every task too.
    synthesis = dagbag.dags["ctdc_synthesis"]
    assert dag.owner == synthesis.owner == "ctdc-data-team"
    assert {t.owner for d in (dag, synthesis) for t in d.tasks} == {"ctdc-data-team"}
    assert set(dag.params.keys()) == {
        "release",
        "landing",
        "out",
        "work",
        "partners",
        "accept_retirements",
        "wait_hours",
    }
    # Defaults are resolved at run time (params empty), never from the parsing environment.
    assert {k: dag.params[k] for k in dag.params} == dict.fromkeys(dag.params)


def test_trigger_form_accepts_empty_params_and_offers_mapped_partners(dag, repo_root):
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    mapped = sorted(p.parent.name for p in (repo_root / "mappings").glob("*/partner.yaml"))
    schemas = {name: dag.params.get_param(name).schema for name in dag.params}
    for name, schema in schemas.items():
        assert "null" in schema["type"], name  # the form may leave it empty
        assert dag.params.get_param(name).description, name
    for name in ("partners", "accept_retirements"):
        partners = schemas[name]
        assert partners["examples"] == mapped  # the form's multi-select
        assert partners["items"]["enum"] == mapped
        assert Param(["iom"], **partners).resolve() == ["iom"]
        with pytest.raises(ParamValidationError):
            Param(["no_such_partner"], **partners).resolve()


def test_partner_tasks_are_named_by_partner(dag):
    for step in CHAIN:
        assert "partner" in dag.get_task(f"partner.{step}").map_index_template


def test_tasks_and_wiring(dag):
    assert set(dag.task_ids) == TASK_IDS
    group = dag.task_group_dict["partner"]
    assert type(group).__name__ == "MappedTaskGroup"
    chain = [f"partner.{step}" for step in CHAIN]
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        assert upstream in dag.get_task(downstream).upstream_task_ids
    assert "partner.compare_with_store" in dag.get_task("assemble_release").upstream_task_ids
    order = [
        "read_carried_records",
        "assemble_release",
        "write_receipts",
        "send_receipts",
        "build_release_folder",
        "summarize_release",
        "approve",
        "commit_release",
        "publish_release_folder",
        "purge_withdrawn_records",
        "hand_off_release",
        "announce_release",
        "outcome",
        "finish_run",
    ]
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert upstream in dag.get_task(downstream).upstream_task_ids
    assert type(dag.get_task("approve")).__name__ == "ReleaseApproval"  # an ApprovalOperator
    assert dag.get_task("outcome").trigger_rule == "all_done"
    # When one partner fails, the release steps turn upstream_failed at once: outcome must
    # still wait for the healthy chains, or it keeps no counts and the teardown deletes the
    # work folder under them.
    assert "partner.compare_with_store" in dag.get_task("outcome").upstream_task_ids
    # The teardown frees the store's lease and deletes the work folder, also after a failure.
    assert dag.get_task("finish_run").is_teardown and dag.get_task("plan_release").is_setup
    assert [t.task_id for t in dag.leaves] == ["finish_run"]


def test_only_announce_release_emits_the_release_asset(dag):
    from airflow.sdk import Asset

    outlets = dag.get_task("announce_release").outlets
    assert [(o.name, o.uri) for o in outlets if isinstance(o, Asset)] == [
        ("ctdc_harmonized_release", "ctdc://harmonized-release/")  # as Airflow normalizes it
    ]
    assert all(not dag.get_task(t).outlets for t in TASK_IDS - {"announce_release"})


def test_parsing_imports_no_heavy_module(repo_root: Path):
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r}))"
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


def test_dag_file_is_wiring_only():
    assert len(DAG_FILE.read_text(encoding="utf-8").splitlines()) <= 200


def test_unpausing_starts_no_run(dag):
    """The first scheduled run is the next 1 January, never the interval already past (a run
    the data team did not ask for would take the store's lease)."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    first = coerce_to_core_timetable(dag.timetable).next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
    )
    now = datetime.now(UTC)
    assert first.run_after > now
    assert (first.run_after.month, first.run_after.day, first.run_after.year) == (
        1,
        1,
        now.year + 1,
    )


def test_one_rule_for_the_default_release_label(dag, repo_root: Path):
    """The form's help, README and `ctdc run --help` state the rule default_release_label
    applies, word for word."""
    from ctdc_harmonizer.run.plan import DEFAULT_RELEASE_RULE, default_release_label

    assert DEFAULT_RELEASE_RULE in dag.params.get_param("release").description
    assert DEFAULT_RELEASE_RULE in dag.doc_md
    readme = " ".join((repo_root / "README.md").read_text(encoding="utf-8").split())
    assert readme.count(DEFAULT_RELEASE_RULE) >= 2  # the command line and the trigger form
    cli = subprocess.run(
        [sys.executable, "-m", "ctdc_harmonizer.cli", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert DEFAULT_RELEASE_RULE in " ".join(cli.stdout.split())
    assert default_release_label(datetime(2027, 1, 1, 0, 5, tzinfo=UTC)) == "2026"
    assert default_release_label(datetime(2026, 12, 5, tzinfo=UTC)) == "2026"
