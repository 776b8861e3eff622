"""The approval step of the annual update: Airflow's ApprovalOperator that also records the
decision (option and who chose it) in XCom before a rejection skips `publish`.

ApprovalOperator skips its downstream tasks by raising, so it pushes no return value on
"Reject": the run's `outcome` task reads this record to say who rejected the release.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

DECISION = "decision"


class ReleaseApproval(ApprovalOperator):
    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        if "error" not in event:
            user = event.get("responded_by_user") or {}
            decision = {"chosen": list(event["chosen_options"]), "by": user.get("name")}
            context["ti"].xcom_push(key=DECISION, value=decision)
        return super().execute_complete(context=context, event=event)
