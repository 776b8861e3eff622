"""`ctdc run` keeps its promises on hostile input, broken out folders, crashes and rivals.

Every test plants invented identifiers and asserts they reach neither stdout/stderr nor any
file under the out folder. The tiny CSV partner of tests/support/tiny_partner.py keeps runs fast.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctdc_harmonizer import cli
from ctdc_harmonizer.release import consistency as release_state
from ctdc_harmonizer.release import folder as release_folder
from ctdc_harmonizer.run import locks
from ctdc_harmonizer.run import plan as planning
from ctdc_harmonizer.run.finish import finish_run
from support.tiny_partner import PARTNER_YAML, row, write_extract, write_partner

NAMES = ["Zarqa Plantedname", "Oyelaran Fictitia", "Brunhild Madeupsdottir"]
CASE_ID = "CASE-PLANT-0042"
RELEASE = "2025"


def strict_yaml() -> str:
    return PARTNER_YAML.replace("threshold: 1.0", "threshold: 0.0")


def good_rows(n: int = 20) -> list[dict]:
    return [row(case_id=f"C{i}", full_name=NAMES[i % 3], gender="F") for i in range(n)]


def setup(tmp_path: Path, rows: list[dict], **mapping_files: str) -> Path:
    write_partner(tmp_path, **mapping_files)
    write_extract(tmp_path, rows)
    return tmp_path


def argv(tmp_path: Path, *extra: str, release: str = RELEASE) -> list[str]:
    return [
        "run",
        "--landing",
        str(tmp_path / "landing"),
        "--out",
        str(tmp_path / "out"),
        "--release",
        release,
        "--mappings",
        str(tmp_path / "mappings"),
        "--warehouse",
        f"sqlite:///{tmp_path / 'out' / 'warehouse.sqlite'}",
        *extra,
    ]


def leaked(text: str) -> list[str]:
    folded = text.casefold()
    return [v for v in [*NAMES, CASE_ID] if v.casefold() in folded]


def out_text(out: Path) -> str:
    files = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    return "\n".join(p.read_bytes().decode("utf-8", errors="ignore") for p in files)


def assert_clean(tmp_path: Path, captured) -> None:
    assert leaked(captured.out + captured.err) == []
    assert leaked(out_text(tmp_path / "out")) == []
    assert "Traceback" not in captured.err


def assert_no_run_left(tmp_path: Path) -> None:
    """A failed run: no work folder, no release folder, the lock free."""
    out = tmp_path / "out"
    assert not (out / ".work" / RELEASE).exists(), "work folder of a failed run left behind"
    assert not list(out.rglob("unmapped.csv"))
    lock = locks.lock_path(out, RELEASE)
    assert not lock.exists() or lock.read_text() == ""


# --- values in messages -------------------------------------------------------------------


def test_names_shifted_into_a_coded_field_fail_the_gate_without_values(tmp_path, capsys):
    # The name column pasted one to the right: the coded field `gender` holds the names.
    rows = [row(case_id=f"C{i}", gender=NAMES[i % 3]) for i in range(30)]
    setup(tmp_path, rows, **{"partner.yaml": strict_yaml()})
    assert cli.main(argv(tmp_path)) == 1
    captured = capsys.readouterr()
    assert "partner 'tiny'" in captured.err and "gender: 30 of 30 rows (100.00%)" in captured.err
    assert "ctdc unmapped --partner tiny" in captured.err
    assert_clean(tmp_path, captured)
    assert_no_run_left(tmp_path)
    assert not (tmp_path / "out" / RELEASE).exists()

    # The restricted report for the data officer: the shifted column's values are withheld.
    report = tmp_path / "restricted" / "unmapped.csv"
    code = cli.main(
        [
            "unmapped",
            "--landing",
            str(tmp_path / "landing"),
            "--partner",
            "tiny",
            "--out",
            str(report),
            "--mappings",
            str(tmp_path / "mappings"),
        ]
    )
    assert code == 0
    assert leaked(report.read_text() + capsys.readouterr().out) == []
    assert "3 distinct value(s) withheld: column looks shifted or free text" in report.read_text()
    assert stat.S_IMODE(report.stat().st_mode) == 0o600


def test_unexpected_exception_is_reported_by_type_only(tmp_path, capsys, monkeypatch):
    setup(tmp_path, good_rows())

    def broken(*args):
        raise KeyError(f"{NAMES[0]} {CASE_ID}")

    monkeypatch.setattr("ctdc_harmonizer.release.reconcile.reconcile", broken)
    assert cli.main(argv(tmp_path)) == 1
    captured = capsys.readouterr()
    assert "ctdc: error: unexpected KeyError" in captured.err
    assert_clean(tmp_path, captured)
    assert_no_run_left(tmp_path)


def test_formula_values_are_escaped_in_reports(tmp_path):
    formula = '=HYPERLINK("http://evil.example","x")'
    rows = [row(case_id=f"C{i}", gender=formula if i < 5 else "F") for i in range(20)]
    setup(tmp_path, rows)  # threshold 1.0: unknown values are tolerated and reported
    assert cli.main(argv(tmp_path)) == 0
    text = (tmp_path / "out" / RELEASE / "unmapped.csv").read_text()
    assert "'=HYPERLINK" in text
    assert not [line for line in text.splitlines() if line.split(",")[2:3] == ["=HYPERLINK("]]
    # Only the restricted report may hold a source value: coverage and value issues count.
    for name in ("coverage.json", "value_issues.csv", "rejects.csv", "metadata.json"):
        assert "HYPERLINK" not in (tmp_path / "out" / RELEASE / name).read_text(), name


# --- the out folder and the landing --------------------------------------------------------


def test_out_folder_that_is_a_file(tmp_path, capsys):
    setup(tmp_path, good_rows())
    (tmp_path / "out").write_text("not a folder")
    assert cli.main(argv(tmp_path)) == 1
    err = capsys.readouterr().err
    assert f"ctdc: error: out folder problem at '{tmp_path / 'out'}': ENOTDIR" in err
    assert "Traceback" not in err


def test_read_only_out_folder(tmp_path, capsys, monkeypatch):
    # Tests may run as root, for whom chmod does not bite: the OS error is simulated.
    setup(tmp_path, good_rows())
    real = Path.write_bytes

    def refuse(self, data):
        if ".probe-" in self.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse)
    assert cli.main(argv(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "ctdc: error: out folder problem at" in err and "EACCES (Permission denied)" in err


def test_disk_error_during_the_run_names_path_and_errno(tmp_path, capsys, monkeypatch):
    setup(tmp_path, good_rows())

    def full_disk(content, staging, codebook):
        raise OSError(errno.ENOSPC, "No space left on device", str(staging / "x.csv"))

    monkeypatch.setattr(release_folder, "build_release", full_disk)
    assert cli.main(argv(tmp_path)) == 1
    captured = capsys.readouterr()
    assert "ENOSPC (No space left on device)" in captured.err
    assert_clean(tmp_path, captured)
    assert_no_run_left(tmp_path)
    monkeypatch.undo()
    assert cli.main(argv(tmp_path)) == 0  # the lock was given back


@pytest.mark.parametrize("label", ["x" * 65, "a/b", "a b", "ünï", "..", "_x", ".hidden", "a\nb"])
def test_release_labels_are_validated(tmp_path, capsys, label):
    setup(tmp_path, good_rows())
    assert cli.main(argv(tmp_path, release=label)) == 1
    err = capsys.readouterr().err
    assert "ctdc: error: release label must be a plain name" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_unmapped_partner_folder_is_reported_not_read(tmp_path, capsys):
    setup(tmp_path, good_rows())
    stray = tmp_path / "landing" / "mystery_ngo"
    stray.mkdir()
    (stray / "cases.csv").write_text(f"name\n{NAMES[0]}\n")
    assert cli.main(argv(tmp_path)) == 0
    captured = capsys.readouterr()
    assert "not read (no mapping): mystery_ngo" in captured.out
    meta = json.loads((tmp_path / "out" / RELEASE / "metadata.json").read_text())
    assert meta["unmapped_partner_folders"] == ["mystery_ngo"]
    assert_clean(tmp_path, captured)


def test_work_folder_is_private(tmp_path):
    setup(tmp_path, good_rows())
    plan = planning.plan_release(
        str(tmp_path / "landing"),
        str(tmp_path / "out"),
        RELEASE,
        mappings=str(tmp_path / "mappings"),
    )
    try:
        for folder in (tmp_path / "out" / ".work", Path(plan.work_dir)):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        finish_run(plan)
    assert not Path(plan.work_dir).exists()


# --- locks ------------------------------------------------------------------------------------


def test_a_second_writer_of_the_same_release_fails_at_once(tmp_path, capsys):
    setup(tmp_path, good_rows())
    (tmp_path / "out").mkdir()
    held = locks.acquire(tmp_path / "out", planning.STORE_LOCK)
    # Its own open file: flock then conflicts as with another process.
    holder_fd = locks._held.pop(held.path)
    try:
        started = time.monotonic()
        assert cli.main(argv(tmp_path)) == 1
        assert time.monotonic() - started < 5
        err = capsys.readouterr().err
        assert "the store of this out folder is being updated by another run (process" in err
        # another release is blocked too: one run at a time builds on the store
        assert cli.main(argv(tmp_path, release="2026")) == 1
    finally:
        os.close(holder_fd)
    assert cli.main(argv(tmp_path)) == 0  # the holder has gone


def test_an_airflow_lease_blocks_other_runs_until_released(tmp_path, capsys):
    setup(tmp_path, good_rows())
    (tmp_path / "out").mkdir()
    lease = locks.acquire(
        tmp_path / "out",
        planning.STORE_LOCK,
        lease_owner="ctdc_annual_update/run_a",
        release="2026",
    )
    started = time.monotonic()
    assert cli.main(argv(tmp_path)) == 1
    assert time.monotonic() - started < 5  # refused at once, nothing waits
    err = capsys.readouterr().err
    assert "release 2026 is running in Airflow run 'ctdc_annual_update/run_a'" in err
    # The approval step marks the lease: a rival run says what it waits for.
    assert locks.mark(lease, locks.AWAITING_APPROVAL)
    assert cli.main(argv(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "release 2026 is awaiting approval in Airflow run 'ctdc_annual_update/run_a'" in err
    assert "Answer its approval" in err
    assert locks.holder(tmp_path / "out", planning.STORE_LOCK)["state"] == "awaiting approval"
    # The same DAG run may plan again (a cleared plan task), another may not.
    again = locks.acquire(
        tmp_path / "out", planning.STORE_LOCK, lease_owner="ctdc_annual_update/run_a"
    )
    locks.check(again, RELEASE)
    locks.release(lease)
    with pytest.raises(Exception, match="no longer holds the store's lock"):
        locks.check(lease, RELEASE)
    assert not locks.mark(lease, locks.RUNNING)  # not this run's lease any more
    assert cli.main(argv(tmp_path)) == 0


# --- crash between the warehouse commit and the publish ----------------------------------------


def test_crash_after_the_warehouse_commit_is_detected_and_repaired(tmp_path, capsys, monkeypatch):
    setup(tmp_path, good_rows(20))
    assert cli.main(argv(tmp_path)) == 0
    old = release_folder.folder_digest(tmp_path / "out" / RELEASE)
    write_extract(tmp_path, good_rows(24))  # changed input

    def crash(*args):
        raise OSError(errno.EIO, "Input/output error", str(tmp_path / "out" / RELEASE))

    monkeypatch.setattr(release_folder, "swap_into_place", crash)
    assert cli.main(argv(tmp_path)) == 1
    monkeypatch.undo()
    assert release_folder.folder_digest(tmp_path / "out" / RELEASE) == old  # old folder intact
    capsys.readouterr()
    check = ["check", "--out", str(tmp_path / "out")]
    assert cli.main(check) == 1
    captured = capsys.readouterr()
    assert f"release {RELEASE}: mismatch" in captured.out
    plan = planning.plan_release(
        str(tmp_path / "landing"),
        str(tmp_path / "out"),
        RELEASE,
        mappings=str(tmp_path / "mappings"),
    )
    finish_run(plan)
    assert plan.previous_release_state == "mismatch"
    assert cli.main(argv(tmp_path)) == 0  # the rerun replaces both
    assert cli.main(check) == 0
    assert f"release {RELEASE}: consistent" in capsys.readouterr().out


# --- real processes: a rival run, a SIGKILL mid-load ----------------------------------------


def start(tmp_path: Path, warehouse: Path, release: str = RELEASE) -> subprocess.Popen:
    args = argv(tmp_path, release=release)
    args[args.index("--warehouse") + 1] = f"sqlite:///{warehouse}?timeout=120"
    return subprocess.Popen(
        [sys.executable, "-m", "ctdc_harmonizer.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_load(process: subprocess.Popen) -> str:
    """Read the run's log until it starts loading the warehouse."""
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "store: committing release" in line:
            return "".join(seen)
    raise AssertionError("the run ended before loading the warehouse:\n" + "".join(seen))


