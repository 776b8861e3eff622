"""
### CTDC synthesis

Turns a handed-off harmonized release into the public differentially private dataset. Runs when
the annual update emits the asset `ctdc://harmonized-release` and reads **the release that asset
event names** (its extra: release, rows, handoff, manifest SHA-256), never "the newest folder";
or on a manual trigger with a `release` label.

verify hand-off -> disclosure-risk report -> suppress -> fit DP aggregates (pac-synth; recorded
in the privacy-budget ledger; reused, spending nothing, when the data and parameters are
unchanged) -> sample -> evaluate -> publish (`<out>/public/<release>/`). Restricted outputs in
`<out>/restricted/<release>/`. Each task is one call into `ctdc_harmonizer.synthesis.steps`;
XCom holds paths and counts. Data errors fail at once (no retry).

**Params** (empty = default): `release` (manual runs; asset runs take it from the event),
`handoff` (default `<out>/<release>/handoff`), `out` (`$CTDC_OUT`, else
`$AIRFLOW_HOME/ctdc/releases`), `epsilon`, `delta`, `reporting_length`, `seed` (default:
schemas/synthesis_v1.yaml).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task

HARMONIZED_RELEASE = Asset(name="ctdc_harmonized_release", uri="ctdc://harmonized-release")


def _step(name: str, *args, **kwargs) -> dict:
    """Call a package step through the Airflow boundary: typed inputs, value-free errors, data
    errors fail without retry (ctdc_harmonizer.run.airflow)."""
    from ctdc_harmonizer.run.airflow import synthesis_steps  # at run time: parsing stays light

    return getattr(synthesis_steps(), name)(*args, **kwargs)


def _log_failure(context) -> None:
    """Task id, run id and exception class: never the message."""
    ti, error = context["ti"], type(context.get("exception")).__name__
    logging.getLogger("ctdc.airflow").error("%s failed in %s: %s", ti.task_id, ti.run_id, error)


def _nullable(kind: str, description: str) -> Param:
    return Param(None, type=["null", kind], description=description)


@dag(
    doc_md=__doc__,
    schedule=[HARMONIZED_RELEASE],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ctdc", "synthesis"],
    default_args={
        "retries": 1,
        "retry_delay": timedelta(minutes=2),
        "on_failure_callback": _log_failure,
    },
    params={
        "release": _nullable("string", "Release label (asset runs: from the event)"),
        "handoff": _nullable("string", "Hand-off folder (default <out>/<release>/handoff)"),
        "out": _nullable("string", "Folder holding the releases"),
        "epsilon": _nullable("number", "DP epsilon (default: synthesis config)"),
        "delta": _nullable("number", "DP delta (default: synthesis config)"),
        "reporting_length": _nullable("integer", "Longest released combination"),
        "seed": _nullable("integer", "Sampler seed"),
    },
)
def ctdc_synthesis():
    @task
    def plan(params=None, triggering_asset_events=None) -> dict:
        events = triggering_asset_events or {}
        extras = (
            [e.extra for e in events[HARMONIZED_RELEASE]] if HARMONIZED_RELEASE in events else []
        )
        event = _step("event_release", extras)
        return _step("plan_synthesis", **params, event=event)

    @task
    def verify_handoff(plan: dict) -> dict:
        return _step("verify", plan)

    @task
    def disclosure_risk(plan: dict) -> dict:
        return _step("disclosure_risk", plan)

    @task
    def suppress(plan: dict) -> dict:
        return _step("suppress", plan)

    @task
    def fit_aggregates(plan: dict) -> dict:
        return _step("fit_aggregates", plan)

    @task
    def sample(plan: dict) -> dict:
        return _step("sample", plan)

    @task
    def evaluate(plan: dict) -> dict:
        return _step("evaluate", plan)

    @task
    def publish(plan: dict) -> dict:
        return _step("publish", plan)

    planned = plan()
    chain = [verify_handoff, disclosure_risk, suppress, fit_aggregates, sample, evaluate, publish]
    previous = None
    for step in chain:
        current = step(planned)
        if previous is not None:
            previous >> current
        previous = current


ctdc_synthesis()
