"""Waiting for deliveries without holding a worker slot: a deferrable operator and its trigger.

`WaitForDeliveries` checks the partners' drops once (deliveries/pull.py `check_arrivals`:
names, sizes, times and manifests only). When every partner with a source has a complete,
new delivery, or the deadline has passed, it ends at once. Otherwise it defers to
`DeliveriesTrigger`, which polls the drops on the triggerer (in a thread: the SFTP and object
store clients are blocking) and wakes the task when all have delivered or at the deadline;
while deferred the task holds no worker slot. Its result, names and states only, tells the
pull whether the deadline passed, and the approval request says so.

The trigger's arguments are stored in the metadata database: paths, a deadline and a poll
interval, never a credential (the drops' connections are resolved where they are used).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

READY = "ready"
WAIT_ENV = "CTDC_WAIT_HOURS"
WAIT_HOURS_HELP = (  # the trigger form's words for its wait_hours param
    "With a sources file: hours to wait for every partner's delivery before running with "
    f"those that delivered. Empty: ${WAIT_ENV}, else 0."
)
POLL_ENV = "CTDC_WAIT_POLL_SECONDS"  # how often the triggerer looks at the drops (default 60)


def all_ready(states: dict[str, str]) -> bool:
    return all(state == READY for state in states.values())


def _check(out: str, sources: str | None) -> dict[str, str]:
    from ctdc_harmonizer.deliveries.pull import check_arrivals

    return check_arrivals(out, sources)


class DeliveriesTrigger(BaseTrigger):
    def __init__(self, out: str, deadline: str, poll_seconds: float, sources: str | None = None):
        super().__init__()
        self.out, self.deadline, self.poll_seconds, self.sources = (
            out,
            deadline,
            poll_seconds,
            sources,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "out": self.out,
                "deadline": self.deadline,
                "poll_seconds": self.poll_seconds,
                "sources": self.sources,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = dt.datetime.fromisoformat(self.deadline)
        while True:
            try:
                states = await asyncio.to_thread(_check, self.out, self.sources)
            except Exception as exc:  # a bad sources file, the warehouse: the task reports it
                yield TriggerEvent({"error": type(exc).__name__})
                return
            passed = dt.datetime.now(dt.UTC) >= deadline
            if all_ready(states) or passed:
                yield TriggerEvent({"states": states, "deadline_passed": not all_ready(states)})
                return
            await asyncio.sleep(self.poll_seconds)


class WaitForDeliveries(BaseOperator):
    """Wait (deferred) until every partner's drop holds a complete new delivery, or until
    `wait_hours` after the run started; returns {states, deadline_passed}."""

    template_fields = ("out", "wait_hours")

    def __init__(
        self,
        *,
        out: str | None = None,
        wait_hours: Any = None,
        poll_seconds: float = 60.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.out, self.wait_hours, self.poll_seconds = out, wait_hours, poll_seconds

    def execute(self, context: Any) -> dict:
        from ctdc_harmonizer.deliveries.sources import sources_path
        from ctdc_harmonizer.paths import default_out
        from ctdc_harmonizer.safety import describe

        if sources_path() is None:  # no sources file: the landing folder is read as it is
            return {"states": {}, "deadline_passed": False}
        out = self.out or default_out()
        try:
            states = _check(out, None)
        except Exception as exc:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(describe(exc, self.task_id)) from None
        import os

        # The trigger form's wait_hours, else the deployment's $CTDC_WAIT_HOURS, else none.
        hours = float(self.wait_hours or os.environ.get(WAIT_ENV) or 0)
        started = context["dag_run"].start_date or dt.datetime.now(dt.UTC)
        deadline = started + dt.timedelta(hours=hours)
        if all_ready(states) or dt.datetime.now(dt.UTC) >= deadline:
            return {"states": states, "deadline_passed": not all_ready(states)}
        self.log.info("waiting for deliveries until %s: %s", deadline.isoformat(), states)
        poll = float(os.environ.get(POLL_ENV) or self.poll_seconds)
        self.defer(
            trigger=DeliveriesTrigger(out, deadline.isoformat(), poll),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict) -> dict:
        if "error" in event:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"{self.task_id}: checking the drops failed ({event['error']})"
            )
        self.log.info(
            "deliveries: %s (deadline passed: %s)", event["states"], event["deadline_passed"]
        )
        return event
