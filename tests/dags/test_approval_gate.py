"""The approval gate's decisions: published only after Approve; a rejection or no answer leaves
the store and every published release as they were, and the run says so (the `outcome` task
fails with the reason)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

SUMMARY = {"release": "2025", "rows": 10, "report": "/r/2025", "partners": {}, "body": ""}


@pytest.fixture(scope="module")
def dag(repo_root):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(repo_root / "dags")).dags["ctdc_annual_update"]


def outcome(dag, xcoms: dict, failures: dict | None = None):
    def pull(task_ids, key="return_value"):
        if key == "ctdc_failure":  # pulled over every task id at once
            return [(failures or {}).get(t) for t in task_ids]
        return xcoms.get(task_ids)

    ti = SimpleNamespace(xcom_pull=pull)
    return dag.get_task("outcome").python_callable(ti=ti, dag=dag)


def test_published_after_approval(dag):
    handed = {"release": "2025", "rows": 10, "handoff": "/r/handoff/2025"}
    done = outcome(dag, {"summarize_release": SUMMARY, "announce_release": handed})
    assert done == "release 2025 committed, published and handed to synthesis"


def test_rejection_is_named_with_who_rejected(dag):
    from airflow.sdk.exceptions import AirflowFailException

    decision = {"chosen": ["Reject"], "by": "alice"}
    said = "release 2025 NOT committed nor published: rejected by alice"
    with pytest.raises(AirflowFailException, match=said):
        outcome(dag, {"summarize_release": SUMMARY, "approve": decision})


def test_no_answer_is_no_approval(dag):
    from airflow.sdk.exceptions import AirflowFailException

    said = "release 2025 NOT committed nor published: no approval"
    with pytest.raises(AirflowFailException, match=said):
        outcome(dag, {"summarize_release": SUMMARY})
    with pytest.raises(AirflowFailException, match="an earlier step failed"):
        outcome(dag, {})


def test_a_failed_partner_is_named_with_its_reason(dag):
    """One partner failed on data: `outcome` names the step, the partner and the reason."""
    from airflow.sdk.exceptions import AirflowFailException

    failed = {
        "task": "partner.stage_partner",
        "partner": "iom",
        "code": "ExtractError",
        "message": "stage_partner: partner iom, file a.xlsx: column 'Age' missing",
        "retryable": False,
    }
    said = (
        "release not published: partner.stage_partner failed for partner iom [ExtractError]: "
        "stage_partner: partner iom, file a.xlsx: column 'Age' missing"
    )
    with pytest.raises(AirflowFailException) as raised:
        outcome(dag, {}, {"partner.stage_partner": failed, "outcome": {"task": "outcome"}})
    assert str(raised.value).endswith(said)


def test_the_decision_is_recorded_before_a_rejection_skips_publish(dag):
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    pushed = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}), map_index=-1)
    approve = dag.get_task("approve")
    event = {
        "chosen_options": ["Reject"],
        "params_input": {},
        "responded_at": datetime.now(UTC),
        "responded_by_user": {"id": "b", "name": "bob"},
    }
    with pytest.raises(DownstreamTasksSkipped):
        approve.execute_complete({"ti": ti, "task": approve}, event)
    assert pushed["decision"] == {"chosen": ["Reject"], "by": "bob"}
    # Airflow skips what follows: nothing is committed, published or handed off
    assert pushed["skipmixin_key"] == {"skipped": ["commit_release"]}


def test_approval_waits_a_week_with_no_default_answer(dag):
    approve = dag.get_task("approve")
    assert approve.options == ["Approve", "Reject"]
    assert approve.defaults is None  # a timeout never approves by itself
    assert approve.response_timeout == timedelta(days=7)
    assert approve.retries == 0
    assert "summarize_release" in approve.body  # the headline counts of the run


def test_the_lease_says_awaiting_approval_while_the_gate_waits(tmp_path):
    """The gate marks the store's lease, so that a rival run is refused with the reason."""
    from ctdc_release_report.approval import mark_lease

    from ctdc_harmonizer.errors import ReleaseLockedError
    from ctdc_harmonizer.run import locks

    lease = locks.acquire(tmp_path, "store", lease_owner="ctdc_annual_update/run_a", release="7")
    plan = {"lock": lease.model_dump(mode="json")}
    ti = SimpleNamespace(xcom_pull=lambda task_ids: plan if task_ids == "plan_release" else None)
    mark_lease({"ti": ti}, locks.AWAITING_APPROVAL)
    with pytest.raises(ReleaseLockedError, match="release 7 is awaiting approval in Airflow run"):
        locks.acquire(tmp_path, "store", lease_owner="ctdc_annual_update/run_b", release="7")
    mark_lease({"ti": ti}, locks.RUNNING)  # answered: publishing
    assert locks.holder(tmp_path, "store")["state"] == "running"
    mark_lease({"ti": SimpleNamespace()}, locks.RUNNING)  # no XCom: logged, never raised
