"""Run a local Airflow deployment of this project: what `make airflow-ui` starts.

The four Airflow 3 processes (api-server, scheduler, dag-processor, triggerer) with the
LocalExecutor, the repository's dags/ and plugins/ folders, and SimpleAuthManager with one fixed
admin user whose password is kept in `$AIRFLOW_HOME/simple_auth_manager_passwords.json`.
The api-server listens on 127.0.0.1 only. Each process writes to `$AIRFLOW_HOME/logs/<name>.log`
so the console keeps the URL and login visible. Ctrl-C (or SIGTERM) stops every process started
here, with their children (each process in a session of its own; task processes, which take
process groups of their own, are found by that session): once or several times, directly or
through `make`.

Metadata database: `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN` if set (e.g.
`postgresql+psycopg://postgres@127.0.0.1:5432/airflow`; the async driver asyncpg is derived by
Airflow), else SQLite in `$AIRFLOW_HOME/airflow.db`.

    python scripts/airflow_local.py [--port 8080] [--celery-workers N]

With --celery-workers N: CeleryExecutor instead, with N `airflow celery worker` processes and
the broker $CTDC_CELERY_BROKER (default redis://127.0.0.1:6379/0), tasks on the queue
$AIRFLOW__OPERATORS__DEFAULT_QUEUE (default `default`): the scale-out path, on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json"
PID_FILE = "airflow-ui.pids.json"


def airflow_environment(home: Path, port: int, base: dict[str, str] | None = None) -> dict:
    """The environment every process of the deployment shares (and the e2e test reuses)."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"  # task subprocesses find airflow
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            # plugins/.airflowignore keeps the ctdc_harmonizer package out of the plugin loader.
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Both DAGs active from the start: the annual update's schedule never fires the
            # past (no surprise run), and a paused synthesis DAG would miss the release
            # asset's events (Airflow keeps none for it).
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / PASSWORDS_FILE),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # The api-server's port is not one of the log servers' (8793 worker, 8794 triggerer).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": env.get(
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "8793"
            ),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": env.get(
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT", "8794"
            ),
            "GX_ANALYTICS_ENABLED": "false",
        }
    )
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}")
    env.setdefault("CTDC_LANDING", str(home / "ctdc" / "landing"))
    env.setdefault("CTDC_OUT", str(home / "ctdc" / "releases"))
    return env


def celery_environment(env: dict) -> dict:
    """CeleryExecutor settings over `airflow_environment`: Redis broker, results in the
    metadata database."""
    database = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    return env | {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": env.get("CTDC_CELERY_BROKER", "redis://127.0.0.1:6379/0"),
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": env.get("AIRFLOW__CELERY__WORKER_CONCURRENCY", "2"),
    }


def celery_workers(count: int, queue: str) -> dict[str, list[str]]:
    """Worker commands: distinct Celery names; no log server each (they share this disk)."""
    return {
        f"worker-{i}": [
            "celery",
            "worker",
            "--celery-hostname",
            f"ctdc-worker-{i}@%h",
            "--queues",
            queue,
            "--skip-serve-logs",
        ]
        for i in range(1, count + 1)
    }


def admin_password(home: Path) -> str:
    """The admin's password: generated once, then kept (SimpleAuthManager reads this file)."""
    path = home / PASSWORDS_FILE
    passwords = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if ADMIN not in passwords:
        passwords[ADMIN] = secrets.token_urlsafe(12)
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(passwords), encoding="utf-8")
        path.chmod(0o600)
    return passwords[ADMIN]


AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def migrate(env: dict, log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "db-migrate.log", "w", encoding="utf-8") as log:
        done = subprocess.run([AIRFLOW, "db", "migrate"], env=env, stdout=log, stderr=log)
    if done.returncode != 0:
        raise SystemExit(f"airflow db migrate failed; see {log_dir / 'db-migrate.log'}")


