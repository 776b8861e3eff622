"""Benchmark: the annual update through real Airflow processes (LocalExecutor, PostgreSQL).

    python benchmarks/bench_airflow.py --records-per-partner 600      # the demo's size
    python benchmarks/bench_airflow.py --records-per-partner 65000    # 260k records

Starts the deployment `make airflow-ui` starts (scripts/airflow_local.py: api-server,
scheduler, dag-processor, triggerer) against a throw-away PostgreSQL database on
127.0.0.1:5432, generates the sample extracts, triggers `ctdc_annual_update` through the REST
API with params, approves through the REST API as soon as the approval waits, and reports:

- **pipeline**: from the trigger to the end of `hand_off` (what the data team waits for
  before the approval is asked: planning, the four partner chains, combine, the release
  folder, the warehouse load and the hand-off);
- **to published**: from the trigger to the end of `publish` (includes the scheduler's
  pick-up of the answer, given 8 s after the approval starts waiting);
- every task instance's own duration (start to end, from the REST API), summed per task.

Only counts and times are printed; the run's logs stay in the temporary Airflow home (named
when the run fails). Appends a JSON line to benchmarks/out/results_airflow.jsonl.
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
# the e2e tests' deployment helpers (tests/dags) and the support package they import (tests)
sys.path[:0] = [str(REPO_ROOT / "tests" / "dags"), str(REPO_ROOT / "tests")]

from test_airflow_processes import (  # noqa: E402
    Api,
    admin_sql,
    deployment_env,
    free_port,
    wait_for,
)

DAG_ID = "ctdc_annual_update"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
OUT = Path(__file__).resolve().parent / "out" / "results_airflow.jsonl"


def when(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


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
    try:
        for line in launcher.stdout:  # up to the login banner
            if line.startswith("  Stop:"):
                break
        base = f"http://127.0.0.1:{port}"
        password = json.loads((home / "simple_auth_manager_passwords.json").read_text())["admin"]
        login = {"username": "admin", "password": password}
        api = Api(base, Api(base).json("POST", "/auth/token", login)["access_token"])
        wait_for("the DAG", lambda: api.get(f"/api/v2/dags/{DAG_ID}").is_success, 180)
        api.json("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
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
        )
        if api.json("GET", approve)["state"] == "awaiting_input":
            # As the e2e test does: Airflow 3.3 fails an approval answered before the scheduler
            # has seen the deferring task's process exit (a person never answers that fast).
            time.sleep(8)
            api.json("PATCH", f"{approve}/-1/hitlDetails", {"chosen_options": ["Approve"]})
        state = wait_for(
            "the run",
            lambda: (s := api.json("GET", runs)["state"]) in {"success", "failed"} and s,
            600,
        )
        tis = api.json("GET", f"{runs}/taskInstances")["task_instances"]
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            launcher.wait(timeout=60)
    ends = {t["task_id"]: when(t["end_date"]) for t in tis if t["map_index"] < 0}
    per_task: dict[str, float] = {}
    for t in tis:
        start, end = when(t["start_date"]), when(t["end_date"])
        if start and end:
            per_task[t["task_id"]] = round(per_task.get(t["task_id"], 0) + end - start, 2)
    return {
        "state": state,
        "pipeline_seconds": round(ends["hand_off"] - triggered, 1)
        if ends.get("hand_off")
        else None,
        "to_published_seconds": round(ends["publish"] - triggered, 1)
        if ends.get("publish")
        else None,
        "task_seconds": per_task,
        "task_instances": len(tis),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records-per-partner", type=int, default=600)
    parser.add_argument("--partners", default="case_management,iom,hotline,ctdc_legacy")
    parser.add_argument("--keep", action="store_true", help="keep the Airflow home")
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
    print(f"  pipeline (trigger -> hand_off done): {result['pipeline_seconds']} s")
    print(f"  to published (approved 8 s after it waits): {result['to_published_seconds']} s")
    for task, seconds in sorted(result["task_seconds"].items(), key=lambda x: -x[1]):
        print(f"    {task:28s} {seconds:7.2f} s")
    if result["state"] != "success" or args.keep:
        print(f"  Airflow home (logs): {home}")
    else:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "records": records,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        **result,
    }
    with OUT.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
    return 0 if result["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
