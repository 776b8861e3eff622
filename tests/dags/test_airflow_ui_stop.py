"""`make airflow-ui` stops everything it started when its terminal or a supervisor stops it.

The launcher runs under `make` as a person starts it; SIGTERM then goes to the `make` process
group (what a terminal's hang-up or `timeout` does), twice in quick succession (the second
arrives while the first stop is under way). Afterwards no process of the deployment may be
left: not the launcher, the four Airflow processes, their executor workers or log servers
(each Airflow process runs in a session of its own, looked up in /proc). Real processes
against a throw-away PostgreSQL database: `make test-e2e`.

Settings for a shared machine: CTDC_TEST_DB_PREFIX (database name prefix, default `ctdc`),
CTDC_TEST_PORT (the api-server's port, default a free one).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.deployment import REPO_ROOT, free_port, throwaway_database

pytestmark = pytest.mark.processes


@pytest.fixture
def database():
    with throwaway_database("stop") as url:
        yield url


def in_sessions(sessions: set[int]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) in sessions:
                    found.append(int(entry.name))
    return found


def test_sigterm_to_the_make_process_group_twice_leaves_no_process(database, tmp_path):
    home = tmp_path / "airflow-home"
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CTDC_", "AWS_", "FSSPEC_", "MAKE"))
    }
    env = {
        **keep,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_PORT": os.environ.get("CTDC_TEST_PORT") or str(free_port()),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "CTDC_LANDING": str(tmp_path / "landing"),
        "CTDC_OUT": str(tmp_path / "releases"),
    }
    output = tmp_path / "make-airflow-ui.log"
    with open(output, "w", encoding="utf-8") as log:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "airflow-ui"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make leads a process group, as in a terminal
        )
    pid_file = home / "airflow-ui.pids.json"
    sessions = {make.pid}
    try:
        deadline = time.monotonic() + 300
        while "  Stop:" not in output.read_text(encoding="utf-8"):
            assert make.poll() is None, output.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "make airflow-ui did not come up"
            time.sleep(1)
        pids = json.loads(pid_file.read_text(encoding="utf-8"))
        assert set(pids) == {"api-server", "scheduler", "dag-processor", "triggerer"}
        sessions |= set(pids.values())
        assert len(in_sessions(sessions)) > 5  # make, the launcher, Airflow and its workers

        os.killpg(make.pid, signal.SIGTERM)
        time.sleep(0.5)  # the launcher is stopping now: a second signal must not break it off
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)

        deadline = time.monotonic() + 90
        while (left := in_sessions(sessions)) and time.monotonic() < deadline:
            time.sleep(0.5)
        said = output.read_text(encoding="utf-8")
        assert left == [], said
        assert "Airflow stopped." in said
        assert not pid_file.exists()
    finally:
        for pid in in_sessions(sessions):  # a safety net; the assertion above tells
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
