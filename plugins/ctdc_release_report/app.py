"""Routes of the release report. Every route needs an Airflow user allowed to read the DAG's runs.

A run's release folder is found through what the run itself recorded (the XCom of its
`summarize_release` task: the folder built aside, before approval; of its
`publish_release_folder` task once published), never through a path taken from the request.

The run tab (`/runs/<dag>/<run>`) is one external view for every DAG (Airflow registers a
`dag_run` tab for all DAGs alike): it shows the annual update's release report, the synthesis
run's page, and for any other DAG a short note. The synthesis page shows the comparability
of the synthetic data in its public view to every reader, and in its restricted view (against
the sensitive data: synthesis/views.py) only to users who may answer the annual update's
release approval, the data team; the auth manager decides who that is. A run without a
report (failed early, still running) gets a page saying which step failed, for which partner,
why and what to do. Pages are HTML only; the JSON routes live under /api/.
"""

from __future__ import annotations

import json
from pathlib import Path

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from ctdc_release_report import html
from ctdc_release_report.approval import DECISION
from ctdc_release_report.status import run_status

PREFIX = "/ctdc-report"
DAG_ID = "ctdc_annual_update"
SYNTHESIS_DAG_ID = "ctdc_synthesis"
SUMMARY_TASK = "summarize_release"
PUBLISH_TASK = "publish_release_folder"
APPROVE_TASK = "approve"
GATE_TASKS = (APPROVE_TASK, "announce_release")
# What a run's row reads from XCom, read in one query per run (task -> key): its summary, its
# publication and the approval's recorded answer.
RUN_XCOMS = {SUMMARY_TASK: "return_value", PUBLISH_TASK: "return_value", APPROVE_TASK: DECISION}

app = FastAPI(title="CTDC release report", docs_url=None, redoc_url=None, openapi_url=None)
can_read_runs = Depends(requires_access_dag("GET", DagAccessEntity.RUN))
can_read_dag_runs = Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID))
# Who sees the restricted view: who may answer the release approval (the data team).
_may_approve = requires_access_dag("PUT", DagAccessEntity.HITL_DETAIL, param_dag_id=DAG_ID)


def sees_restricted(request: Request, user: GetUserDep) -> bool:
    """Whether the signed-in user may see restricted figures (a yes or no, never a refusal:
    the page is shown either way)."""
    try:
        _may_approve(request, user)
    except HTTPException:
        return False
    return True


def _runs(run_id: str | None = None) -> list[dict]:
    """Runs of the DAG with their summary (XCom of `summarize`) and approval states."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    runs = select(DagRun.run_id, DagRun.state, DagRun.run_after).where(DagRun.dag_id == DAG_ID)
    if run_id is not None:
        runs = runs.where(DagRun.run_id == run_id)
    found = []
    with create_session() as session:
        for rid, state, run_after in session.execute(runs.order_by(DagRun.run_after)):
            xcoms = {
                x.task_id: XComModel.deserialize_value(x)
                for x in session.scalars(
                    select(XComModel).where(
                        XComModel.dag_id == DAG_ID,
                        XComModel.run_id == rid,
                        XComModel.task_id.in_(RUN_XCOMS),
                        XComModel.key.in_(set(RUN_XCOMS.values())),
                    )
                )
                if x.key == RUN_XCOMS[x.task_id]
            }
            published = xcoms.get(PUBLISH_TASK)
            gates = dict(
                session.execute(
                    select(TaskInstance.task_id, TaskInstance.state).where(
                        TaskInstance.dag_id == DAG_ID,
                        TaskInstance.run_id == rid,
                        TaskInstance.task_id.in_(GATE_TASKS),
                    )
                ).all()
            )
            found.append(
                {
                    "run_id": rid,
                    "state": str(getattr(state, "value", state)),
                    "run_after": run_after.isoformat() if run_after else None,
                    "summary": xcoms.get(SUMMARY_TASK),
                    "published_dir": published["release_dir"] if published else None,
                    "approval": str(gates.get(APPROVE_TASK) or "not reached"),
                    # The answer and who gave it (a data team member's Airflow user name).
                    "decision": xcoms.get(APPROVE_TASK),
                    "published": str(gates.get("announce_release")) == "success",
                }
            )
    return found


def _report(dag_id: str, run_id: str) -> dict:
    from ctdc_harmonizer.release import report

    if dag_id != DAG_ID:
        raise HTTPException(404, f"no release report for DAG {dag_id}")
    runs = _runs(run_id)
    if not runs or not runs[0]["summary"]:
        raise HTTPException(404, "this run has not written a release (yet)")
    run = runs[0]
    release_dir, out = _release_folder(run)
    if release_dir is None:
        raise HTTPException(404, "the release folder of this run no longer exists")
    previous = report.previous_release(out, run["summary"]["release"])
    built = report.build(release_dir, out / previous if previous else None)
    return built | {"run": {k: v for k, v in run.items() if k not in ("summary", "published_dir")}}


def _release_folder(run: dict) -> tuple[Path | None, Path]:
    """The folder this run's report is read from, and the out folder holding the releases:
    the published folder once published, else the folder built aside (until the run ends)."""
    if run["published_dir"] and Path(run["published_dir"]).is_dir():
        published = Path(run["published_dir"])
        return published, published.parent
    staged = Path(run["summary"]["report"])  # <out>/.work/<release>/release
    return (staged if staged.is_dir() else None), staged.parents[2]


def _history() -> list[dict]:
    """Every run, newest first, with its release (from the summary, else the plan) and, for
    a failed run, its reason (`outcome`'s value-free text, else the first failed step's)."""
    rows = []
    for run in reversed(_runs()):
        summary = run["summary"] or {}
        status = run_status(DAG_ID, run["run_id"]) or {}
        failures = status.get("failures") or []
        reason = status.get("outcome") or (failures[0]["message"] if failures else None)
        rows.append(
            {
                "run_id": run["run_id"],
                "run_after": run["run_after"],
                "state": run["state"],
                "reason": reason if run["state"] == "failed" else None,
                "release": summary.get("release") or status.get("release"),
                "rows": summary.get("rows"),
                "partners": summary.get("partners", {}),
                "approval": run["approval"],
                "decision": run["decision"],
                "published": run["published"],
            }
        )
    return rows


def _xcoms(dag_id: str, run_id: str, tasks: tuple[str, ...]) -> dict[str, object]:
    """The return values of `tasks` in a run (paths and counts only)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id.in_(tasks),
                XComModel.key == "return_value",
                XComModel.map_index == -1,
            )
        ).all()
        return {x.task_id: XComModel.deserialize_value(x) for x in rows}


