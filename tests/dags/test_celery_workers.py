"""The scale-out path on one machine: CeleryExecutor, Redis at 127.0.0.1:6379, two workers.

The launcher (`scripts/airflow_local.py --celery-workers 2`) runs the deployment against a
throw-away PostgreSQL database; the two partner chains of a run are executed by different
workers (each takes one task at a time), which hand each other their intermediates through an
S3 bucket (moto's S3 server, `CTDC_WORK_URL=s3://...`, endpoint and keys in the standard botocore
variables), not through their shared disk. This run is then REJECTED through the REST API: the
release is neither committed nor published (no asset event), the run fails saying so, the data
team is e-mailed
that the run failed, and the teardown empties the bucket. Skipped with a reason when Redis,
PostgreSQL or the S3 emulator does not answer.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from urllib.parse import quote

import pytest

from support.deployment import deployment_env, launched, throwaway_database, wait_for
from support.s3_emulator import EmulatorUnavailable, S3Emulator
from support.smtp_sink import SmtpSink, text_of

pytestmark = pytest.mark.processes
DAG_ID = "ctdc_annual_update"
PARTNERS = ["hotline", "iom"]
RELEASE = "celery-2025"
WORK_PREFIX = "ctdc-work"
# The Celery worker's log line for each task it runs: "Executing workload in Celery: ...".
WORKLOAD = re.compile(r"Executing workload in Celery: .*?task_id='([^']+)'.*?map_index=(-?\d+)")


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    try:
        with S3Emulator(tmp_path_factory.mktemp("s3")) as emulator:
            yield emulator
    except EmulatorUnavailable as error:
        pytest.skip(f"no S3 emulator: {error}")


@pytest.fixture(scope="module")
def celery_deployment(database, s3, tmp_path_factory):
    if not redis_answers():
        pytest.skip("no Redis at 127.0.0.1:6379: the Celery path needs a broker")
    from ctdc_harmonizer import samples

    home = tmp_path_factory.mktemp("celery-home")
    landing = home / "landing"
    for partner in PARTNERS:
        samples.generate(partner, landing, n=30, seed=3)
    (home / "empty").mkdir()
    queue = f"ctdc-test-{uuid.uuid4().hex[:8]}"  # the Redis server may be shared
    with SmtpSink() as smtp:
        env = deployment_env(
            home,
            database,
            home / "empty",
            **s3.env(),  # the workers reach the bucket as a deployment would
            AIRFLOW__OPERATORS__DEFAULT_QUEUE=queue,
            AIRFLOW__CELERY__WORKER_CONCURRENCY="1",
            CTDC_WORK_URL=s3.url(WORK_PREFIX),
            AIRFLOW_CONN_CTDC_SMTP=smtp.connection_json(),
            CTDC_ALERT_TO="data-team@example.org",
        )
        with launched(home, env, "--celery-workers", "2") as up:
            yield up.api, home, landing, smtp, s3


@pytest.fixture(scope="module")
def database():
    with throwaway_database("celery") as url:
        yield url


@pytest.fixture(scope="module")
def rejected_run(celery_deployment):
    api, home, landing, _, _ = celery_deployment
    wait_for("the DAG", lambda: api.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 120)
    api.json("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    conf = {"landing": str(landing), "out": str(home / "releases"), "release": RELEASE}
    conf["partners"] = PARTNERS
    run_id = api.json(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}
    )["dag_run_id"]
    hitl = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"
    wait_for("the approval request", lambda: api.get(hitl).status_code == 200, 300)
    # As in test_airflow_processes: answer only once the pause has settled (Airflow race).
    ti = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve"
    wait_for(
        "approve to await input", lambda: api.json("GET", ti)["state"] == "awaiting_input", 120
    )
    time.sleep(8)
    api.json("PATCH", hitl, {"chosen_options": ["Reject"]})

    def finished():
        run = api.json("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        return run if run["state"] in {"success", "failed"} else None

    return run_id, wait_for("the run to finish", finished, 120)


def workers_of_tasks(home) -> dict[tuple[str, int], str]:
    """(task id, map index) -> the worker that ran it, from the workers' own logs."""
    ran = {}
    for worker in ("worker-1", "worker-2"):
        log = (home / "logs" / f"{worker}.log").read_text(encoding="utf-8", errors="replace")
        assert "execute_workload" in log and "received" in log, f"{worker} ran no task"
        for task_id, map_index in WORKLOAD.findall(log):
            ran[(task_id, int(map_index))] = worker
    return ran