def hold_database(path: Path) -> sqlite3.Connection:
    """A write transaction on the warehouse: readers (the plan's check) pass, a loader's
    first write blocks until it ends."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_two_runs_of_one_release_at_once(tmp_path):
    setup(tmp_path, good_rows())
    warehouse = tmp_path / "out" / "warehouse.sqlite"
    assert cli.main(argv(tmp_path)) == 0  # the store exists
    write_extract(tmp_path, good_rows(24))  # a new delivery: the next runs have work
    blocker = hold_database(warehouse)
    first = start(tmp_path, warehouse)
    try:
        log = wait_for_load(first)  # the first run is inside its warehouse load, lock held
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "ctdc_harmonizer.cli", *argv(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert "the store of this out folder is being updated by another run" in second.stderr
        assert "Traceback" not in second.stderr
        assert time.monotonic() - started < 60  # fails at once (process start-up aside)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-2000:]
    release = tmp_path / "out" / RELEASE
    expected = {"harmonized.csv", "harmonized.parquet", "metadata.json", "unmapped.csv"}
    assert expected <= {p.name for p in release.iterdir()}
    assert release_state.release_states(tmp_path / "out", f"sqlite:///{warehouse}") == {
        RELEASE: {"state": "consistent"}
    }
    assert leaked(log + out + err + second.stdout + second.stderr) == []


def test_sigkill_during_the_warehouse_load_keeps_the_old_release(tmp_path):
    setup(tmp_path, good_rows(20))
    warehouse = tmp_path / "out" / "warehouse.sqlite"
    assert cli.main(argv(tmp_path)) == 0
    old = release_folder.folder_digest(tmp_path / "out" / RELEASE)
    write_extract(tmp_path, good_rows(24))  # changed input for the rerun

    blocker = hold_database(warehouse)
    run = start(tmp_path, warehouse)
    try:
        wait_for_load(run)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert run.returncode == -signal.SIGKILL
    # Old folder, old warehouse rows: consistent, nothing half-published.
    assert release_folder.folder_digest(tmp_path / "out" / RELEASE) == old
    url = f"sqlite:///{warehouse}"
    assert release_state.release_states(tmp_path / "out", url) == {RELEASE: {"state": "consistent"}}
    with sqlite3.connect(warehouse) as conn:
        rows = conn.execute("SELECT row_count FROM data_release").fetchall()
    assert rows == [(20,)]
    # The killed run's flock died with it: the next run starts, and replaces both.
    assert cli.main(argv(tmp_path)) == 0
    assert release_state.release_states(tmp_path / "out", url) == {RELEASE: {"state": "consistent"}}
    assert not (tmp_path / "out" / ".work" / RELEASE).exists()


def test_check_reports_a_release_missing_on_either_side(tmp_path, capsys):
    """A crash between renaming the old folder aside and the new one in leaves the warehouse
    ahead of the folder; a folder copied in by hand is not in the warehouse."""
    import shutil

    setup(tmp_path, good_rows())
    assert cli.main(argv(tmp_path)) == 0
    out = tmp_path / "out"
    shutil.copytree(out / RELEASE, out / "copied-by-hand")
    shutil.rmtree(out / RELEASE)
    capsys.readouterr()
    assert cli.main(["check", "--out", str(out)]) == 1
    printed = capsys.readouterr()
    assert f"release {RELEASE}: warehouse_only" in printed.out
    assert "release copied-by-hand: folder_only" in printed.out
    assert "ctdc: error: 2 release(s)" in printed.err


def test_a_dag_run_leases_its_release_across_tasks(tmp_path):
    """plan (one task process) leases the release for the DAG run; the run's later tasks
    still own it; another DAG run is refused until the first one's teardown frees it."""
    from ctdc_harmonizer import samples
    from ctdc_harmonizer.errors import ReleaseLockedError

    samples.generate("case_management", tmp_path / "landing", n=20, seed=1)
    args = ("r1", str(tmp_path / "landing"), str(tmp_path / "out"), [], "2026-03-01")
    plan = planning.plan_scheduled_release(*args, lock_owner="ctdc_annual_update/run_1")
    locks.check(plan.lock, "r1")  # what the steps that write do first
    with pytest.raises(ReleaseLockedError, match="ctdc_annual_update/run_1"):
        planning.plan_scheduled_release(*args, lock_owner="ctdc_annual_update/run_2")
    assert Path(plan.work_dir).is_dir()  # the refused run did not touch the first one's
    assert finish_run(plan).work_folder_removed is True
    second = planning.plan_scheduled_release(*args, lock_owner="ctdc_annual_update/run_2")
    finish_run(second)
