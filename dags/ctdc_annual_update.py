"""
### CTDC annual update

Harmonizes each mapped partner's extract onto the CTDC codebook v3 (de-identified), writes the
release folder, loads the warehouse, writes the hand-off folder `<out>/<release>/handoff/` (table +
manifest) and, once the data team approves, emits the asset `ctdc://harmonized-release` with extra
= release, rows, report, handoff path and manifest SHA-256 (the `ctdc_synthesis` DAG is scheduled
on it). Each run has a *Release report* tab (plugin `ctdc_release_report`). Each task is one call
into the package; frames stay in `<out>/.work/<release>/` (owner-only) or on shared storage
(`work`), XCom holds only paths and counts. Rerun from `plan`. `load_warehouse` publishes the
staged release folder with the load; `plan` leases the release for this run, the teardown
`cleanup` frees it and deletes the intermediates. Data errors fail at once; infrastructure
errors retry.

**Params** (all may be left empty in the trigger form): `release` (empty: the year before the run
date, so the 1 January run makes the previous year's release), `landing` (`$CTDC_LANDING`, else
`$AIRFLOW_HOME/ctdc/landing`), `out` (`$CTDC_OUT`, else `$AIRFLOW_HOME/ctdc/releases`), `partners`
(every mapped partner that delivered a folder), `work` (where intermediates live: an fsspec URL
such as `s3://bucket/prefix` that every worker reaches, without credentials; empty:
`$CTDC_WORK_URL`, else `<out>/.work`). With nothing delivered the run stops at `partners` and
succeeds, skipping the rest ("nothing delivered" in the `plan` log). Warehouse:
`$CTDC_WAREHOUSE_URL`, else `<out>/warehouse.sqlite`.

**Approval**: after the warehouse load, `approve` waits for a member of the data team (UI: Required
actions, or the REST API) with the headline counts; only `publish` emits the asset. A rejection or
no answer within 7 days leaves the release unpublished and `outcome` fails saying which.
**Alerts** (e-mail; connection `ctdc_smtp`, recipients `$CTDC_ALERT_TO` or Variable
`ctdc_alert_to`): a failed run, an approval waiting.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Asset, Param, dag, task, task_group
from ctdc_release_report import alerts  # light: Airflow's SmtpNotifier only
from ctdc_release_report.approval import DECISION, ReleaseApproval

HARMONIZED_RELEASE = Asset(name="ctdc_harmonized_release", uri="ctdc://harmonized-release")
# Infrastructure errors only: data errors raise AirflowFailException (ctdc_harmonizer.run.airflow)
RETRY = {"retries": 1, "retry_delay": timedelta(minutes=5)}
# Partner folder names only (cheap at parse time): the trigger form's multi-select.
MAPPINGS = Path(os.environ.get("CTDC_MAPPINGS_DIR") or Path(__file__).parents[1] / "mappings")
MAPPED = sorted(p.parent.name for p in MAPPINGS.glob("*/partner.yaml"))
BY_PARTNER = {"map_index_template": "{{ task.op_kwargs['partner'] }}"}  # not 0..n in the UI


def _text(description: str) -> Param:
    return Param(None, type=["null", "string"], description=description)


def _pipeline():
    from ctdc_harmonizer.run.airflow import annual_update_steps  # at run time: parsing stays light

    return annual_update_steps()


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
    on_failure_callback=alerts.run_failed(),  # e-mail to the data team, link to the run
    params={
        "release": _text("Release label. Empty: the year before the run date."),
        "landing": _text("Folder of partner subfolders. Empty: $CTDC_LANDING or the default."),
        "out": _text("Folder receiving release folders. Empty: $CTDC_OUT or the default."),
        "work": _text("Where intermediates live. Empty: $CTDC_WORK_URL, else <out>/.work."),
        "partners": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "enum": MAPPED},
            examples=MAPPED,
            uniqueItems=True,
            description="Partners to include. Empty: every mapped partner that delivered.",
        ),
    },
)
def ctdc_annual_update():
    @task
    def plan(params=None, logical_date=None, dag_run=None) -> dict:
        run_date = logical_date or dag_run.run_after
        owner = f"{dag_run.dag_id}/{dag_run.run_id}"
        return _pipeline().plan_scheduled_run(**params, run_date=run_date, lock_owner=owner)

    @task.short_circuit(ignore_downstream_trigger_rules=True)
    def partners(plan: dict) -> list[str]:  # empty: nothing delivered, the rest is skipped
        return plan["partners"]

    @task(**BY_PARTNER)
    def read(plan: dict, partner: str) -> dict:
        return _pipeline().stage_partner(plan, partner)

    @task(**BY_PARTNER)
    def validate_contract(plan: dict, partner: str) -> dict:
        return _pipeline().check_contract(plan, partner)

    @task(task_id="map", **BY_PARTNER)
    def map_to_codebook(plan: dict, partner: str) -> dict:
        return _pipeline().map_to_codebook(plan, partner)

    @task(**BY_PARTNER)
    def validate_codebook(plan: dict, partner: str) -> dict:
        return _pipeline().check_codebook(plan, partner)

    @task_group(group_id="partner")
    def partner_chain(plan: dict, partner: str):
        steps = (read, validate_contract, map_to_codebook, validate_codebook)
        chain_of = [step(plan=plan, partner=partner) for step in steps]
        chain_of[0] >> chain_of[1] >> chain_of[2] >> chain_of[3]

    @task
    def combine(plan: dict) -> dict:
        return _pipeline().combine(plan)

    @task
    def write_release(plan: dict) -> dict:
        return _pipeline().write_release(plan)

    @task
    def load_warehouse(plan: dict) -> dict:
        return _pipeline().load_warehouse(plan, os.environ.get("CTDC_WAREHOUSE_URL") or None)

    @task
    def hand_off(plan: dict) -> dict:
        return _pipeline().hand_off(plan)

    @task
    def summarize(written: dict) -> dict:
        return _pipeline().headline(written["release_dir"])

    approve = ReleaseApproval(  # Reject skips publish; the decision is kept in XCom
        task_id="approve",
        subject="Hand release {{ ti.xcom_pull(task_ids='summarize')['release'] }} to synthesis?",
        body="{{ ti.xcom_pull(task_ids='summarize')['body'] }}",
        response_timeout=timedelta(days=7),  # then it fails: no answer is no approval
        notifiers=[alerts.approval_waiting()],
        retries=0,
    )

    # The asset event's extra is the synthesis DAG's contract: release, rows, handoff, sha256.
    @task(outlets=[HARMONIZED_RELEASE])
    def publish(summary: dict, handed: dict, outlet_events=None) -> dict:
        extra = {**handed, "report": summary["report"]}
        outlet_events[HARMONIZED_RELEASE].extra = extra
        return extra

    @task(trigger_rule="all_done", retries=0)
    def outcome(ti=None) -> str:
        summary, published = (ti.xcom_pull(task_ids=t) for t in ("summarize", "publish"))
        # The approval's recorded answer, asked only when unpublished (None: timed out).
        decision = None if published else ti.xcom_pull(task_ids="approve", key=DECISION)
        return _pipeline().release_outcome(summary, published, decision)

    @task
    def cleanup(plan: dict) -> dict:
        return _pipeline().finish_run(plan)

    planned = plan()
    chains = partner_chain.partial(plan=planned).expand(partner=partners(planned))
    written = write_release(planned)
    chains >> combine(planned) >> written
    handed = hand_off(planned)
    summary = summarize(written)
    written >> load_warehouse(planned) >> handed >> summary >> approve
    approve >> publish(summary, handed) >> outcome() >> cleanup(planned).as_teardown(setups=planned)


ctdc_annual_update()