def _ledger_totals(plan: dict) -> dict:
    """The ledger's totals for the plan's release, read from the warehouse the run used."""
    try:
        from ctdc_harmonizer.synthesis.ledger import Ledger
        from ctdc_harmonizer.synthesis.plan import SynthesisPlan

        book = Ledger(SynthesisPlan.model_validate(plan).warehouse())
        try:
            epsilon, delta = book.spent(plan["release"])
            return {"epsilon": epsilon, "delta": delta, "fits": len(book.attempts(plan["release"]))}
        finally:
            book.dispose()
    except Exception as error:  # noqa: BLE001 (the page says so; never a message)
        return {"error": type(error).__name__}


def _synthesis(run_id: str, restricted: bool = False) -> dict:
    """The synthesis run's figures: its steps' XCom, the ledger's totals for the release, the
    public files and the public comparability; with `restricted`, the restricted view too
    (read only then). The folders are the ones the run's own XCom names."""
    status = run_status(SYNTHESIS_DAG_ID, run_id)
    if status is None:
        raise HTTPException(404, "no such run")
    from ctdc_harmonizer.pipeline.synthesis import (
        COMPARABILITY,
        RISK_REPORT,
        SUPPRESSION_REPORT,
        SYNTHESIS,
    )
    from ctdc_harmonizer.synthesis import views

    # the DAG's tasks are the declaration's steps, by name
    results = _xcoms(SYNTHESIS_DAG_ID, run_id, tuple(s.name for s in SYNTHESIS.ordered()))
    plan = results.get("plan_synthesis") or {}
    ledger = _ledger_totals(plan) if plan.get("release") else {}
    public = (results.get("publish") or {}).get("public_dir")
    folder = Path(public) if public and Path(public).is_dir() else None
    files = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder else []
    public_view = None
    if folder and (folder / COMPARABILITY).is_file():
        public_view = views.public_view(json.loads((folder / COMPARABILITY).read_text("utf-8")))
    restricted_view = None
    if restricted and plan.get("restricted_dir"):
        restricted_view = views.read_restricted_view(
            plan["restricted_dir"], COMPARABILITY, RISK_REPORT, SUPPRESSION_REPORT
        )
    return {
        "status": status,
        "results": results,
        "ledger": ledger,
        "files": files,
        "public_view": public_view,
        "restricted_allowed": restricted,
        "restricted_view": restricted_view,
    }


@app.get("/api/runs/{dag_id}/{run_id}", dependencies=[can_read_runs])
def run_report_json(dag_id: str, run_id: str) -> dict:
    return _report(dag_id, run_id)


@app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, dependencies=[can_read_runs])
def run_report_page(dag_id: str, run_id: str, restricted: bool = Depends(sees_restricted)) -> str:
    """The run tab: a page for every DAG and every state (HTML, never JSON)."""
    if dag_id == SYNTHESIS_DAG_ID:
        try:
            # `is True`: called directly (not through FastAPI), the default is no yes
            return html.synthesis_page(_synthesis(run_id, restricted is True), PREFIX)
        except HTTPException as missing:
            return html.note_page("No such run", str(missing.detail))
    if dag_id != DAG_ID:
        return html.note_page(
            "No CTDC report", f"The DAG {dag_id} has no CTDC report: this tab is for CTDC runs."
        )
    status = run_status(dag_id, run_id)
    if status is None:
        return html.note_page("No such run", f"No run {run_id} of {dag_id}.")
    try:
        report = _report(dag_id, run_id)
    except HTTPException:  # no release written (yet): say where the run stands, and why
        return html.status_page(status)
    return html.report_page(report, status)


@app.get("/files/{run_id}/{name}", dependencies=[can_read_runs])
def public_file(run_id: str, name: str) -> FileResponse:
    """A file of the public release a synthesis run published (the run's own record names
    the folder; `name` must be one of its files)."""
    public = _xcoms(SYNTHESIS_DAG_ID, run_id, ("publish",)).get("publish") or {}
    folder = Path(public["public_dir"]) if public.get("public_dir") else None
    if folder is None or name not in {p.name for p in folder.iterdir() if p.is_file()}:
        raise HTTPException(404, "no such public file for this run")
    return FileResponse(folder / name, filename=name)


@app.get("/api/releases", dependencies=[can_read_dag_runs])
def history_json() -> list[dict]:
    return _history()


@app.get("/releases", response_class=HTMLResponse, dependencies=[can_read_dag_runs])
def history_page() -> str:
    return html.history_page(_history(), DAG_ID)
