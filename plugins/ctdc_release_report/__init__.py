"""The release report inside the Airflow UI: a FastAPI app served by Airflow's api-server.

`plugin.py` registers it (entry file: plugins/ctdc_release_report_plugin.py); `app.py` holds the
routes, protected by Airflow's own auth manager; `html.py` renders counts as tables and inline
SVG charts (no script, no CDN).
"""
