"""The AirflowPlugin: the report app, a "Release report" tab on each run, a nav entry."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ctdc_release_report.app import PREFIX, app


class CtdcReleaseReportPlugin(AirflowPlugin):
    name = "ctdc_release_report"
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
