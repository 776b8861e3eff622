"""A listener that writes the run's per-partner counts into the DAG run note, and names every
mapped instance by its partner.

The Task SDK gives a task no way to write a run note, so the scheduler does it when the run
ends: it reads the `summarize` task's XCom (counts only) and sets `dag_run.note` in the
scheduler's own session. Only partner names (mapping folder names) and integers reach the
note; anything else in the XCom is ignored. An error is logged by its type only and never
reaches the scheduler.
"""

from __future__ import annotations

import logging
import re

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

DAG_ID = "ctdc_annual_update"
SUMMARY_TASK = "summarize_release"
PLAN_TASK = "plan_release"
HEADING = "**Harmonized rows per partner**"
PARTNER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a mapping folder name, nothing else


def note_text(summary: object) -> str | None:
    """The note for a `summarize` XCom: partner names and integers only, or None."""
    if not isinstance(summary, dict) or not isinstance(summary.get("partners"), dict):
        return None
    counts = {
        name: count
        for name, count in summary["partners"].items()
        if isinstance(name, str)
        and PARTNER_NAME.match(name)
        and isinstance(count, int)
        and not isinstance(count, bool)
    }
    lines = [HEADING, "", "| partner | harmonized rows |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in sorted(counts.items())]
    lines += ["", f"Total: {sum(counts.values())} rows from {len(counts)} partner(s)."]
    return "\n".join(lines)


def _returned(dag_run, session, task_id: str) -> object:
    """What the run's (unmapped) task `task_id` returned, or None."""
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    row = session.scalar(
        select(XComModel).where(
            XComModel.dag_id == dag_run.dag_id,
            XComModel.run_id == dag_run.run_id,
            XComModel.task_id == task_id,
            XComModel.key == "return_value",
            XComModel.map_index == -1,
        )
    )
    return None if row is None else XComModel.deserialize_value(row)


def name_mapped_instances(dag_run, session) -> None:
    """Give the partner's name to each mapped instance of the run that has none."""
    from airflow.models.taskinstance import TaskInstance as TI
    from sqlalchemy import select

    plan = _returned(dag_run, session, PLAN_TASK)
    partners = plan.get("partners") if isinstance(plan, dict) else None
    if not isinstance(partners, list):
        return
    unnamed = session.scalars(
        select(TI).where(
            TI.dag_id == dag_run.dag_id,
            TI.run_id == dag_run.run_id,
            TI.map_index >= 0,
            TI._rendered_map_index.is_(None),  # the column (the property falls back to "0")
        )
    ).all()
    for ti in unnamed:
        name = partners[ti.map_index] if ti.map_index < len(partners) else None
        if isinstance(name, str) and PARTNER_NAME.match(name):
            ti._rendered_map_index = name
    session.flush()


def write_note(dag_run) -> None:
    """Set the counts as the run note, after any note a person wrote; idempotent."""
    from sqlalchemy.orm import object_session

    if dag_run.dag_id != DAG_ID:
        return
    session = object_session(dag_run)
    if session is None:  # the scheduler passes an attached run; anything else is left alone
        return
    name_mapped_instances(dag_run, session)
    text = note_text(_returned(dag_run, session, SUMMARY_TASK))
    if text is None:
        return
    existing = dag_run.note or ""
    if HEADING in existing:
        existing = existing.split(HEADING)[0].rstrip()
    dag_run.note = f"{existing}\n\n{text}" if existing else text
    session.flush()


class RunNoteListener:
    """Registered by the plugin; runs in the scheduler when a run succeeds or fails."""

    @hookimpl
    def on_dag_run_success(self, dag_run, msg: str) -> None:
        self._safely(dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run, msg: str) -> None:
        self._safely(dag_run)

    @staticmethod
    def _safely(dag_run) -> None:
        try:
            write_note(dag_run)
        except Exception as error:  # never break the scheduler; never pass a message on
            log.warning("ctdc run note not written: %s", type(error).__name__)


run_note_listener = RunNoteListener()
