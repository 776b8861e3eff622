"""The deployment end to end, with real Airflow processes and a throw-away PostgreSQL database.

`scripts/airflow_local.py` (what `make airflow-ui` runs) starts api-server, scheduler,
dag-processor and triggerer (LocalExecutor) on a free port; the test then works as the data team
does, through the REST API only: the DAGs start unpaused and make no run of their own; trigger
with params, read the approval request and the release report, approve, and check
task states, partner-named mapped tasks and the asset event. Anonymous access to the report is
refused. Ctrl-C (SIGINT) of the launcher must stop every process it started; the database is
dropped whatever happens. Run with `make test-e2e` (about 3-4 minutes).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from support.deployment import (
    CHROMIUM,
    Api,
    deployment_env,
    launched,
    logged_in_page,
    throwaway_database,
    wait_for,
)
from support.smtp_sink import SmtpSink, text_of

pytestmark = pytest.mark.processes

DAG_ID = "ctdc_annual_update"
RELEASE = "e2e-2025"
PARTNERS = ["hotline", "iom"]


@pytest.fixture(scope="module")
def database():
    with throwaway_database("e2e") as url:
        yield url


@pytest.fixture(scope="module")
def smtp():
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def deployment(database, smtp, tmp_path_factory):
    """The launcher as `make airflow-ui` runs it; yields (base url, admin Api, paths)."""
    from ctdc_harmonizer import samples

    home = tmp_path_factory.mktemp("airflow-home")
    landing, empty = home / "landing", home / "nothing-delivered"
    empty.mkdir()
    for partner in PARTNERS:
        samples.generate(partner, landing, n=40, seed=7)
    env = deployment_env(
        home,
        database,
        empty,
        AIRFLOW_CONN_CTDC_SMTP=smtp.connection_json(),
        CTDC_ALERT_TO="data-team@example.org",
    )
    with launched(home, env) as up:  # stopped with SIGINT, what Ctrl-C does
        assert f"Airflow UI:  {up.base}" in up.banner, up.banner
        assert f"Login:       admin / {up.password}" in up.banner
        paths = {"home": home, "landing": landing, "pids": up.pid_file, "launcher": up.launcher}
        yield up.base, up.api, paths


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = os.environ.get("CTDC_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(deployment):
    """A Chromium page logged in as admin, or the reason there is none."""
    if not CHROMIUM.exists():
        yield None, f"{CHROMIUM} not installed (make browser-deps)"
        return
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        yield None, "playwright is not installed"
        return
    base, _, paths = deployment
    password = json.loads((paths["home"] / "simple_auth_manager_passwords.json").read_text())
    with logged_in_page(base, password["admin"], height=1100) as page:
        yield page, None


@pytest.fixture(scope="module")
def approved_run(deployment, browser, screenshots):
    base, api, paths = deployment
    wait_for(
        "the DAG to be parsed", lambda: api.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 120
    )
    conf = {
        "landing": str(paths["landing"]),
        "out": str(paths["home"] / "releases"),
        "release": RELEASE,
        "partners": PARTNERS,
    }
    run_id = api.json(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}
    )["dag_run_id"]
    hitl = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"

    def waiting():
        response = api.get(hitl)
        return response.json() if response.status_code == 200 else None

    request = wait_for("the approval request", waiting, 240)
    page, _ = browser
    if page is not None:  # what the approver sees before answering
        page.goto(f"{base}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/required_actions")
        page.get_by_text(request["subject"]).first.click(timeout=60_000)
        page.get_by_text("records before").first.wait_for(timeout=30_000)
        page.screenshot(path=str(screenshots / "approval.png"), full_page=True)
    report = api.get(f"/ctdc-report/api/runs/{DAG_ID}/{run_id}")
    page = api.get(f"/ctdc-report/runs/{DAG_ID}/{run_id}")
    # Answer as a person would, not within milliseconds of the request: Airflow 3.3 fails the
    # task if the answer re-queues it before the scheduler has processed the executor's event
    # for the pausing process ("finished with state success, but ... queued").
    ti = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve"
    wait_for(
        "approve to await input", lambda: api.json("GET", ti)["state"] == "awaiting_input", 120
    )
    time.sleep(8)
    answer = api.json("PATCH", hitl, {"chosen_options": ["Approve"]})

    def finished():
        run = api.json("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        return run if run["state"] in {"success", "failed"} else None

    run = wait_for("the run to finish", finished, 120)
    return {
        "run": run,
        "run_id": run_id,
        "request": request,
        "answer": answer,
        "report": report,
        "page": page,
    }


def test_unpausing_starts_no_run(deployment, approved_run):
    """Unpaused (at creation, as `make airflow-ui` sets it), the yearly DAG made no run of its
    own: the only run is the one the test triggered."""
    _, api, _ = deployment
    runs = api.json("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
    assert [r["run_type"] for r in runs] == ["manual"]
    assert api.json("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"] is False


def test_approval_request_shows_headline_counts(approved_run):
    request = approved_run["request"]
    assert request["options"] == ["Approve", "Reject"]
    assert RELEASE in request["subject"]
    body = request["body"]
    assert all(f"| {p} | delivered" in body for p in PARTNERS)
    assert "records from" in body and "records before" in body
    assert approved_run["answer"]["chosen_options"] == ["Approve"]


def test_the_data_team_is_told_an_approval_waits(smtp, approved_run):
    mails = [m for m in smtp.messages if "approval waiting" in m["Subject"]]
    assert [m["Subject"] for m in mails] == [f"[CTDC] approval waiting: release {RELEASE}"]
    assert mails[0]["To"] == "data-team@example.org"
    assert f"/runs/{quote(approved_run['run_id'], safe='')}" in text_of(mails[0])


def test_run_succeeds_with_partner_named_tasks_and_publish(deployment, approved_run):
    _, api, _ = deployment
    assert approved_run["run"]["state"] == "success"
    tis = api.json("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{approved_run['run_id']}/taskInstances")[
        "task_instances"
    ]
    states = {(t["task_id"], t["map_index"]): t["state"] for t in tis}
    assert set(states.values()) == {"success"}, states
    assert {"approve", "announce_release", "outcome"} <= {task for task, _ in states}
    names = {t["rendered_map_index"] for t in tis if t["map_index"] >= 0}
    assert names == set(PARTNERS)


def test_report_endpoint_answers_with_counts(approved_run):
    assert approved_run["report"].status_code == 200, approved_run["report"].text
    report = approved_run["report"].json()
    assert report["release"] == RELEASE
    recon = {r["partner"]: r for r in report["reconciliation"]}
    assert sorted(recon) == PARTNERS
    for row in recon.values():
        outcomes = ("harmonized", "rejected", "excluded", "erased", "duplicates_merged")
        assert row["rows_read"] == sum(row[k] for k in outcomes)
    assert report["rows"] == sum(r["harmonized"] for r in recon.values())
    page = approved_run["page"]
    assert page.status_code == 200 and "<svg" in page.text and f"Release {RELEASE}" in page.text


def test_run_note_carries_per_partner_counts(approved_run):
    """Written by the plugin's listener in the scheduler when the run ends; counts only."""
    note = approved_run["run"]["note"]
    recon = approved_run["report"].json()["reconciliation"]
    assert note.startswith("**Harmonized rows per partner**"), note
    for row in recon:
        assert f"| {row['partner']} | {row['harmonized']} |" in note
    assert (
        f"Total: {approved_run['report'].json()['rows']} rows from {len(recon)} partner(s)." in note
    )


