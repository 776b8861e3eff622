"""The AirflowPlugin: the report app, a "Release report" tab on each run, a nav entry."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ctdc_release_report.app import PREFIX, app
from ctdc_release_report.run_note import run_note_listener


class CtdcReleaseReportPlugin(AirflowPlugin):
    name = "ctdc_release_report"
    listeners = [run_note_listener]  # writes the per-partner counts into the run note
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "CTDC release report"}]
    external_views = [
        {
            "name": "Release report",
            "href": f"{PREFIX.lstrip('/')}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "release-report",
        },
        {
            "name": "CTDC releases",
            "href": f"{PREFIX.lstrip('/')}/releases",
            "destination": "nav",
            "url_route": "ctdc-releases",
            "category": "browse",
        },
    ]
