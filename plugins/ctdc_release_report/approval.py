"""The approval step of the annual update: Airflow's ApprovalOperator that also records the
decision (option and who chose it) in XCom before a rejection skips `publish`, and marks the
store's lease "awaiting approval" while it waits.

ApprovalOperator skips its downstream tasks by raising, so it pushes no return value on
"Reject": the run's `outcome` task reads this record to say who rejected the release. A rival
run refused by the lease reads the mark ("release 2026 is awaiting approval in run ...").
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

log = logging.getLogger(__name__)
DECISION = "decision"
PLAN_TASK = "plan_release"


def mark_lease(context, state: str) -> None:
    """Record the run's lease state; never fails the approval (a lease not marked only makes
    a rival's refusal less precise)."""
    try:
        from ctdc_harmonizer.run import locks

        plan = context["ti"].xcom_pull(task_ids=PLAN_TASK) or {}
        if plan.get("lock"):
            locks.mark(locks.LockInfo.model_validate(plan["lock"]), state)
    except Exception as error:  # noqa: BLE001
        log.warning("store lease state not recorded: %s", type(error).__name__)


class ReleaseApproval(ApprovalOperator):
    def execute(self, context) -> Any:
        from ctdc_harmonizer.run.locks import AWAITING_APPROVAL

        mark_lease(context, AWAITING_APPROVAL)
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        from ctdc_harmonizer.run.locks import RUNNING

        mark_lease(context, RUNNING)
        if "error" not in event:
            user = event.get("responded_by_user") or {}
            decision = {"chosen": list(event["chosen_options"]), "by": user.get("name")}
            context["ti"].xcom_push(key=DECISION, value=decision)
        return super().execute_complete(context=context, event=event)
