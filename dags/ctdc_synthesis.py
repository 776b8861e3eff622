"""
### CTDC synthesis

Turns a handed-off harmonized release into the public differentially private dataset. Runs when
the annual update emits the asset `ctdc://harmonized-release` and reads **the release that asset
event names** (its extra: release, rows, handoff, manifest SHA-256), never "the newest folder";
or on a manual trigger with a `release` label.

The steps are declared once in `ctdc_harmonizer.pipeline.synthesis` (`ctdc synthesize` runs the
same declaration): `plan_synthesis` -> `verify_handoff` -> `account_people` (each person's
privacy loss across releases against the lifetime cap per person: refused, or the people over
it left out and counted) -> `disclosure_risk` -> `suppress` ->
`fit_aggregates` (pac-synth's DP mechanism, by default computed with numpy, docs/privacy.md
section 10; recorded in the privacy-budget ledger; reused, spending nothing,
when the data and parameters are unchanged) -> `sample` -> `evaluate` -> `publish`
(`<out>/public/<release>/`). Restricted outputs in `<out>/restricted/<release>/`. XCom holds
paths and counts. Data errors fail at once; infrastructure errors retry.

**Params** (empty = default): `release` (manual runs; asset runs take it from the event),
`handoff` (default `<out>/handoff/<release>`), `out` (`$CTDC_OUT`, else
`$AIRFLOW_HOME/ctdc/releases`), `epsilon`, `delta`, `reporting_length`, `seed` (default:
schemas/synthesis_v1.yaml).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from ctdc_harmonizer.pipeline.airflow import (
    OWNER,
    boundary,
    log_failure,
    pipeline_tasks,
    release_asset,
)
from ctdc_harmonizer.pipeline.synthesis import SYNTHESIS
from ctdc_harmonizer.synthesis.plan import event_release, plan_synthesis

RELEASE = release_asset()


def _nullable(kind: str, description: str) -> Param:
    return Param(None, type=["null", kind], description=description)


@dag(
    doc_md=__doc__,
    schedule=[RELEASE],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ctdc", "synthesis"],
    default_args={
        "owner": OWNER,
        "retries": 1,
        "retry_delay": timedelta(minutes=2),
        "on_failure_callback": log_failure,
    },
    params={
        "release": _nullable("string", "Release label (asset runs: from the event)"),
        "handoff": _nullable("string", "Hand-off folder (default <out>/handoff/<release>)"),
        "out": _nullable("string", "Folder holding the releases"),
        "epsilon": _nullable("number", "DP epsilon (default: synthesis config)"),
        "delta": _nullable("number", "DP delta (default: synthesis config)"),
        "reporting_length": _nullable("integer", "Longest released combination"),
        "seed": _nullable("integer", "Sampler seed"),
    },
)
def ctdc_synthesis():
    @task(task_id="plan_synthesis")
    def plan_from_trigger(params=None, triggering_asset_events=None) -> dict:
        events = triggering_asset_events or {}
        extras = [e.extra for e in events[RELEASE]] if RELEASE in events else []
        event = boundary(event_release)(extras)
        return boundary(plan_synthesis)(**params, event=event)

    pipeline_tasks(SYNTHESIS, plan_from_trigger())


ctdc_synthesis()
