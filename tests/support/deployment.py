"""A throw-away Airflow deployment for the tests that run real processes.

`scripts/airflow_local.py` (what `make airflow-ui` runs) on a free port, against a PostgreSQL
database made for the test and dropped after it, with this machine's Airflow, CTDC and storage
settings left out. `launched` starts it, logs in as admin through the REST API and, whatever
happens, stops it and then kills any process group it recorded that is still alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's (make browser-deps): Playwright cannot download
LAUNCHER = REPO_ROOT / "scripts" / "airflow_local.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres") as conn:
        conn.autocommit = True
        conn.execute(statement)


@contextlib.contextmanager
def throwaway_database(kind: str) -> Iterator[str]:
    """A fresh PostgreSQL database's SQLAlchemy URL, dropped afterwards; the test is skipped
    when no server answers."""
    try:
        admin_sql("SELECT 1")
    except Exception as error:  # noqa: BLE001 (any failure to connect means: no server here)
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({type(error).__name__})")
    name = f"{os.environ.get('CTDC_TEST_DB_PREFIX', 'ctdc')}_{kind}_{uuid.uuid4().hex[:10]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Api:
    def __init__(self, base: str, token: str | None = None):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=base, headers=headers, timeout=30)

    def get(self, path: str, **kw):
        return self.client.get(path, **kw)

    def json(self, method: str, path: str, body: dict | None = None) -> dict:
        response = self.client.request(method, path, json=body)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json()


def deployment_env(home: Path, database: str, nothing_delivered: Path | None, **extra: str) -> dict:
    """The launcher's environment: this machine's without any Airflow, CTDC or storage
    setting, then the deployment's own (free log-server ports, a fast scheduler heartbeat and,
    when given, a landing folder with no delivery for the yearly run)."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CTDC_", "AWS_", "FSSPEC_"))
    }
    landing = (
        {"CTDC_LANDING": str(nothing_delivered), "CTDC_OUT": str(home / "releases")}
        if nothing_delivered is not None
        else {}
    )
    return {
        **keep,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        **landing,
        **extra,
    }


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Deployment:
    base: str
    api: Api  # logged in as admin
    password: str  # admin's, as the simple auth manager generated it
    banner: str  # what the launcher printed up to its "Stop:" line
    launcher: subprocess.Popen
    pid_file: Path  # the process groups the launcher started


@contextlib.contextmanager
def launched(
    home: Path,
    env: dict,
    *arguments: str,
    port: int | None = None,
    stop: signal.Signals = signal.SIGINT,
) -> Iterator[Deployment]:
    """The launcher in a session of its own, up to its login banner; stopped with `stop`
    (SIGINT is Ctrl-C) afterwards, any recorded process group left alive then killed."""
    port = port or int(os.environ.get("CTDC_TEST_PORT") or free_port())
    launcher = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "--port", str(port), *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    pid_file = home / "airflow-ui.pids.json"
    try:
        banner = []
        for line in launcher.stdout:
            banner.append(line)
            if line.startswith("  Stop:"):
                break
        base = f"http://127.0.0.1:{port}"
        password = json.loads((home / "simple_auth_manager_passwords.json").read_text())["admin"]
        token = Api(base).json("POST", "/auth/token", {"username": "admin", "password": password})
        yield Deployment(
            base, Api(base, token["access_token"]), password, "".join(banner), launcher, pid_file
        )
    finally:
        pids = json.loads(pid_file.read_text()) if pid_file.exists() else {}
        if launcher.poll() is None:
            launcher.send_signal(stop)
        try:
            launcher.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pass
        finally:
            for pgid in pids.values():  # a safety net: the stop tests check it is not needed
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def logged_in_page(base: str, password: str, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium page signed in as admin."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking"],
            headless=True,
        )
        try:
            page = chromium.new_page(viewport={"width": 1440, "height": height})
            page.goto(f"{base}/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/" not in url, timeout=60_000)
            yield page
        finally:
            chromium.close()
