"""Deliveries pulled by the annual update in real Airflow processes (LocalExecutor, triggerer,
a throw-away PostgreSQL metadata database, *_i20_*): two partners deliver to a real
OpenSSH sftp-server (hotline with a manifest, iom under the stability window), one to the S3
emulator (case_management, manifest), each through its own Airflow connection.

hotline's extract is half uploaded when the run starts: `wait_for_deliveries` defers (the
task holds no worker slot; the triggerer polls the drops) and nothing of hotline is copied;
the test writes the rest and the manifest, the trigger fires, the three deliveries are
pulled, the approval request names them, the release is approved, and each partner's
receipt is in its outbox. A second run pulls nothing new. No credential and no line of a
delivered file reaches a task log, XCom or the metadata database.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from support.deployment import PG, Api, deployment_env, launched, throwaway_database, wait_for
from support.s3_emulator import EmulatorUnavailable, S3Emulator
from support.sftp_server import SftpServer, SftpUnavailable

pytestmark = pytest.mark.processes

DAG_ID = "ctdc_annual_update"
RELEASE = "i20-2025"


@pytest.fixture(scope="module")
def database():
    """The metadata database's name (the leak search reads its rows)."""
    with throwaway_database("i20") as url:
        yield url.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("servers")
    try:
        sftp = SftpServer(folder / "sshd").__enter__()
    except SftpUnavailable as why:
        pytest.skip(str(why))
    try:
        s3 = S3Emulator(folder / "moto").__enter__()
    except EmulatorUnavailable as why:
        sftp.__exit__(None, None, None)
        pytest.skip(str(why))
    yield sftp, s3
    s3.__exit__(None, None, None)
    sftp.__exit__(None, None, None)


@pytest.fixture(scope="module")
def world(database, servers, tmp_path_factory):
    """The partners' sides (drops, outboxes), the sources file, and the deployment."""
    import yaml

    from ctdc_harmonizer import samples

    sftp, s3 = servers
    home = tmp_path_factory.mktemp("airflow-home")
    side = tmp_path_factory.mktemp("partners")
    samples.generate("hotline", side / "gen", n=40, seed=11)
    samples.generate("iom", side / "gen", n=40, seed=12)
    samples.generate("case_management", side / "gen", n=40, seed=13)
    drops = {p: side / "sftp" / p / "in" for p in ("hotline", "iom")}
    outboxes = {p: side / "sftp" / p / "receipts" for p in ("hotline", "iom")}
    for folder in drops.values():
        folder.mkdir(parents=True)
    sources = home / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {
                "partners": {
                    "hotline": {
                        "kind": "sftp",
                        "conn_id": "ctdc_sftp_hotline",
                        "path": str(drops["hotline"]),
                        "outbox": str(outboxes["hotline"]),
                    },
                    "iom": {
                        "kind": "sftp",
                        "conn_id": "ctdc_sftp_iom",
                        "path": str(drops["iom"]),
                        "outbox": str(outboxes["iom"]),
                        "complete": "stability",
                        "stability_seconds": 3,
                    },
                    "case_management": {
                        "kind": "object_store",
                        "conn_id": "ctdc_s3_case_management",
                        "path": s3.url("case_management/in"),
                        "outbox": s3.url("case_management/receipts"),
                        "keep_encrypted_days": 30,
                    },
                }
            }
        ),
        encoding="utf-8",
    )
    aws = {
        "conn_type": "aws",
        "login": s3.key_id,
        "password": s3.secret,
        "extra": {"endpoint_url": s3.endpoint, "region_name": "us-east-1"},
    }
    empty = home / "nothing-delivered"
    empty.mkdir()
    delivery_key = secrets.token_hex(32)
    env = deployment_env(
        home,
        f"{PG}/{database}",
        empty,
        CTDC_SOURCES=str(sources),
        CTDC_WAIT_POLL_SECONDS="3",
        CTDC_DELIVERY_KEY=delivery_key,
        AIRFLOW_CONN_CTDC_SFTP_HOTLINE=sftp.connection(),
        AIRFLOW_CONN_CTDC_SFTP_IOM=sftp.connection(),
        AIRFLOW_CONN_CTDC_S3_CASE_MANAGEMENT=json.dumps(aws),
    )
    with launched(home, env) as up:
        yield {
            "api": up.api,
            "home": home,
            "gen": side / "gen",
            "drops": drops,
            "outboxes": outboxes,
            "s3": s3,
            "sftp": sftp,
            "database": database,
            "secrets": [s3.secret, delivery_key, Path(sftp.user_key).read_text().strip()],
        }


def _trigger(api: Api, home: Path, wait_hours: float) -> str:
    conf = {
        "landing": str(home / "landing"),
        "out": str(home / "releases"),
        "release": RELEASE,
        "wait_hours": wait_hours,
    }
    return api.json("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})[
        "dag_run_id"
    ]


def _ti(api: Api, run_id: str, task_id: str) -> dict:
    return api.json("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")


