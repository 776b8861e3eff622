"""Intermediates on S3-compatible object storage ($CTDC_WORK_URL), against moto's S3 server.

A whole `ctdc run` (partner chains in two processes) with its intermediates in a bucket gives
the same release, byte for byte, as a run with local intermediates; the objects were really in
the bucket during the run, and nothing is left there after it, whether it succeeded or failed.
A work URL that cannot work is a clear, value-free error at plan time (not retried); a store
that cannot be reached is an infrastructure error (retried). No secret reaches the plan or XCom,
and no object content reaches a log line. Skipped with a reason when moto cannot start.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ctdc_harmonizer import samples
from ctdc_harmonizer.errors import CtdcError, ReleaseLockedError
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.run import plan as planning
from ctdc_harmonizer.run import storage
from ctdc_harmonizer.run.finish import finish_run
from ctdc_harmonizer.safety import is_infrastructure
from support.harness import release_files
from support.s3_emulator import EmulatorUnavailable, S3Emulator, free_port

PARTNERS = ["hotline", "iom"]  # iom's MiMOSA records carry linkage hashes
RELEASE = "2025"
PREFIX = "ctdc-work"
STAGED_NAMES = {"staged.arrow", "keys.arrow", "harmonized.arrow", "outcomes.arrow"}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    try:
        with S3Emulator(tmp_path_factory.mktemp("moto")) as s3:
            yield s3
    except EmulatorUnavailable as error:
        pytest.skip(f"no S3 emulator: {error}")


@pytest.fixture
def s3_env(emulator, monkeypatch):
    """This process (and the run's spawned workers) reach the emulator through the standard
    botocore variables; the bucket is emptied before and after each test."""
    import s3fs

    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(storage.WORK_URL_ENV, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # clients read the environment when made
    for key in emulator.objects():
        emulator.fs().rm_file(f"{emulator.bucket}/{key}")
    yield emulator
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing")
    samples.generate_all(root, 40, 7, PARTNERS)
    return root


def run(landing: Path, out: Path, workers: int = 2):
    return run_annual_update(
        str(landing),
        str(out),
        RELEASE,
        PARTNERS,
        warehouse_url=f"sqlite:///{out.parent / (out.name + '.sqlite')}",
        workers=workers,
    )


def spy_on_assemble(monkeypatch, emulator, out: Path) -> dict:
    """When the release is assembled (in the main process, after both partner chains ran in
    their own processes): what the bucket and the local work folder hold."""
    from ctdc_harmonizer.store import identity

    seen: dict = {}
    release_order = identity.release_order

    def spying(label, identities):
        seen["objects"] = emulator.objects()
        seen["private"] = {
            key: emulator.read(key) for key in seen["objects"] if key.endswith("keys.arrow")
        }
        local_work = out / ".work" / RELEASE
        seen["local_files"] = [
            p for p in local_work.rglob("*") if p.is_file() and "release" not in p.parts
        ]
        return release_order(label, identities)

    monkeypatch.setattr(identity, "release_order", spying)
    return seen


# --- a whole run ---------------------------------------------------------------------------


def test_a_run_with_intermediates_on_s3_gives_the_same_release(
    s3_env, landing, tmp_path, monkeypatch
):
    emulator = s3_env
    reference = run(landing, tmp_path / "local-out")
    seen = spy_on_assemble(monkeypatch, emulator, tmp_path / "s3-out")
    monkeypatch.setenv(storage.WORK_URL_ENV, emulator.url(PREFIX))
    remote = run(landing, tmp_path / "s3-out")

    # The same release, byte for byte.
    assert remote.folder.rows == reference.folder.rows > 0
    assert remote.folder.totals == reference.folder.totals
    local_files = release_files(tmp_path / "local-out" / RELEASE)
    assert "harmonized.parquet" in local_files and "metadata.json" in local_files
    assert release_files(tmp_path / "s3-out" / RELEASE) == local_files

    # The partner chains (two worker processes) handed their frames over through the bucket.
    plan = remote.plan
    out_id = hashlib.sha256(str((tmp_path / "s3-out").resolve()).encode()).hexdigest()[:12]
    run_prefix = f"{PREFIX}/{out_id}/{RELEASE}"
    assert plan.work_dir == f"s3://{emulator.bucket}/{run_prefix}"
    objects = seen["objects"]
    assert f"{run_prefix}/plan.json" in objects
    for partner in PARTNERS:
        for name in STAGED_NAMES:
            assert f"{run_prefix}/partners/{partner}/{name}" in objects, (partner, name)
    assert all(key.startswith(run_prefix + "/") for key in objects)
    assert seen["local_files"] == [], "intermediates written to the out folder's file system"

    # Nothing left: not in the bucket, not in the out folder's work area.
    assert emulator.objects() == []
    assert not (tmp_path / "s3-out" / ".work" / RELEASE).exists()


def test_a_failed_run_leaves_nothing_in_the_bucket(s3_env, landing, tmp_path, monkeypatch):
    emulator = s3_env
    seen = spy_on_assemble(monkeypatch, emulator, tmp_path / "out")

    def broken(*args):
        raise CtdcError("release step failed (test)")

    # after the release is assembled, in this process
    monkeypatch.setattr("ctdc_harmonizer.release.folder.build_release", broken)
    monkeypatch.setenv(storage.WORK_URL_ENV, emulator.url(PREFIX))
    with pytest.raises(CtdcError, match="release step failed"):
        run(landing, tmp_path / "out")
    assert len(seen["objects"]) > 10  # the chains had written their frames
    assert emulator.objects() == []
    # The lock was given back: the rerun starts (and, unbroken, publishes).
    monkeypatch.undo()
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(storage.WORK_URL_ENV, emulator.url(PREFIX))
    assert run(landing, tmp_path / "out", workers=1).folder.rows > 0
    assert emulator.objects() == []


def test_a_rerun_starts_from_an_empty_prefix_and_the_teardown_empties_it(s3_env, landing, tmp_path):
    emulator = s3_env
    out = tmp_path / "out"
    prefix = storage.run_prefix(PREFIX, out, RELEASE)
    emulator.put(f"{prefix}/partners/iom/staged.arrow", b"left by a crashed run")
    emulator.put(f"{prefix}-rc1/iom/staged.arrow", b"another release's")  # not ours
    emulator.put(f"{PREFIX}/0123456789ab/{RELEASE}/plan.json", b"another out folder's")
    url = emulator.url(PREFIX)
    plan = planning.plan_release(str(landing), str(out), RELEASE, PARTNERS, work_url=url)
    try:
        assert emulator.objects(prefix) == [f"{prefix}/plan.json"]
        assert plan.work.exists("plan.json") and not plan.work.partner("iom").exists("staged.arrow")
    finally:
        finished = finish_run(plan)
    assert finished.work_folder_removed is True
    assert emulator.objects(prefix) == []
    assert emulator.objects() == sorted(
        [f"{prefix}-rc1/iom/staged.arrow", f"{PREFIX}/0123456789ab/{RELEASE}/plan.json"]
    )
    assert finish_run(plan).work_folder_removed is False  # idempotent


def test_a_teardown_that_cannot_remove_the_prefix_keeps_the_lock(
    s3_env, landing, tmp_path, monkeypatch
):
    """The store fails during the teardown: the task fails with an infrastructure error (the
    DAG retries it) and the release stays locked, so no new run starts under the same prefix
    meanwhile; once the store answers again the teardown removes it and frees the lock."""
    import botocore.exceptions

    emulator = s3_env
    url = emulator.url(PREFIX)
    owner = "ctdc_annual_update/run_1"
    args = (str(landing), str(tmp_path / "out"), RELEASE, PARTNERS)
    plan = planning.plan_release(*args, lock_owner=owner, work_url=url)
    prefix = plan.work_dir.removeprefix(f"s3://{emulator.bucket}/")

    def unreachable(*args, **kwargs):
        raise botocore.exceptions.EndpointConnectionError(endpoint_url=f"{emulator.endpoint}/x")

    with monkeypatch.context() as patched:  # fsspec binds sync methods per instance
        patched.setattr(plan.work.root.fs, "rm", unreachable)
        with pytest.raises(CtdcError) as err:
            finish_run(plan)
    assert is_infrastructure(err.value)
    assert "EndpointConnectionError" in str(err.value) and emulator.secret not in str(err.value)
    assert emulator.objects(prefix) == [f"{prefix}/plan.json"]
    with pytest.raises(ReleaseLockedError, match=owner):
        planning.plan_release(*args, lock_owner="ctdc_annual_update/run_2", work_url=url)
    assert finish_run(plan).work_folder_removed is True
    assert emulator.objects() == []
    second = planning.plan_release(*args, lock_owner="ctdc_annual_update/run_2", work_url=url)
    finish_run(second)


# --- what the plan keeps, what logs show ---------------------------------------------------


def test_no_secret_in_the_plan_and_no_object_content_in_logs(
    s3_env, landing, tmp_path, monkeypatch, caplog
):
    """The plan (XCom, plan.json) holds the URL and no credential; with every logger at DEBUG,
    neither the secret key nor a pseudonym or linkage hash stored in the bucket is logged."""
    emulator = s3_env
    seen = spy_on_assemble(monkeypatch, emulator, tmp_path / "out")
    monkeypatch.setenv(storage.WORK_URL_ENV, emulator.url(PREFIX))
    caplog.set_level(logging.DEBUG)
    for name in ("botocore", "aiobotocore", "s3fs", "fsspec"):
        logging.getLogger(name).setLevel(logging.NOTSET)  # as a DEBUG deployment would have
    done = run(landing, tmp_path / "out", workers=1)  # in this process: its logs are captured

    plan = done.plan
    xcom = json.dumps(plan.model_dump(mode="json", exclude_none=True))
    assert emulator.secret not in xcom and emulator.key_id not in xcom
    assert json.loads(xcom)["work_dir"] == plan.work_dir
    hashes = set()
    for data in seen["private"].values():
        frame = pd.read_feather(io.BytesIO(data))
        for column in frame.columns:
            hashes |= {str(v) for v in frame[column].dropna() if len(str(v)) >= 16}
    assert len(hashes) > 40  # pseudonyms of both partners, iom's linkage keys
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "planned release 2025" in logged  # the run did log
    assert emulator.secret not in logged
    assert [h for h in hashes if h in logged] == []
    debug_from_clients = [
        r.name
        for r in caplog.records
        if r.levelno < logging.INFO and r.name.split(".")[0] in ("botocore", "aiobotocore", "s3fs")
    ]
    assert debug_from_clients == []  # storage clients stay at INFO (storage.quiet_storage_loggers)


# --- settings checked at plan time -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "retryable", "said"),
    [
        ("gs://ctdc-work/x", False, "needs the package gcsfs, which is not installed"),
        ("nosuchproto://ctdc-work/x", False, "unknown protocol 'nosuchproto'"),
        ("s3://AKIAPLANTED:s3cr3t@ctdc-work/x", False, "must not carry a user or password"),
        ("s3://ctdc-work/x?secret_access_key=s3cr3t", False, "must not carry a query string"),
        ("simplecache::s3://u:s3cr3t@ctdc-work/x", False, "must not carry a user or password"),
        ("s3://no-such-bucket/x", False, "bucket or container 'no-such-bucket'"),
    ],
)
def test_an_unusable_work_url_fails_the_plan_before_any_work(
    s3_env, landing, tmp_path, url, retryable, said
):
    out = tmp_path / "out"
    with pytest.raises(CtdcError) as err:
        planning.plan_release(str(landing), str(out), RELEASE, PARTNERS, work_url=url)
    message = str(err.value)
    assert said in message and "CTDC_WORK_URL" in message
    assert "s3cr3t" not in message and "AKIAPLANTED" not in message
    assert err.value.__cause__ is None
    assert is_infrastructure(err.value) is retryable
    assert not out.exists()  # failed before the out folder, its lock and work area
    assert s3_env.objects() == []  # and no bucket was made


def test_an_unreachable_store_is_an_infrastructure_error(s3_env, landing, tmp_path, monkeypatch):
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # refused
    s3fs.S3FileSystem.clear_instance_cache()
    out = tmp_path / "out"
    with pytest.raises(CtdcError) as err:
        planning.plan_release(
            str(landing), str(out), RELEASE, PARTNERS, work_url="s3://ctdc-work/x"
        )
    assert is_infrastructure(err.value)
    assert "cannot reach s3://ctdc-work/x (EndpointConnectionError)" in str(err.value)
    assert s3_env.secret not in str(err.value) and err.value.__cause__ is None
    assert not out.exists()


def test_missing_credentials_are_a_setting_error(s3_env, landing, tmp_path, monkeypatch):
    import s3fs

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(CtdcError) as err:
        planning.plan_release(
            str(landing), str(tmp_path / "out"), RELEASE, PARTNERS, work_url="s3://ctdc-work/x"
        )
    assert "NoCredentialsError" in str(err.value) and not is_infrastructure(err.value)


def test_two_out_folders_sharing_a_work_url_get_their_own_prefixes(tmp_path):
    one = storage.run_prefix("s3://b/w/", tmp_path / "prod", RELEASE)
    two = storage.run_prefix("s3://b/w", tmp_path / "staging", RELEASE)
    assert one != two and one.startswith("s3://b/w/") and one.endswith(f"/{RELEASE}")
    assert one == storage.run_prefix("s3://b/w", tmp_path / "x" / ".." / "prod", RELEASE)


def test_a_local_or_file_url_is_a_private_folder(tmp_path):
    assert storage.work_base(f"file://{tmp_path}/shared/") == str(tmp_path / "shared")
    assert storage.work_base(str(tmp_path / "shared")) == str(tmp_path / "shared")


# --- where credentials and the endpoint may come from ----------------------------------------

CONFIGURATIONS = {
    "botocore, service endpoint": lambda s3: {
        "AWS_ENDPOINT_URL_S3": s3.endpoint,
        "AWS_ACCESS_KEY_ID": s3.key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret,
    },
    "botocore, global endpoint": lambda s3: {
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": s3.key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret,
    },
    "fsspec": lambda s3: {
        "FSSPEC_S3_ENDPOINT_URL": s3.endpoint,
        "FSSPEC_S3_KEY": s3.key_id,
        "FSSPEC_S3_SECRET": s3.secret,
    },
}
ROUND_TRIP = """
import sys
import pandas as pd
from ctdc_harmonizer.run import storage
from ctdc_harmonizer.run.workdir import WorkDir
storage.check_reachable(sys.argv[1])
work = WorkDir(sys.argv[1] + "/probe").create()
work.partner("p").write_frame("f.parquet", pd.DataFrame({"a": [1, 2]}))
assert work.partner("p").read_frame("f.parquet")["a"].tolist() == [1, 2]
print("removed", work.remove())
"""


@pytest.mark.parametrize("configuration", sorted(CONFIGURATIONS))
def test_credentials_and_endpoint_from_the_standard_settings(s3_env, configuration):
    """What the README documents, checked with the installed botocore/s3fs/fsspec: each set
    of variables alone reaches the store (a fresh process: fsspec reads FSSPEC_* at import)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env |= {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_DEFAULT_REGION": "us-east-1"}
    env |= CONFIGURATIONS[configuration](s3_env)
    done = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, s3_env.url(PREFIX)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "removed True"
    assert s3_env.objects() == []


def test_the_command_line_reads_the_work_url_from_the_environment(
    landing, tmp_path, capsys, monkeypatch
):
    from ctdc_harmonizer import cli

    monkeypatch.setenv(storage.WORK_URL_ENV, "gs://ctdc-work/prefix")
    out = tmp_path / "out"
    argv = ["run", "--landing", str(landing), "--out", str(out), "--release", RELEASE]
    assert cli.main([*argv, "--partners", ",".join(PARTNERS)]) == 1
    err = capsys.readouterr().err
    assert "ctdc: error: the work storage setting ($CTDC_WORK_URL" in err
    assert "needs the package gcsfs" in err and "Traceback" not in err
    assert not out.exists()


def test_the_dag_param_work_wins_over_the_environment(s3_env, landing, tmp_path, monkeypatch):
    """The DAG's `plan_release` task passes its params to plan_scheduled_release: `work` names
    the store,
    empty means $CTDC_WORK_URL (and without it, the out folder)."""
    monkeypatch.setenv(storage.WORK_URL_ENV, s3_env.url("from-env"))
    args = (RELEASE, str(landing), str(tmp_path / "out"), PARTNERS, "2026-03-01")
    for work, prefix in ((s3_env.url("from-param"), "from-param/"), (None, "from-env/")):
        plan = planning.plan_scheduled_release(*args, lock_owner="dag/run", work=work)
        try:
            assert plan.work_dir.startswith(f"s3://{s3_env.bucket}/{prefix}")
            assert s3_env.objects(prefix)  # plan.json
        finally:
            finish_run(plan)
    monkeypatch.delenv(storage.WORK_URL_ENV)
    plan = planning.plan_scheduled_release(*args, lock_owner="dag/run", work="")
    finish_run(plan)
    assert plan.work_dir == str(tmp_path.resolve() / "out" / ".work" / RELEASE)
    assert s3_env.objects() == []
