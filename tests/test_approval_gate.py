"""The approval gate's decisions: published only after Approve; a rejection or no answer leaves
the release unpublished and the run says so (the `outcome` task fails with the reason)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

SUMMARY = {"release": "2025", "rows": 10, "report": "/r/2025", "partners": {}, "body": ""}


@pytest.fixture(scope="module")
def dag(repo_root):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(repo_root / "dags")).dags["ctdc_annual_update"]


def outcome(dag, xcoms: dict):
    ti = SimpleNamespace(xcom_pull=lambda task_ids: xcoms.get(task_ids))
    return dag.get_task("outcome").python_callable(ti=ti)


def test_published_after_approval(dag):
    published = {"release": "2025", "rows": 10, "report": "/r/2025"}
    assert outcome(dag, {"summarize": SUMMARY, "publish": published}) == "release 2025 published"


def test_rejection_is_named_with_who_rejected(dag):
    from airflow.sdk.exceptions import AirflowFailException

    decision = {"chosen_options": ["Reject"], "responded_by_user": {"id": "a", "name": "alice"}}
    with pytest.raises(AirflowFailException, match="release 2025 NOT published: rejected by alice"):
        outcome(dag, {"summarize": SUMMARY, "approve": decision})


def test_no_answer_is_no_approval(dag):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="release 2025 NOT published: no approval"):
        outcome(dag, {"summarize": SUMMARY})
    with pytest.raises(AirflowFailException, match="an earlier step failed"):
        outcome(dag, {})


def test_approval_waits_a_week_with_no_default_answer(dag):
    approve = dag.get_task("approve")
    assert approve.options == ["Approve", "Reject"]
    assert approve.defaults is None  # a timeout never approves by itself
    assert approve.response_timeout == timedelta(days=7)
    assert approve.retries == 0
    assert "summarize" in approve.body  # the headline counts of the run
