"""Alerts: a failed run and a waiting approval e-mail the data team through Airflow's
SmtpNotifier, with value-free text and a link to the run (a local SMTP sink receives them)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from support.smtp_sink import SmtpSink, text_of

RUN_ID = "manual__2026-01-02T03:04:05+00:00"


@pytest.fixture
def sink(monkeypatch):
    with SmtpSink() as server:
        monkeypatch.setenv("AIRFLOW_CONN_CTDC_SMTP", server.connection_json())
        monkeypatch.setenv("CTDC_ALERT_TO", "data-team@example.org")
        monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080")
        yield server


def context(summary: dict | None = None) -> dict:
    run = SimpleNamespace(dag_id="ctdc_annual_update", run_id=RUN_ID)
    ti = SimpleNamespace(xcom_pull=lambda task_ids=None, **_: summary)
    return {"dag_run": run, "ti": ti, "run_id": RUN_ID, "dag": None}


def test_failed_run_alert_names_the_run_with_a_link(sink):
    from ctdc_release_report import alerts

    alerts.run_failed()(context())
    (message,) = sink.messages
    assert message["To"] == "data-team@example.org"
    assert RUN_ID in message["Subject"]
    body = text_of(message)
    link = "http://127.0.0.1:8080/dags/ctdc_annual_update/runs/manual__2026-01-02T03%3A04%3A05%2B00%3A00"
    assert link in body
    assert "failed" in body and "not published" in body


def test_approval_alert_gives_release_and_row_count_only(sink):
    from ctdc_release_report import alerts

    notifier = alerts.approval_waiting()
    notifier(context({"release": "2025", "rows": 1234, "body": "| iom | 7 |"}))
    notifier(context({"release": "2026", "rows": 5, "body": ""}))  # reusable: templates kept
    first, second = sink.messages
    assert "release 2025" in first["Subject"] and "release 2026" in second["Subject"]
    body = text_of(first)
    assert "1234 harmonized rows" in body and "/runs/" in body
    assert "| iom |" not in body  # the counts table stays in the UI, not in mail


def test_an_alert_that_cannot_be_sent_never_fails_the_task(monkeypatch, caplog):
    from ctdc_release_report import alerts

    with SmtpSink() as closed:
        port_json = closed.connection_json()
    monkeypatch.setenv("AIRFLOW_CONN_CTDC_SMTP", port_json)  # nothing listens there now
    alerts.run_failed()(context())
    assert "ctdc alert not sent" in caplog.text


def test_dag_wires_the_alerts(repo_root):
    from airflow.dag_processing.dagbag import DagBag
    from ctdc_release_report.alerts import CtdcAlert

    dag = DagBag(dag_folder=str(repo_root / "dags")).dags["ctdc_annual_update"]
    callbacks = dag.on_failure_callback
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    assert any(isinstance(c, CtdcAlert) for c in callbacks)
    assert any(isinstance(n, CtdcAlert) for n in dag.get_task("approve").notifiers)


def test_without_a_connection_alerts_are_off_quietly(monkeypatch, caplog):
    """No SMTP connection configured: one INFO line, no ERROR, nothing raised."""
    import logging

    from ctdc_release_report import alerts

    monkeypatch.delenv("AIRFLOW_CONN_CTDC_SMTP", raising=False)
    monkeypatch.setenv("CTDC_ALERT_TO", "data-team@example.org")
    with caplog.at_level(logging.DEBUG):
        alerts.run_failed()(context())
        alerts.approval_waiting()(context({"release": "2025", "rows": 3, "body": ""}))
    assert [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == []
    said = [r.getMessage() for r in caplog.records if "alerts are off" in r.getMessage()]
    assert said == ["alerts are off (no connection ctdc_smtp): no e-mail sent"] * 2