def start(
    env: dict,
    log_dir: Path,
    commands: dict[str, list[str]],
    started: dict[str, subprocess.Popen] | None = None,
) -> dict[str, subprocess.Popen]:
    """Each Airflow process in a session (and process group) of its own, so that stopping it
    stops its children. `started` is filled as they start: a signal halfway through still
    finds every process started so far."""
    started = {} if started is None else started
    for name, arguments in commands.items():
        log = open(log_dir / f"{name}.log", "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        started[name] = subprocess.Popen(
            [AIRFLOW, *arguments],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return started


def _in_sessions(sessions: set[int]) -> list[int]:
    """Every live process of these sessions: the Airflow processes, their executor workers and
    log servers, and task processes (these move to process groups of their own, but keep the
    session, even once orphaned)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.getsid(int(entry.name)) in sessions:
                found.append(int(entry.name))
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def stop(processes: dict[str, subprocess.Popen], timeout: float = 20) -> None:
    """SIGTERM to each process group (a graceful stop), then to whatever else runs in their
    sessions (task processes have groups of their own), SIGKILL to what is left after
    `timeout` seconds; returns once nothing of it runs. Idempotent."""
    sessions = {proc.pid for proc in processes.values()}  # each started in a session of its own
    for proc in processes.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    _signal_all(_in_sessions(sessions), signal.SIGTERM)
    while (left := _in_sessions(sessions)) and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal_all(left, signal.SIGKILL)
    for proc in processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # reap our own children
    kill_deadline = time.monotonic() + 10
    while _in_sessions(sessions) and time.monotonic() < kill_deadline:
        time.sleep(0.1)


def wait_until_up(url: str, processes: dict[str, subprocess.Popen], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [name for name, proc in processes.items() if proc.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited; see the logs")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the api-server did not answer at {url} within {timeout:.0f} s")


_stopping = False


def _interrupt(signum, frame) -> None:
    """SIGINT/SIGTERM: interrupt the main loop once. A later signal (`make` passes Ctrl-C on,
    a supervisor repeats SIGTERM) is ignored, so it cannot break off the stop under way."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    raise KeyboardInterrupt


def _say(*lines: str) -> None:
    """Print, never failing: the terminal or pipe may be gone while stopping."""
    with contextlib.suppress(OSError, ValueError):
        print(*lines, sep="\n", flush=True)


def local_pseudonym_key(home: Path, env: dict) -> str:
    """Where the key comes from. A deployment sets the Variable `ctdc_pseudonym_key` from its
    secrets backend (or CTDC_PSEUDONYM_KEY); this local one keeps a key of its own in an
    owner-only file under AIRFLOW_HOME, made once, so withdrawals and pseudonyms stay stable
    across runs of this machine. The key is never printed."""
    if env.get("CTDC_PSEUDONYM_KEY") or env.get("AIRFLOW_VAR_CTDC_PSEUDONYM_KEY"):
        return "from the environment"
    path = home / "pseudonym.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32), encoding="utf-8")
    env["AIRFLOW_VAR_CTDC_PSEUDONYM_KEY"] = path.read_text(encoding="utf-8").strip()
    return f"local key in {path} (owner-only; not for real case data)"


def main(argv: list[str] | None = None) -> int:
    global _stopping
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", 8080)))
    parser.add_argument("--celery-workers", type=int, default=0, help="CeleryExecutor, N workers")
    args = parser.parse_args(argv)
    home = Path(os.environ.get("AIRFLOW_HOME", REPO_ROOT / ".airflow")).resolve()
    env = airflow_environment(home, args.port)
    commands = {name: [name] for name in PROCESSES}
    if args.celery_workers:
        env = celery_environment(env)
        queue = env.get("AIRFLOW__OPERATORS__DEFAULT_QUEUE", "default")
        commands |= celery_workers(args.celery_workers, queue)
    password = admin_password(home)
    key_source = local_pseudonym_key(home, env)
    log_dir = home / "logs"
    print(f"Airflow home {home}; metadata DB {env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}")
    print(f"Executor {env['AIRFLOW__CORE__EXECUTOR']}")
    print("Migrating the metadata database ...", flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    processes: dict[str, subprocess.Popen] = {}
    url = env["AIRFLOW__API__BASE_URL"]
    try:
        migrate(env, log_dir)
        start(env, log_dir, commands, processes)
        pids = {name: proc.pid for name, proc in processes.items()}  # process group ids
        (home / PID_FILE).write_text(json.dumps(pids), encoding="utf-8")
        wait_until_up(url, processes)
        print(
            "\n" + "=" * 64,
            f"  Airflow UI:  {url}",
            f"  Login:       {ADMIN} / {password}",
            f"  Landing:     {env['CTDC_LANDING']}",
            f"  Releases:    {env['CTDC_OUT']}",
            f"  Logs:        {log_dir}/<process>.log",
            f"  Pseudonyms:  {key_source}",
            "  Stop:        Ctrl-C (stops every process started here)",
            "=" * 64,
            sep="\n",
            flush=True,
        )
        while True:
            dead = [name for name, proc in processes.items() if proc.poll() is not None]
            if dead:
                print(f"{', '.join(dead)} exited; stopping (see {log_dir})", file=sys.stderr)
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"airflow-ui: error: {error} ({log_dir})", file=sys.stderr)
        return 1
    finally:
        _stopping = True  # from here on, signals are ignored: nothing breaks off the stop
        _say("Stopping Airflow ...")
        stop(processes)
        (home / PID_FILE).unlink(missing_ok=True)
        _say("Airflow stopped.")


if __name__ == "__main__":
    sys.exit(main())