def test_partner_chains_ran_on_different_workers(celery_deployment, rejected_run):
    api, home, _, _, _ = celery_deployment
    run_id, _ = rejected_run
    ran = workers_of_tasks(home)
    tis = api.json("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    partner_of = {  # the map index's partner, as the UI names it (map_index_template)
        t["map_index"]: t["rendered_map_index"]
        for t in tis["task_instances"]
        if t["task_id"] == "partner.stage_partner"
    }
    assert sorted(partner_of.values()) == PARTNERS
    # Which worker takes which task is Celery's choice (a fast task may leave one worker
    # both reads): the partner chains' tasks, together, ran on both workers.
    steps = ("partner.stage_partner", "partner.check_staged_contract", "partner.harmonize_partner")
    chain_workers = {ran[(step, i)] for step in steps for i in partner_of}
    assert len(chain_workers) == 2, f"the partner chains ran on one worker only: {ran}"
    # assemble_release, on one worker, read the frames the other worker's chain had written.
    combiner = ran[("assemble_release", -1)]
    assert any(ran[(step, i)] != combiner for step in steps for i in partner_of), ran


def test_workers_exchanged_intermediates_through_the_bucket(celery_deployment, rejected_run):
    """The emulator's request log: every partner's frames were written to and read from the
    bucket under the run's prefix; nothing under the out folder's work area; the teardown
    emptied the bucket."""
    _, home, _, _, s3 = celery_deployment
    log = s3.log_path.read_text(encoding="utf-8", errors="replace")
    requests = re.sub(r"\x1b\[[0-9;]*m", "", log)  # werkzeug colours some status lines
    prefix = re.escape(f"/{s3.bucket}/{WORK_PREFIX}/") + r"[0-9a-f]{12}/" + re.escape(RELEASE)
    for partner in PARTNERS:
        for frame in ("staged.arrow", "keys.arrow", "harmonized.arrow"):
            put = re.compile(rf'"PUT {prefix}/partners/{partner}/{frame} HTTP/1.1" 200')
            get = re.compile(rf'"GET {prefix}/partners/{partner}/{frame} HTTP/1.1" 20[06]')
            assert put.search(requests), (partner, frame, "not written to the bucket")
            assert get.search(requests), (partner, frame, "not read from the bucket")
    assert s3.objects() == [], "intermediates left in the bucket"
    work = home / "releases" / ".work" / RELEASE
    frames = (".arrow", ".parquet")
    assert not work.exists() or not any(p.suffix in frames for p in work.rglob("*"))


def test_rejection_leaves_the_release_unpublished_and_says_so(celery_deployment, rejected_run):
    api, _, _, smtp, _ = celery_deployment
    run_id, run = rejected_run
    assert run["state"] == "failed"
    tis = api.json("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    states = {t["task_id"]: t["state"] for t in tis["task_instances"] if t["map_index"] < 0}
    assert states["approve"] == "success"  # a decision was taken
    assert states["commit_release"] == "skipped"  # nothing committed, nothing published
    assert states["announce_release"] == "skipped"
    assert states["outcome"] == "failed"
    events = api.json("GET", "/api/v2/assets/events")["asset_events"]
    assert not [e for e in events if e["source_run_id"] == run_id]
    log = api.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/outcome/logs/1",
        params={"full_content": True},
        headers={"Accept": "application/x-ndjson"},
    ).text
    assert f"release {RELEASE} NOT committed nor published: rejected by admin" in log
    mails = wait_for(
        "the failure alert",
        lambda: [m for m in smtp.messages if m["Subject"].startswith("[CTDC] run failed")],
        90,
    )
    assert f"/runs/{quote(run_id, safe='')}" in text_of(mails[0])