def _finished(api: Api, run_id: str, timeout: float) -> dict:
    def done():
        run = api.json("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        return run if run["state"] in {"success", "failed"} else None

    return wait_for(f"run {run_id} to finish", done, timeout)


def _xcom(api: Api, run_id: str, task_id: str):
    value = api.json(
        "GET",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
    )["value"]
    return json.loads(value) if isinstance(value, str) else value  # the stored JSON


@pytest.fixture(scope="module")
def runs(world):
    api, home, gen, drops, s3 = (world[k] for k in ("api", "home", "gen", "drops", "s3"))
    wait_for("the DAG", lambda: api.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 120)
    # A run from the empty form while the drops are empty: it waits for nobody (no wait_hours)
    # and ends with nothing to do. (The yearly schedule never fires the past: issue 18.)
    api.json("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    empty_id = api.json(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {}}
    )["dag_run_id"]
    scheduled = [_finished(api, empty_id, 180)]
    # The partners deliver: iom and case_management completely, hotline half-way.
    from ctdc_harmonizer.deliveries.complete import write_manifest

    iom = gen / "iom" / "iom_case_export_2025.csv"
    (drops["iom"] / iom.name).write_bytes(iom.read_bytes())
    cm = gen / "case_management" / "htcds_case_export.xlsx"
    (gen / "case_management" / "withdrawals.csv").unlink()
    s3.put(f"case_management/in/{cm.name}", cm.read_bytes())
    s3.put("case_management/in/datapackage.json", write_manifest(cm.parent).read_bytes())
    hotline = gen / "hotline" / "hotline_reports_2025.jsonl"
    (gen / "hotline" / "withdrawals.csv").unlink()
    whole = hotline.read_bytes()
    (drops["hotline"] / hotline.name).write_bytes(whole[: len(whole) // 2])

    run_id = _trigger(api, home, wait_hours=0.25)
    wait_for(
        "the wait to defer",
        lambda: _ti(api, run_id, "wait_for_deliveries")["state"] == "deferred",
        180,
        every=1,
    )
    # Deferred, not running: it stays so while hotline's file is half there.
    deferred_states = []
    for _ in range(4):
        time.sleep(3)
        deferred_states.append(_ti(api, run_id, "wait_for_deliveries")["state"])
    landing_during_wait = sorted(p.name for p in (home / "landing").glob("*/*"))
    # The rest of the file, then the manifest, last.
    (drops["hotline"] / hotline.name).write_bytes(whole)
    write_manifest(drops["hotline"])
    hitl = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"

    def waiting():
        response = api.get(hitl)
        return response.json() if response.status_code == 200 else None

    request = wait_for("the approval request", waiting, 300)
    wait_for(
        "approve to await input",
        lambda: _ti(api, run_id, "approve")["state"] == "awaiting_input",
        120,
    )
    time.sleep(8)  # see test_airflow_processes: answer as a person would
    api.json("PATCH", hitl, {"chosen_options": ["Approve"]})
    first = _finished(api, run_id, 240)
    second_id = _trigger(api, home, wait_hours=0)
    second = _finished(api, second_id, 240)
    return {
        "scheduled": scheduled,
        "run_id": run_id,
        "first": first,
        "deferred_states": deferred_states,
        "landing_during_wait": landing_during_wait,
        "request": request,
        "second_id": second_id,
        "second": second,
        "hotline": whole,
    }


def test_the_wait_defers_and_nothing_half_uploaded_is_copied(world, runs):
    assert [r["state"] for r in runs["scheduled"]] == ["success"]
    assert runs["deferred_states"] == ["deferred"] * 4
    assert runs["landing_during_wait"] == []  # nobody pulled while hotline was incomplete
    waited = _xcom(world["api"], runs["run_id"], "wait_for_deliveries")
    assert waited == {
        "states": dict.fromkeys(["case_management", "hotline", "iom"], "ready"),
        "deadline_passed": False,
    }


def test_three_deliveries_are_pulled_approved_and_published(world, runs):
    assert runs["first"]["state"] == "success"
    body = runs["request"]["body"]
    for partner in ("hotline", "iom", "case_management"):
        assert f"- {partner}: pulled, 1 file(s)" in body
    pulled = _xcom(world["api"], runs["run_id"], "pull_deliveries")
    import hashlib

    hotline = pulled["partners"]["hotline"]["files"][0]
    assert hotline["sha256"] == hashlib.sha256(runs["hotline"]).hexdigest()  # the whole file
    assert hotline["size_bytes"] == len(runs["hotline"])


def test_receipts_reach_both_kinds_of_outbox(world, runs):
    for partner in ("hotline", "iom"):
        folder = world["outboxes"][partner] / RELEASE
        assert sorted(p.name for p in folder.iterdir()) == ["receipt.html", "receipt.json"]
        assert json.loads((folder / "receipt.json").read_text())["partner"] == partner
    assert world["s3"].objects("case_management/receipts") == [
        f"case_management/receipts/{RELEASE}/receipt.html",
        f"case_management/receipts/{RELEASE}/receipt.json",
    ]


def test_a_second_run_pulls_nothing_new(world, runs):
    assert runs["second"]["state"] == "success"
    pulled = _xcom(world["api"], runs["second_id"], "pull_deliveries")
    assert {a["state"] for a in pulled["partners"].values()} == {"nothing_new"}
    tis = world["api"].json(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{runs['second_id']}/taskInstances"
    )["task_instances"]
    assert {t["task_id"]: t["state"] for t in tis}["assemble_release"] == "skipped"


def test_no_credential_or_delivered_line_in_logs_xcom_or_the_metadata_db(world, runs):
    import psycopg

    lines = [line for line in runs["hotline"].decode().splitlines() if len(line) > 20][:5]
    iom = (world["gen"] / "iom" / "iom_case_export_2025.csv").read_text().splitlines()[1:6]
    needles = [*world["secrets"], *lines, *iom]
    logs = "".join(
        p.read_text(errors="replace") for p in (world["home"] / "logs").rglob("*") if p.is_file()
    )
    assert "wait_for_deliveries" in logs  # the task logs are there to be searched
    assert [n for n in needles if n in logs] == []
    with psycopg.connect(
        f"host=127.0.0.1 port=5432 user=postgres dbname={world['database']}"
    ) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        dump = "\n".join(
            str(row) for table in tables for row in conn.execute(f'SELECT * FROM "{table}"')
        )
    assert "DeliveriesTrigger" in dump or "deliveries" in dump  # the rows are there to search
    assert [n for n in needles if n in dump] == []
