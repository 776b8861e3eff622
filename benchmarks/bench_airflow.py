"""Benchmark: the data team's first hour through real Airflow processes (LocalExecutor,
PostgreSQL), at a chosen size.

    python benchmarks/bench_airflow.py --records-per-partner 600      # the demo's size
    python benchmarks/bench_airflow.py --records-per-partner 65000    # 260k records

Starts the deployment `make airflow-ui` starts (scripts/airflow_local.py: api-server,
scheduler, dag-processor, triggerer; both DAGs active) against a throw-away PostgreSQL
database on 127.0.0.1:5432, generates the sample extracts, triggers `ctdc_annual_update`
through the REST API with params, approves through the REST API once the approval waits,
follows the `ctdc_synthesis` run the release asset starts, and reports the two intervals the
data team lives through (tests/dags/test_browser.py times the same two in a browser):

- **trigger -> approval**: from the trigger to the approval request waiting (`approve` in
  state awaiting_input): planning, the partner chains, the release folder built aside;
- **approve -> public dataset**: from the approval's answer to the end of the synthesis run
  (commit, publish, hand-off, the asset event, the scheduler's start of `ctdc_synthesis`,
  its fit, sample, comparability and public release). The answer is given 8 s after the
  approval starts waiting (Airflow 3.3 fails one answered before the scheduler has seen the
  deferring task exit; a person never answers that fast), outside both intervals;
- also: trigger -> end of `hand_off_release` and -> end of `publish_release_folder`, and
  every task instance's own duration (start to end, from the REST API), summed per task.

Only counts and times are printed; the run's logs stay in the temporary Airflow home (named
when a run fails). Every process the launcher started is stopped at the end (SIGINT to it,
then SIGKILL to its session). Appends a JSON line to benchmarks/out/results_airflow.jsonl (or
--results).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# the e2e tests' deployment helpers (tests/support/deployment.py)
sys.path[:0] = [str(REPO_ROOT / "tests")]

from support.deployment import (  # noqa: E402
    PG,
    Api,
    admin_sql,
    deployment_env,
    free_port,
    wait_for,
)

DAG_ID = "ctdc_annual_update"
SYNTHESIS_DAG_ID = "ctdc_synthesis"

OUT = Path(__file__).resolve().parent / "out" / "results_airflow.jsonl"


def when(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def sessions_under(pid: int) -> set[int]:
    """The sessions of `pid`'s children: the launcher starts each Airflow process in a session
    of its own, and their task processes and workers keep it."""
    found = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit():
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:  # field 4: the parent's pid
                    found.add(os.getsid(int(entry.name)))
    return found


def kill_sessions(sessions: set[int]) -> int:
    """SIGKILL whatever still runs in these sessions; how many processes that was."""
    left = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and os.getsid(int(entry.name)) in sessions:
                left.append(int(entry.name))
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(left)


def final_state(api: Api, run: str, what: str) -> str:
    """The state a DAG run (its REST path) ends in: success or failed."""
    return wait_for(
        what,
        lambda: (s := api.json("GET", run)["state"]) in {"success", "failed"} and s,
        3600,
        every=0.5,
    )


def synthesis_run(api: Api, after: set[str]) -> str | None:
    """The id of the synthesis run the release asset started (None: not yet)."""
    found = api.json("GET", f"/api/v2/dags/{SYNTHESIS_DAG_ID}/dagRuns")["dag_runs"]
    return next((r["dag_run_id"] for r in found if r["dag_run_id"] not in after), None)


def run(records: int, partners: list[str], home: Path, database: str) -> dict:
    from ctdc_harmonizer import samples

    landing = home / "landing"
    for partner in partners:
        samples.generate(partner, landing, n=records, seed=11)
    port = free_port()
    key = os.environ.get("CTDC_PSEUDONYM_KEY") or secrets.token_hex(32)
    env = deployment_env(home, database, home / "nothing-delivered", CTDC_PSEUDONYM_KEY=key)
    (home / "nothing-delivered").mkdir()
    launcher = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "airflow_local.py"), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    sessions = {launcher.pid}
    times: dict[str, float | None] = {}
    try:
        for line in launcher.stdout:  # up to the login banner
            if line.startswith("  Stop:"):
                break
        sessions |= sessions_under(launcher.pid)
        base = f"http://127.0.0.1:{port}"
        password = json.loads((home / "simple_auth_manager_passwords.json").read_text())["admin"]
        login = {"username": "admin", "password": password}
        api = Api(base, Api(base).json("POST", "/auth/token", login)["access_token"])
        for dag_id in (DAG_ID, SYNTHESIS_DAG_ID):
            wait_for(dag_id, lambda d=dag_id: api.get(f"/api/v2/dags/{d}").is_success, 180)
            # the launcher's deployment starts them active; said again, in case it changes
            api.json("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        earlier_syntheses = {
            r["dag_run_id"]
            for r in api.json("GET", f"/api/v2/dags/{SYNTHESIS_DAG_ID}/dagRuns")["dag_runs"]
        }
        conf = {
            "landing": str(landing),
            "out": str(home / "releases"),
            "release": f"bench-{records}",
            "partners": partners,
        }
        triggered = time.time()
        run_id = api.json(
            "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}
        )["dag_run_id"]
        runs = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"
        approve = f"{runs}/taskInstances/approve"
        wait_for(
            "the approval",
            lambda: api.json("GET", approve)["state"] in {"awaiting_input", "upstream_failed"},
            3600,
            every=0.5,
        )
        approval = api.json("GET", approve)["state"] == "awaiting_input"
        times["trigger_to_approval"] = time.time() - triggered if approval else None
        synthesis = None
        if approval:
            time.sleep(8)  # see the module docstring: outside both intervals
            answered = time.time()
            api.json("PATCH", f"{approve}/-1/hitlDetails", {"chosen_options": ["Approve"]})
        state = final_state(api, runs, "the run")
        if state == "success":
            synthesis = wait_for(
                "the synthesis run", lambda: synthesis_run(api, earlier_syntheses), 600, every=0.5
            )
            synthesized = f"/api/v2/dags/{SYNTHESIS_DAG_ID}/dagRuns/{synthesis}"
            synthesis_state = final_state(api, synthesized, "the synthesis to end")
            if synthesis_state == "success":
                times["approve_to_public_dataset"] = time.time() - answered
            state = f"annual update success, synthesis {synthesis_state}"
        tis = api.json("GET", f"{runs}/taskInstances")["task_instances"]
        if synthesis:  # named apart from the annual update's tasks
            tis += [
                {**t, "task_id": f"synthesis.{t['task_id']}"}
                for t in api.json("GET", f"{synthesized}/taskInstances")["task_instances"]
            ]
    finally:
        sessions |= sessions_under(launcher.pid)
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)  # the launcher stops what it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            launcher.wait(timeout=90)
        killed = kill_sessions(sessions)  # anything its stop missed
        if killed:
            print(f"  {killed} process(es) left by the launcher killed")
    ends = {t["task_id"]: when(t["end_date"]) for t in tis if t["map_index"] < 0}
    per_task: dict[str, float] = {}
    for t in tis:
        start, end = when(t["start_date"]), when(t["end_date"])
        if start and end:
            per_task[t["task_id"]] = round(per_task.get(t["task_id"], 0) + end - start, 2)

    def since_trigger(task: str) -> float | None:
        return round(ends[task] - triggered, 1) if ends.get(task) else None

    return {
        "state": state,
        "trigger_to_approval_seconds": round(times["trigger_to_approval"], 1)
        if times.get("trigger_to_approval")
        else None,
        "approve_to_public_dataset_seconds": round(times["approve_to_public_dataset"], 1)
        if times.get("approve_to_public_dataset")
        else None,
        "pipeline_seconds": since_trigger("hand_off_release"),
        "to_published_seconds": since_trigger("publish_release_folder"),
        "task_seconds": per_task,
        "task_instances": len(tis),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records-per-partner", type=int, default=600)
    parser.add_argument("--partners", default="case_management,iom,hotline,ctdc_legacy")
    parser.add_argument("--keep", action="store_true", help="keep the Airflow home")
    parser.add_argument(
        "--results", type=Path, default=OUT, help="the JSON lines file the result is appended to"
    )
    args = parser.parse_args()
    partners = [p for p in args.partners.split(",") if p]
    name = f"ctdc_bench_{uuid.uuid4().hex[:10]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    home = Path(tempfile.mkdtemp(prefix="ctdc-bench-airflow-"))
    try:
        result = run(args.records_per_partner, partners, home, f"{PG}/{name}")
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    records = args.records_per_partner * len(partners)
    print(f"ctdc bench (Airflow, LocalExecutor, PostgreSQL metadata): {records:,} records")
    print(f"  run state: {result['state']} ({result['task_instances']} task instances)")
    print(f"  trigger -> approval waiting: {result['trigger_to_approval_seconds']} s")
    print(f"  approve -> public dataset: {result['approve_to_public_dataset_seconds']} s")
    print(f"  trigger -> hand_off_release done: {result['pipeline_seconds']} s")
    print(f"  trigger -> publish_release_folder done: {result['to_published_seconds']} s")
    for task, seconds in sorted(result["task_seconds"].items(), key=lambda x: -x[1]):
        print(f"    {task:28s} {seconds:7.2f} s")
    if not result["approve_to_public_dataset_seconds"] or args.keep:
        print(f"  Airflow home (logs): {home}")
    else:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "records": records,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        **result,
    }
    with args.results.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
    return 0 if result["approve_to_public_dataset_seconds"] else 1


if __name__ == "__main__":
    sys.exit(main())
