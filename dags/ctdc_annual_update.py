"""
### CTDC annual update

Harmonizes each mapped partner's extract onto the CTDC codebook v3 (de-identified), writes the
release folder, loads the warehouse, then writes the hand-off folder `<out>/<release>/handoff/`
(table + manifest) and emits the asset `ctdc://harmonized-release` with extra = release, rows,
handoff path and manifest SHA-256 (the `ctdc_synthesis` DAG is scheduled on it). Each task is
one call into `ctdc_harmonizer.pipeline`; frames stay on disk in `<out>/.work/<release>/`
(owner-only), XCom holds only paths and counts. Rerun from `plan`.
`load_warehouse` publishes the staged release with the load; `plan` leases the release for this
run, the teardown `cleanup` frees it and deletes the work folder. Data errors fail at once.

**Params** (empty = default): `release` (the year before the run date: the 1 January run makes
the previous year's release), `landing` (`$CTDC_LANDING`, else `$AIRFLOW_HOME/ctdc/landing`),
`out` (`$CTDC_OUT`, else `$AIRFLOW_HOME/ctdc/releases`), `partners` (every mapped partner that
delivered a folder). Warehouse: `$CTDC_WAREHOUSE_URL`, else `<out>/warehouse.sqlite`.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task, task_group

HARMONIZED_RELEASE = Asset(name="ctdc_harmonized_release", uri="ctdc://harmonized-release")
# Infrastructure errors only: data errors raise AirflowFailException (safety.airflow_boundary)
RETRY = {"retries": 1, "retry_delay": timedelta(minutes=5)}


def _pipeline():
    from ctdc_harmonizer.safety import airflow_steps  # at run time only: parsing stays light

    return airflow_steps()


def _log_failure(context) -> None:
    """Task id, run id and exception class: never the message."""
    ti, error = context["ti"], type(context.get("exception")).__name__
    logging.getLogger("ctdc.airflow").error("%s failed in %s: %s", ti.task_id, ti.run_id, error)


@dag(
    doc_md=__doc__,
    schedule="@yearly",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ctdc", "harmonization"],
    default_args={**RETRY, "on_failure_callback": _log_failure},
    params={
        "release": Param("", type="string", description="Release label (empty: year before run)"),
        "landing": Param("", type="string", description="Landing folder (partner subfolders)"),
        "out": Param("", type="string", description="Folder receiving release folders"),
        "partners": Param([], type="array", items={"type": "string"}, description="Empty: all"),
    },
)
def ctdc_annual_update():
    @task
    def plan(params=None, logical_date=None, dag_run=None) -> dict:
        run_date = logical_date or dag_run.run_after
        owner = f"{dag_run.dag_id}/{dag_run.run_id}"
        return _pipeline().plan_scheduled_run(**params, run_date=run_date, lock_owner=owner)

    @task
    def partners(plan: dict) -> list[str]:  # Airflow maps only over a whole return value
        return plan["partners"]

    @task
    def read(plan: dict, partner: str) -> dict:
        return _pipeline().stage_partner(plan, partner)

    @task
    def validate_contract(plan: dict, staged: dict) -> dict:
        return _pipeline().check_contract(plan, staged["partner"])

    @task(task_id="map")
    def map_to_codebook(plan: dict, checked: dict) -> dict:
        return _pipeline().map_to_codebook(plan, checked["partner"])

    @task
    def validate_codebook(plan: dict, mapped: dict) -> dict:
        return _pipeline().check_codebook(plan, mapped["partner"])

    @task_group(group_id="partner")
    def partner_chain(plan: dict, partner: str):
        checked = validate_contract(plan, read(plan, partner))
        validate_codebook(plan, map_to_codebook(plan, checked))

    @task
    def combine(plan: dict) -> dict:
        return _pipeline().combine(plan)

    @task
    def write_release(plan: dict) -> dict:
        return _pipeline().write_release(plan)

    @task
    def load_warehouse(plan: dict, written: dict) -> dict:
        return _pipeline().load_warehouse(plan, os.environ.get("CTDC_WAREHOUSE_URL") or None)

    # The asset event's extra is the synthesis DAG's contract: release, rows, handoff, sha256.
    @task(outlets=[HARMONIZED_RELEASE])
    def hand_off(plan: dict, outlet_events=None) -> dict:
        info = _pipeline().hand_off(plan)
        outlet_events[HARMONIZED_RELEASE].extra = info
        return info

    @task
    def cleanup(plan: dict) -> dict:
        return _pipeline().finish_run(plan)

    planned = plan()
    chains = partner_chain.partial(plan=planned).expand(partner=partners(planned))
    written = write_release(planned)
    chains >> combine(planned) >> written
    handed = hand_off(planned)
    load_warehouse(planned, written) >> handed >> cleanup(planned).as_teardown(setups=planned)


ctdc_annual_update()
