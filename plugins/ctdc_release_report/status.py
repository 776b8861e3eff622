"""What a run's page says when there is no release report (yet): the run's state, each step's
state with the partner it ran for, the failed steps' value-free records and what to do.

Everything comes from the metadata database: task instance states, the plan's XCom (partner
names for the mapped instances: the partner chain is expanded over the plan's `partners`, in
that order), the `ctdc_failure` XCom a failed step keeps (pipeline/airflow.py) and, when a
partner failed, the other partners' counts `outcome` kept (pipeline/annual_update/partial.py).
No value of the data reaches any of them.
"""

from __future__ import annotations

from ctdc_harmonizer.pipeline.airflow import FAILURE_KEY, HEALTHY_PARTNERS_KEY

PLAN_TASKS = ("plan_release", "plan_synthesis")
LOCKED = "ReleaseLockedError"
DATA_ERRORS = {"ExtractError", "MappingError", "CoverageError", "ContractError"}


def advice(record: dict) -> str:
    """What the data team does about a failed step (by its reason code)."""
    code = record.get("code")
    if code == LOCKED:
        return (
            "Another run holds the store (named above). Answer its approval under Required "
            "actions, or wait for it to end, then trigger this release again. Nothing was done."
        )
    if record.get("retryable"):
        return (
            "An infrastructure problem (disk, database, storage): Airflow retried the step. "
            "Fix what the message names, then clear the failed task to run it again."
        )
    if code in DATA_ERRORS:
        who = f"partner {record['partner']}" if record.get("partner") else "the partner named"
        return (
            f"A problem in the data or mapping of {who}: correct the file, column or mapping "
            "the message names (ask the partner for a corrected delivery if needed), then "
            "trigger a new run. Nothing was committed or published."
        )
    return (
        "Read the failed task's log (it names partner, file, column and row, never a value), "
        "correct the cause, then trigger a new run. Nothing was committed or published."
    )


def run_status(dag_id: str, run_id: str) -> dict | None:
    """The run's state, its steps (task, partner, state) and its failure records; None when
    there is no such run."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.execute(
            select(DagRun.state, DagRun.run_type, DagRun.run_after).where(
                DagRun.dag_id == dag_id, DagRun.run_id == run_id
            )
        ).first()
        if run is None:
            return None
        rows = session.execute(
            select(TI.task_id, TI.map_index, TI.state, TI.rendered_map_index)
            .where(TI.dag_id == dag_id, TI.run_id == run_id)
            .order_by(TI.start_date.is_(None), TI.start_date, TI.task_id, TI.map_index)
        ).all()
        xcoms = session.execute(
            select(XComModel.task_id, XComModel.key, XComModel)
            .where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)
            .where(
                XComModel.key.in_((FAILURE_KEY, HEALTHY_PARTNERS_KEY))
                | ((XComModel.key == "return_value") & XComModel.task_id.in_(PLAN_TASKS))
            )
        ).all()
        values = [(task, key, XComModel.deserialize_value(x)) for task, key, x in xcoms]
    plan = next((v for _, key, v in values if key == "return_value"), None) or {}
    partners = list(plan.get("partners") or [])

    def partner_of(map_index: int, rendered: str | None) -> str | None:
        if map_index < 0:
            return None
        if 0 <= map_index < len(partners):
            return partners[map_index]  # named in every state, run or not
        return rendered or str(map_index)

    steps = [
        {
            "step": task,
            "partner": partner_of(index, rendered),
            "state": str(getattr(state, "value", state) or "not started"),
        }
        for task, index, state, rendered in rows
    ]
    failures = [dict(v) | {"advice": advice(v)} for task, key, v in values if key == FAILURE_KEY]
    outcome = next((f for f in failures if f.get("task") == "outcome"), None)
    healthy = next((v for _, key, v in values if key == HEALTHY_PARTNERS_KEY), None)
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": str(getattr(run.state, "value", run.state)),
        "run_type": str(getattr(run.run_type, "value", run.run_type)),
        "run_after": run.run_after.isoformat() if run.run_after else None,
        "release": plan.get("release"),
        "plan": plan,
        "steps": steps,
        "failures": [f for f in failures if f.get("task") != "outcome"],
        "outcome": outcome["message"] if outcome else None,
        "healthy": healthy,  # a failed run's checked partners (None: none kept)
    }
