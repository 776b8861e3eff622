"""
### CTDC annual update

Adds what partners delivered to the CTDC store (the warehouse, the system of record) and makes
a release: every partner's current records, harmonized onto the CTDC codebook v3 and
de-identified. The steps are declared once in `ctdc_harmonizer.pipeline.annual_update` (the
command line `ctdc run` runs the same declaration):

0. With a sources file (`$CTDC_SOURCES`, see mappings/README.md "Where deliveries arrive"):
   `wait_for_deliveries` waits, deferred on the triggerer (no worker slot), until every
   partner's drop holds a complete new delivery or `wait_hours` have passed; then
   `pull_deliveries` copies what is complete and new into the private landing folder
   (checksums checked, recorded). The approval request names the partners that did not
   deliver. Without a sources file both do nothing.
1. `plan_release` reads the store and decides, per partner: **delivered** (new files in its
   landing folder, by checksum), **re-harmonized** (its mapping or the codebook changed: its
   history is harmonized again), **carried forward** (nothing to do; no task runs for it).
2. Per partner with work (mapped task group `partner`, instances named by partner):
   `stage_partner` -> `check_staged_contract` -> `harmonize_partner` ->
   `check_codebook_contract` -> `compare_with_store` (new, revised, unchanged, retired).
3. `read_carried_records` (carried partners, from their snapshots) -> `assemble_release` ->
   `write_receipts` (each delivering partner's counts-only receipt in
   `<out>/receipts/<release>/<partner>/`, before approval) -> `send_receipts` (a copy to each
   partner's outbox, with a sources file) -> `build_release_folder` (aside) -> `summarize_release`.
4. **`approve`**: a member of the data team approves (UI: Required actions). Nothing before it
   changes the store or publishes anything; rejecting leaves everything as it was.
5. `commit_release` (one transaction) -> `publish_release_folder` -> `purge_withdrawn_records`
   -> `hand_off_release` (then `clear_pulled_deliveries`) -> `announce_release` emits the
   asset `ctdc://harmonized-release`, which schedules `ctdc_synthesis`. `outcome` says how
   the run ended (when a partner failed: also the other partners' checked counts, for the
   run's Release report tab); the teardown `finish_run` frees the store's lease and deletes the
   intermediates.

Data errors fail their task at once; infrastructure errors (disk, database) retry. XCom holds
paths and counts only. Each run has a *Release report* tab (plugin `ctdc_release_report`).

**Schedule**: 1 January 00:00 UTC, never in the past: unpausing this DAG starts no run (the
next one is next 1 January); a data team member triggers the releases they want.
**One run at a time per out folder, refused rather than queued**: a second run (any release)
while one is running or awaiting approval fails at once in `plan_release`, naming the run that
holds the store's lease, its release and its state. A run shown *queued* waits for a free slot
of `max_active_runs` (3) or of the deployment's parallelism, nothing else.

**Params** (all may be left empty): `release` (empty: RELEASE_RULE), `landing` (`$CTDC_LANDING`,
else `$AIRFLOW_HOME/ctdc/landing`), `out` (`$CTDC_OUT`, else `$AIRFLOW_HOME/ctdc/releases`),
`partners` (read only these partners' deliveries; the others are carried), `work` (where
intermediates live, e.g. `s3://bucket/prefix`; empty: `$CTDC_WORK_URL`, else `<out>/.work`),
`accept_retirements` (partners whose full delivery may retire more of their records than
their mapping allows). Warehouse: `$CTDC_WAREHOUSE_URL`, else `<out>/warehouse.sqlite`.
**Alerts** (e-mail; connection `ctdc_smtp`, recipients `$CTDC_ALERT_TO` or Variable
`ctdc_alert_to`): a failed run, an approval waiting.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable, Param, dag, task
from ctdc_release_report import alerts  # light: Airflow's SmtpNotifier only
from ctdc_release_report.approval import DECISION, ReleaseApproval

from ctdc_harmonizer.deliveries.pull import pull_scheduled_deliveries
from ctdc_harmonizer.deliveries.waiting import WAIT_HOURS_HELP, WaitForDeliveries
from ctdc_harmonizer.paths import DEFAULT_LANDING_RULE, DEFAULT_OUT_RULE, mapped_partners
from ctdc_harmonizer.pipeline.airflow import (
    FAILURE_KEY,
    HEALTHY_PARTNERS_KEY,
    OWNER,
    boundary,
    failures_of,
    kept_partner_reports,
    log_failure,
    pipeline_tasks,
    release_asset,
    release_outcome,
)
from ctdc_harmonizer.pipeline.annual_update import ANNUAL_UPDATE
from ctdc_harmonizer.run.plan import DEFAULT_RELEASE_RULE, plan_scheduled_release

RELEASE = release_asset()
MAPPED = mapped_partners()  # folder names only (cheap at parse time): the form's multi-select


def _text(description: str) -> Param:
    return Param(None, type=["null", "string"], description=description)


def _partners(description: str) -> Param:
    return Param(
        None,
        type=["null", "array"],
        items={"type": "string", "enum": MAPPED},
        examples=MAPPED,
        uniqueItems=True,
        description=description,
    )


@dag(
    doc_md=__doc__.replace("RELEASE_RULE", DEFAULT_RELEASE_RULE),
    # No start_date and run_immediately=False: the first scheduled run is the next 1 January,
    # never the interval that has already passed (no surprise run when first unpaused).
    schedule=CronTriggerTimetable("@yearly", timezone="UTC", run_immediately=False),
    catchup=False,
    # Not 1: a rival run must reach plan_release and be refused there at once (the store's
    # lease), instead of queueing for days behind a run awaiting approval.
    max_active_runs=3,
    tags=["ctdc", "harmonization"],
    # Infrastructure errors only: data errors raise AirflowFailException (pipeline/airflow.py)
    default_args={
        "owner": OWNER,
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "on_failure_callback": log_failure,
    },
    on_failure_callback=alerts.run_failed(),  # e-mail to the data team, link to the run
    params={
        "release": _text(f"Release label. Empty: {DEFAULT_RELEASE_RULE}."),
        "landing": _text(f"Folder of partner subfolders. Empty: {DEFAULT_LANDING_RULE}."),
        "out": _text(f"Folder receiving release folders. Empty: {DEFAULT_OUT_RULE}."),
        "work": _text("Where intermediates live. Empty: $CTDC_WORK_URL, else <out>/.work."),
        "partners": _partners("Read only these partners' deliveries. Empty: every partner."),
        "accept_retirements": _partners(
            "Partners whose full delivery may retire more records than their mapping allows."
        ),
        "wait_hours": Param(None, type=["null", "number"], minimum=0, description=WAIT_HOURS_HELP),
    },
)
def ctdc_annual_update():
    # Deferred on the triggerer while partners are still delivering: no worker slot held.
    wait = WaitForDeliveries(
        task_id="wait_for_deliveries",
        out="{{ params.out or '' }}",
        wait_hours="{{ params.wait_hours or '' }}",
        retries=0,
    )

    @task
    def pull_deliveries(waited: dict, params=None) -> dict:
        return boundary(pull_scheduled_deliveries)(
            params["landing"],
            params["out"],
            deadline_passed=waited["deadline_passed"],
            partners=params["partners"],
        )

    @task
    def plan_release(arrivals: dict, params=None, dag_run=None) -> dict:
        owner = f"{dag_run.dag_id}/{dag_run.run_id}"
        given = {k: v for k, v in params.items() if k != "wait_hours"}
        return boundary(plan_scheduled_release)(
            **given, today=dag_run.run_after, lock_owner=owner, arrivals=arrivals
        )

    approve = ReleaseApproval(  # Reject skips the rest; the decision is kept in XCom
        task_id="approve",
        subject="{{ ti.xcom_pull(task_ids='summarize_release')['subject'] }}",
        body="{{ ti.xcom_pull(task_ids='summarize_release')['body'] }}",
        response_timeout=timedelta(days=7),  # then it fails: no answer is no approval
        notifiers=[alerts.approval_waiting()],
        retries=0,
    )
    planned = plan_release(pull_deliveries(wait.output))
    steps = pipeline_tasks(ANNUAL_UPDATE, planned, gate=approve)

    # The asset event's extra is the synthesis DAG's contract: release, rows, handoff, sha256.
    @task(outlets=[RELEASE])
    def announce_release(handed: dict, published: dict, outlet_events=None) -> dict:
        extra = {**handed, "report": published["release_dir"]}
        outlet_events[RELEASE].extra = extra
        return extra

    @task(trigger_rule="all_done", retries=0)
    def outcome(ti=None, dag=None) -> str:
        summary, handed = (
            ti.xcom_pull(task_ids=t) for t in ("summarize_release", "announce_release")
        )
        # The approval's recorded answer, asked only when unpublished (None: timed out).
        decision = None if handed else ti.xcom_pull(task_ids="approve", key=DECISION)
        # Failed steps' value-free records (every task, every partner's instance)
        failed = [] if handed else failures_of(ti.xcom_pull(task_ids=dag.task_ids, key=FAILURE_KEY))
        healthy = None
        if failed and not summary:  # kept before the teardown deletes the work folder
            chains = ti.xcom_pull(task_ids=f"partner.{ANNUAL_UPDATE.chain[-1].name}")
            healthy = kept_partner_reports(ti.xcom_pull(task_ids="plan_release"), chains)
            if healthy:
                ti.xcom_push(key=HEALTHY_PARTNERS_KEY, value=healthy)
        names = [p["partner"] for p in healthy["partners"]] if healthy else None
        return boundary(release_outcome)(summary, handed, decision, failed, names)

    announced = announce_release(steps["hand_off_release"], steps["publish_release_folder"])
    chains = steps[ANNUAL_UPDATE.chain[-1].name]  # a failed partner must not end healthy ones
    [announced, steps["clear_pulled_deliveries"], chains] >> outcome() >> steps["finish_run"]


ctdc_annual_update()
