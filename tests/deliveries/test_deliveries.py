"""Deliveries pulled from where partners put them (deliveries/): the sources file, complete
deliveries only (manifest or stability window), checksums, the record in the warehouse, the
encrypted copy, receipts back to the outbox, and a rerun that pulls nothing new. The drops
are a local folder, a real OpenSSH sftp-server and the S3 emulator, the last two through
Airflow connections given as $AIRFLOW_CONN_<ID> (what the command line uses)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctdc_harmonizer import samples
from ctdc_harmonizer.deliveries import vault
from ctdc_harmonizer.deliveries.complete import write_manifest
from ctdc_harmonizer.deliveries.pull import (
    NOTHING_NEW,
    PULLED,
    REFUSED,
    SEALED_FOLDER,
    WAITING,
    pull_deliveries,
)
from ctdc_harmonizer.deliveries.sources import load_sources
from ctdc_harmonizer.errors import CtdcError, MappingError
from ctdc_harmonizer.pipeline.local import run_annual_update
from support.s3_emulator import EmulatorUnavailable, S3Emulator
from support.sftp_server import SftpServer, SftpUnavailable


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources(path: Path, partners: dict, **defaults) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"defaults": defaults, "partners": partners}), "utf-8")
    return path


def _received(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT partner, file_name, sha256, size_bytes, source, complete_by, "
                "landing_deleted_at, encrypted_until FROM delivery_received ORDER BY id"
            )
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    """The partner's side: iom's sample extract, no manifest yet."""
    folder = tmp_path / "partner-iom"
    samples.generate("iom", tmp_path / "gen", n=40, seed=7)
    folder.mkdir()
    (tmp_path / "gen" / "iom" / "iom_case_export_2025.csv").rename(
        folder / "iom_case_export_2025.csv"
    )
    return folder


def test_a_sources_file_takes_connection_ids_never_credentials(tmp_path: Path) -> None:
    bad = _sources(
        tmp_path / "s.yaml",
        {"iom": {"kind": "sftp", "conn_id": "c", "path": "sftp://user:hunter2@host/drop"}},
    )
    with pytest.raises(MappingError) as raised:
        load_sources(bad)
    assert "iom" in str(raised.value) and "hunter2" not in str(raised.value)
    no_conn = _sources(tmp_path / "t.yaml", {"iom": {"kind": "sftp", "path": "/drop"}})
    with pytest.raises(MappingError, match="needs conn_id"):
        load_sources(no_conn)
    good = _sources(
        tmp_path / "u.yaml",
        {"iom": {"kind": "local", "path": "/x", "complete": "stability"}},
        stability_seconds=30,
    )
    assert load_sources(good)["iom"].stability_seconds == 30


def test_a_delivery_is_pulled_once_complete_and_once_only(tmp_path: Path, drop: Path) -> None:
    out, landing = tmp_path / "out", tmp_path / "landing"
    url = f"sqlite:///{out / 'warehouse.sqlite'}"
    out.mkdir()
    sources = _sources(tmp_path / "s.yaml", {"iom": {"kind": "local", "path": str(drop)}})
    pull = lambda: pull_deliveries(str(landing), str(out), str(sources)).partners["iom"]  # noqa: E731

    assert pull().state == WAITING  # no manifest yet
    extract = drop / "iom_case_export_2025.csv"
    whole = extract.read_bytes()
    write_manifest(drop)
    extract.write_bytes(whole[: len(whole) // 2])  # the manifest first, the file half-way
    half = pull()
    assert half.state == WAITING and "shorter" in half.why
    assert not (landing / "iom" / extract.name).exists()
    extract.write_bytes(whole)
    done = pull()
    assert done.state == PULLED and [f.name for f in done.files] == [extract.name]
    assert _sha(landing / "iom" / extract.name) == _sha(extract)
    assert oct((landing / "iom").stat().st_mode & 0o777) == "0o700"
    [row] = _received(url)
    assert row[:4] == ("iom", extract.name, _sha(extract), len(whole))
    assert row[4] == f"local:{drop}" and row[5] == "manifest"
    again = pull()
    assert again.state == NOTHING_NEW and _received(url) == [row]


def test_a_checksum_that_does_not_match_the_manifest_is_refused(tmp_path: Path, drop: Path) -> None:
    out, landing = tmp_path / "out", tmp_path / "landing"
    sources = _sources(tmp_path / "s.yaml", {"iom": {"kind": "local", "path": str(drop)}})
    write_manifest(drop)
    extract = drop / "iom_case_export_2025.csv"
    data = bytearray(extract.read_bytes())
    data[-2] ^= 1  # same size, other content: corrupted after the manifest was written
    extract.write_bytes(bytes(data))
    arrivals = pull_deliveries(str(landing), str(out), str(sources))
    refused = arrivals.partners["iom"]
    assert refused.state == REFUSED
    assert extract.name in refused.why and "SHA-256 does not match" in refused.why
    assert not (landing / "iom").exists()  # nothing kept, not even the partial copy
    assert any("iom: refused" in line for line in arrivals.lines())


def test_the_stability_window_waits_for_a_quiet_file(tmp_path: Path, drop: Path) -> None:
    out, landing = tmp_path / "out", tmp_path / "landing"
    entry = {"kind": "local", "path": str(drop), "complete": "stability"}
    sources = _sources(tmp_path / "s.yaml", {"iom": entry}, stability_seconds=3600)
    waiting = pull_deliveries(str(landing), str(out), str(sources)).partners["iom"]
    assert waiting.state == WAITING and "3600 s" in waiting.why
    extract = drop / "iom_case_export_2025.csv"
    an_hour_ago = time.time() - 3700
    os.utime(extract, (an_hour_ago, an_hour_ago))
    assert pull_deliveries(str(landing), str(out), str(sources)).partners["iom"].state == PULLED
    again = pull_deliveries(str(landing), str(out), str(sources)).partners["iom"]
    assert again.state == NOTHING_NEW


def test_the_encrypted_copy_opens_with_its_key_partner_and_name_only(tmp_path: Path) -> None:
    plain = tmp_path / "f.csv"
    plain.write_bytes(b"id,name\n1,someone\n")
    key, sha = secrets.token_bytes(32), _sha(plain)
    vault.seal(plain, tmp_path / "f.sealed", "iom", "f.csv", sha, key)
    sealed = (tmp_path / "f.sealed").read_bytes()
    assert b"someone" not in sealed
    assert vault.unseal(tmp_path / "f.sealed", "iom", "f.csv", sha, key) == plain.read_bytes()
    for partner, other_key in (("hotline", key), ("iom", secrets.token_bytes(32))):
        with pytest.raises(CtdcError, match="does not open") as raised:
            vault.unseal(tmp_path / "f.sealed", partner, "f.csv", sha, other_key)
        assert "someone" not in str(raised.value)


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real sftp-server and the S3 emulator, each behind an Airflow connection."""
    try:
        sftp = SftpServer(tmp_path / "sshd").__enter__()
    except SftpUnavailable as why:
        pytest.skip(str(why))
    try:
        s3 = S3Emulator(tmp_path / "moto").__enter__()
    except EmulatorUnavailable as why:
        sftp.__exit__(None, None, None)
        pytest.skip(str(why))
    monkeypatch.setenv("AIRFLOW_CONN_CTDC_SFTP_HOTLINE", sftp.connection())
    aws = {
        "conn_type": "aws",
        "login": s3.key_id,
        "password": s3.secret,
        "extra": {"endpoint_url": s3.endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CTDC_S3_IOM", json.dumps(aws))
    yield sftp, s3
    s3.__exit__(None, None, None)
    sftp.__exit__(None, None, None)


def test_sftp_and_object_store_drops_feed_a_run_and_get_receipts_back(
    tmp_path: Path, servers, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sftp, s3 = servers
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(vault.KEY_ENV, secrets.token_hex(32))
    gen = tmp_path / "gen"
    samples.generate("hotline", gen, n=60, seed=3)
    samples.generate("iom", gen, n=60, seed=4)
    hotline_drop, hotline_out = tmp_path / "sftp" / "hotline" / "in", tmp_path / "sftp" / "out"
    hotline_drop.mkdir(parents=True)
    extract = gen / "hotline" / "hotline_reports_2025.jsonl"
    whole = extract.read_bytes()
    (hotline_drop / extract.name).write_bytes(whole[: len(whole) // 2])  # still uploading
    (gen / "iom" / "withdrawals.csv").unlink()  # the delivery: the extract only
    iom_file = gen / "iom" / "iom_case_export_2025.csv"
    s3.put(f"iom/in/{iom_file.name}", iom_file.read_bytes())
    bad = json.loads(write_manifest(gen / "iom").read_text())
    bad["resources"][0]["hash"] = "sha256:" + "0" * 64  # wrong checksum
    s3.put("iom/in/datapackage.json", json.dumps(bad).encode())
    sources = _sources(
        tmp_path / "sources.yaml",
        {
            "hotline": {
                "kind": "sftp",
                "conn_id": "ctdc_sftp_hotline",
                "path": str(hotline_drop),
                "outbox": str(hotline_out),
                "complete": "stability",
                "stability_seconds": 60,
            },
            "iom": {
                "kind": "object_store",
                "conn_id": "ctdc_s3_iom",
                "path": s3.url("iom/in"),
                "outbox": s3.url("iom/receipts"),
                "keep_encrypted_days": 30,
            },
        },
    )
    out, landing = tmp_path / "out", tmp_path / "landing"

    def run():
        return run_annual_update(
            str(landing), str(out), "2025", mappings=None, sources=str(sources), workers=1
        )

    first = run()  # hotline's file just changed; iom's checksum is wrong
    states = {p: a.state for p, a in first.plan.arrivals.partners.items()}
    assert states == {"hotline": WAITING, "iom": REFUSED}
    assert first.plan.nothing_to_do
    (hotline_drop / extract.name).write_bytes(whole)
    quiet = time.time() - 90  # the upload ended longer ago than hotline's window
    os.utime(hotline_drop / extract.name, (quiet, quiet))
    s3.put("iom/in/datapackage.json", write_manifest(gen / "iom").read_bytes())
    second = run()
    states = {p: a.state for p, a in second.plan.arrivals.partners.items()}
    assert states == {"hotline": PULLED, "iom": PULLED}, second.plan.arrivals.lines()
    assert second.committed is not None and second.sent.sent.keys() == {"hotline", "iom"}
    assert "- hotline: pulled, 1 file(s)" in second.summary.body  # the approval request
    assert sorted(p.name for p in (hotline_out / "2025").iterdir()) == [
        "receipt.html",
        "receipt.json",
    ]
    assert s3.objects("iom/receipts") == [
        "iom/receipts/2025/receipt.html",
        "iom/receipts/2025/receipt.json",
    ]
    receipt = json.loads(s3.read("iom/receipts/2025/receipt.json"))
    assert receipt["partner"] == "iom"
    # Read, committed: the plain copies are gone; iom's sealed copy stays for 30 days.
    assert second.cleared.plain_deleted == 2 and second.cleared.sealed_kept == 1
    assert sorted(landing.iterdir()) == []  # no partner folder left to read as a delivery
    assert [p.name for p in (out / SEALED_FOLDER / "iom").iterdir()] == [f"{_sha(iom_file)}.sealed"]
    rows = _received(f"sqlite:///{out / 'warehouse.sqlite'}")
    assert {(r[0], r[1]) for r in rows} == {("hotline", extract.name), ("iom", iom_file.name)}
    assert all(r[6] is not None for r in rows)  # landing_deleted_at
    third = run()  # nothing new anywhere
    assert {a.state for a in third.plan.arrivals.partners.values()} == {NOTHING_NEW}
    assert third.plan.nothing_to_do
    # No credential, key path content or file content in the logs.
    logged = caplog.text
    assert s3.secret not in logged and Path(sftp.user_key).read_text() not in logged
    assert whole[:40].decode() not in logged and iom_file.read_text()[:60] not in logged


def test_the_wait_fires_once_all_delivered_or_at_its_deadline(tmp_path: Path, drop: Path) -> None:
    """The trigger the DAG defers to (run here in an event loop, as the triggerer does)."""
    import asyncio
    import datetime as dt

    from ctdc_harmonizer.deliveries.waiting import DeliveriesTrigger

    out = tmp_path / "out"
    sources = _sources(tmp_path / "s.yaml", {"iom": {"kind": "local", "path": str(drop)}})

    async def first_event(trigger: DeliveriesTrigger) -> dict:
        async for event in trigger.run():
            return event.payload

    def trigger(seconds: float) -> DeliveriesTrigger:
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        made = DeliveriesTrigger(str(out), deadline.isoformat(), 0.2, str(sources))
        # What the metadata database stores: paths, a deadline, an interval; no secret.
        assert set(made.serialize()[1]) == {"out", "deadline", "poll_seconds", "sources"}
        return made

    started = time.monotonic()
    late = asyncio.run(first_event(trigger(1.0)))  # no manifest: waits until the deadline
    assert late == {"states": {"iom": WAITING}, "deadline_passed": True}
    assert time.monotonic() - started >= 1.0
    write_manifest(drop)
    ready = asyncio.run(first_event(trigger(3600)))  # complete and new: fires at once
    assert ready == {"states": {"iom": "ready"}, "deadline_passed": False}