def test_report_refuses_anonymous_access(deployment, approved_run):
    base, _, _ = deployment
    anonymous = Api(base)
    for path in (
        f"/ctdc-report/api/runs/{DAG_ID}/{approved_run['run_id']}",
        f"/ctdc-report/runs/{DAG_ID}/{approved_run['run_id']}",
        "/ctdc-report/api/releases",
        "/ctdc-report/releases",
    ):
        assert anonymous.get(path).status_code in {401, 403}, path
    forged = Api(base, token="not-a-token")
    assert forged.get("/ctdc-report/api/releases").status_code in {401, 403}


def test_release_history_lists_the_run(deployment, approved_run):
    _, api, _ = deployment
    history = api.json("GET", "/ctdc-report/api/releases")
    mine = [h for h in history if h["run_id"] == approved_run["run_id"]]
    assert mine and mine[0]["release"] == RELEASE and mine[0]["published"] is True
    assert mine[0]["approval"] == "success" and mine[0]["decision"]["chosen"] == ["Approve"]


def test_asset_event_carries_release_rows_and_report(deployment, approved_run):
    _, api, paths = deployment
    events = api.json("GET", "/api/v2/assets/events", None)["asset_events"]
    mine = [e for e in events if e["source_run_id"] == approved_run["run_id"]]
    assert [e["source_task_id"] for e in mine] == ["announce_release"]
    rows = approved_run["report"].json()["rows"]
    report_dir = str((paths["home"] / "releases" / RELEASE).resolve())
    # the synthesis contract travels in the same extra
    handoff = (paths["home"] / "releases" / "handoff" / RELEASE).resolve()
    manifest = hashlib.sha256((handoff / "manifest.json").read_bytes()).hexdigest()
    assert mine[0]["extra"] == {
        "release": RELEASE,
        "rows": rows,
        "report": report_dir,
        "handoff": str(handoff),
        "manifest_sha256": manifest,
    }


def test_browser_shows_the_release_report(deployment, browser, approved_run, screenshots):
    page, reason = browser
    if page is None:
        pytest.skip(reason)
    base, _, _ = deployment
    run = quote(approved_run["run_id"], safe="")
    page.goto(f"{base}/dags/{DAG_ID}/runs/{run}/plugin/release-report")
    frame = page.frame_locator("iframe").first
    frame.get_by_text(f"Release {RELEASE}").wait_for(timeout=60_000)
    frame.locator("svg").first.wait_for(timeout=30_000)
    page.screenshot(path=str(screenshots / "release_report.png"), full_page=True)
    page.goto(f"{base}/ctdc-report/runs/{DAG_ID}/{run}")  # the report page on its own
    page.get_by_text("Reconciliation per partner").wait_for(timeout=30_000)
    page.screenshot(path=str(screenshots / "release_report_page.png"), full_page=True)
    assert (screenshots / "approval.png").stat().st_size > 10_000
    assert (screenshots / "release_report.png").stat().st_size > 10_000


def test_ctrl_c_stops_every_process(deployment, approved_run):
    """Runs last in this module: Ctrl-C (SIGINT) to the launcher, then look for survivors."""
    _, _, paths = deployment
    pids = json.loads(paths["pids"].read_text())
    assert set(pids) == {"api-server", "scheduler", "dag-processor", "triggerer"}
    assert all(_group_alive(pgid) for pgid in pids.values())
    launcher = paths["launcher"]
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=60) == 0
    assert "Airflow stopped." in launcher.stdout.read()
    survivors = [name for name, pgid in pids.items() if _group_alive(pgid)]
    assert survivors == []
    assert not paths["pids"].exists()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
