"""E-mail alerts to the data team (Airflow's SmtpNotifier), with value-free text and a run link.

Connection `ctdc_smtp` (e.g. AIRFLOW_CONN_CTDC_SMTP); recipients from $CTDC_ALERT_TO, else the
Airflow Variable `ctdc_alert_to`, else ctdc-data-team@localhost. The text names the DAG, the run
and the release label only: never an exception message (a library's may quote data). An alert that
cannot be sent is logged by exception type and never fails the task it reports on. Without the
connection, alerts are off: one INFO line says so (no ERROR: nothing is wrong).
"""

from __future__ import annotations

import copy
import logging
import os
from urllib.parse import quote

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

log = logging.getLogger(__name__)
CONN_ID = "ctdc_smtp"
TO = "{{ ctdc_alert_to }}"
DEFAULT_TO = "ctdc-data-team@localhost"
FROM = "ctdc-airflow@localhost"


def recipients() -> str:
    value = os.environ.get("CTDC_ALERT_TO")
    if not value:
        try:
            from airflow.sdk import Variable

            value = Variable.get("ctdc_alert_to", default=None)
        except Exception:  # noqa: BLE001 (no Variable store reachable: the default)
            value = None
    return value or DEFAULT_TO


def alerts_on() -> bool:
    """Whether the connection `ctdc_smtp` exists (a deployment without it sends no alert)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(CONN_ID)
    except AirflowNotFoundException:
        return False
    return True


def run_link(context) -> str:
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")
    run = context["dag_run"]
    return f"{base}/dags/{quote(run.dag_id)}/runs/{quote(run.run_id, safe='')}"


class CtdcAlert(SmtpNotifier):
    """SmtpNotifier that adds `ctdc_run_link` to the template context and never raises."""

    def __call__(self, *args) -> None:
        context = args[0] if len(args) == 1 else None
        if context is None or "dag_run" not in context:
            log.warning("ctdc alert skipped: no run in the callback context")
            return
        fresh = copy.copy(self)  # rendering replaces the templates: keep this one reusable
        try:
            if not alerts_on():
                # Before SmtpNotifier: its base class logs a missing connection as an ERROR.
                log.info("alerts are off (no connection %s): no e-mail sent", CONN_ID)
                return
            context["ctdc_run_link"] = run_link(context)
            context["ctdc_alert_to"] = recipients()
            SmtpNotifier.__call__(fresh, context)
        except Exception as error:  # noqa: BLE001 (an alert never fails the run it reports)
            log.warning("ctdc alert not sent: %s", type(error).__name__)


def _alert(subject: str, lines: list[str]) -> CtdcAlert:
    body = "".join(f"<p>{line}</p>" for line in lines)
    return CtdcAlert(
        to=TO, from_email=FROM, smtp_conn_id=CONN_ID, subject=subject, html_content=body
    )


def run_failed() -> CtdcAlert:
    return _alert(
        "[CTDC] run failed: {{ dag_run.dag_id }} {{ dag_run.run_id }}",
        [
            "The run {{ dag_run.run_id }} of {{ dag_run.dag_id }} failed.",
            "Its release was not published. Open the run to see which task failed and why "
            "(the task log locates the problem by partner, file, column and row):",
            '<a href="{{ ctdc_run_link }}">{{ ctdc_run_link }}</a>',
        ],
    )


SUMMARY = "ti.xcom_pull(task_ids='summarize_release')"


def approval_waiting() -> CtdcAlert:
    return _alert(
        "[CTDC] approval waiting: release {{ " + SUMMARY + "['release'] }}",
        [
            "Release {{ " + SUMMARY + "['release'] }} "
            "({{ " + SUMMARY + "['rows'] }} harmonized rows) waits for a data team member to "
            "approve or reject: approving commits it to the store, publishes it and hands it "
            "to synthesis.",
            "Review the release report and decide under Required actions:",
            '<a href="{{ ctdc_run_link }}">{{ ctdc_run_link }}</a>',
        ],
    )
