"""Bad-input corpus through the real `ctdc` binary: exit codes and stderr of the process,
unreadable files (a run as an unprivileged user), two concurrent runs of one release, and a
run killed with SIGKILL during the warehouse load followed by a rerun.

Marked `corpus_process`: each case starts one to three interpreter processes.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support.corpus import (
    CTDC_BIN,
    IOM_FILE,
    NAME,
    Case,
    CsvTable,
    Env,
    RunResult,
    argv_for,
    check_no_half_release,
    check_promises,
    line,
    new_env,
    release_is_complete,
    run_in_process,
    run_subprocess,
)

pytestmark = pytest.mark.skipif(not CTDC_BIN.exists(), reason="needs .venv/bin/ctdc")
P = "iom"
NOBODY = 65534


def too_many_fields(env: Env) -> None:
    path = env.path(P, IOM_FILE)
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[7] += f',"{env.plant(NAME)}"'
    path.write_text("\n".join(lines), encoding="utf-8")


def out_is_a_file(env: Env) -> None:
    env.out.write_text("not a folder\n", encoding="utf-8")


def overlong_label(env: Env) -> None:
    env.release = "ctdc-2025-" + "r" * 290


BINARY_CASES = [
    Case(
        id="binary-too-many-fields",
        partner=P,
        mutate=too_many_fields,
        exit=1,
        names=[f"'{P}'", IOM_FILE, line(8)],
        promise="the real binary: located error, exit 1",
    ),
    Case(
        id="binary-out-is-a-file",
        partner=P,
        mutate=out_is_a_file,
        exit=1,
        promise="the real binary: out is a file",
    ),
    Case(
        id="binary-overlong-release",
        partner=P,
        mutate=overlong_label,
        exit=1,
        promise="the real binary: long label",
    ),
]


@pytest.mark.corpus_process
@pytest.mark.parametrize("case", BINARY_CASES, ids=[c.id for c in BINARY_CASES])
def test_binary(case, corpus_env):
    env = corpus_env(case)
    case.mutate(env)
    check_promises(case, run_subprocess(env))


# --- unreadable files: the run as an unprivileged user -----------------------------------------


@pytest.fixture
def open_root(pristine_landing):
    """A case folder an unprivileged user can enter (pytest's tmp folders are root-only)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as an unprivileged user")
    root = Path(tempfile.mkdtemp(prefix="ctdc-corpus-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def unreadable(name: str):
    def mutate(env: Env) -> None:
        for folder, _, _ in os.walk(env.landing):
            Path(folder).chmod(0o755)
        env.path(P, name).chmod(0o000)

    return mutate


UNREADABLE_CASES = [
    Case(
        id="unreadable-extract",
        partner=P,
        mutate=unreadable(IOM_FILE),
        exit=1,
        names=[f"'{P}'", IOM_FILE],
        promise="unreadable extract: ctdc error naming the file",
    ),
    Case(
        id="unreadable-withdrawals",
        partner=P,
        mutate=unreadable("withdrawals.csv"),
        exit=1,
        names=[f"'{P}'", "withdrawals.csv"],
        promise="unreadable withdrawals: ctdc error, never skipped",
    ),
]


@pytest.mark.corpus_process
@pytest.mark.parametrize("case", UNREADABLE_CASES, ids=[c.id for c in UNREADABLE_CASES])
def test_unreadable(case, pristine_landing, open_root):
    env = new_env(pristine_landing, open_root / "case", case)
    env.root.chmod(0o755)
    env.landing.chmod(0o755)
    env.out.mkdir(mode=0o777)
    env.out.chmod(0o777)
    case.mutate(env)
    home = env.root / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    result = run_subprocess(env, user=NOBODY, extra_env={"HOME": str(home)})
    check_promises(case, result)


# --- two concurrent runs of the same release into the same out folder -------------------------


def warehouse_rows(out: Path, release: str) -> int | None:
    path = out / "warehouse.sqlite"
    if not path.exists():
        return None
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (count,) = connection.execute(
            "select count(*) from ctdc_release_v3 where release_label = ?", (release,)
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return count


def harmonized_rows(folder: Path) -> int:
    with (folder / "harmonized.csv").open(encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def start(env: Env) -> subprocess.Popen:
    return subprocess.Popen(
        [str(CTDC_BIN), *argv_for(env)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


LOCKED = re.compile(r"lock|already running|in progress|another run|busy|concurrent", re.I)


@pytest.mark.corpus_process
def test_two_concurrent_runs_of_one_release(corpus_env):
    """The second run fails at once with a clear message; the finished release is complete
    and agrees with the warehouse."""
    case = Case(
        id="concurrent-same-release", partner="case_management", mutate=lambda env: None, exit=None
    )
    env = corpus_env(case)
    first, second = start(env), start(env)
    finished = {}
    outputs = {}
    deadline = time.monotonic() + 300
    while len(finished) < 2 and time.monotonic() < deadline:
        for name, proc in (("first", first), ("second", second)):
            if name not in finished and proc.poll() is not None:
                finished[name] = time.monotonic()
                outputs[name] = proc.communicate()
        time.sleep(0.05)
    codes = {"first": first.returncode, "second": second.returncode}
    assert sorted(codes.values()) == [0, 1], f"exit codes {codes}: both ran the same release"
    loser = next(n for n, c in codes.items() if c == 1)
    winner = next(n for n, c in codes.items() if c == 0)
    for name in ("first", "second"):
        out, err = outputs[name]
        result = RunResult(env, codes[name], out, err, "", None)
        check_promises(
            Case(id=f"concurrent-{name}", partner=case.partner, mutate=case.mutate, exit=None),
            result,
        )
    assert LOCKED.search(outputs[loser][1]), "the refused run does not say another run holds it"
    assert finished[loser] <= finished[winner], "the refused run did not fail fast"
    folder = env.out / env.release
    assert release_is_complete(folder)
    check_no_half_release(folder)
    assert warehouse_rows(env.out, env.release) == harmonized_rows(folder)


# --- SIGKILL during the warehouse load, then a rerun --------------------------------------------


def kill_when(proc: subprocess.Popen, out: Path, release: str, point: str) -> bool:
    """SIGKILL as soon as the warehouse (point "warehouse") or the published release folder
    (point "release-folder") starts to change."""
    watched = (
        [out / "warehouse.sqlite"]
        if point == "warehouse"
        else [out / release / "metadata.json", out / release / "harmonized.csv"]
    )
    journals = [out / f"warehouse.sqlite{s}" for s in ("-journal", "-wal")]

    def stamps() -> list:
        found = []
        for path in watched:
            try:
                found.append(path.stat().st_mtime_ns)
            except OSError:
                found.append(None)
        return found

    before = stamps()
    while proc.poll() is None:
        journal = point == "warehouse" and any(j.exists() for j in journals)
        if journal or stamps() != before:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    return False


MISMATCH = re.compile(
    r"mismatch|inconsisten|disagree|incomplete|interrupted|out of (sync|step)|not match", re.I
)


@pytest.mark.corpus_process
@pytest.mark.parametrize("point", ["warehouse", "release-folder"])
def test_killed_mid_run_then_rerun(point, corpus_env, capsys, caplog):
    """A rerun with changed input is killed during the load: no release folder looks complete
    without being so; the release and the warehouse agree, or the next run says they do not.
    The first run and the rerun are in-process (speed); the killed run is the real binary."""
    case = Case(id="kill-mid-load", partner=P, mutate=lambda env: None, exit=None)
    env = corpus_env(case)
    first = run_in_process(env, capsys, caplog)
    assert first.code == 0, first.stderr[-300:]
    path = env.path(P, IOM_FILE)
    t = CsvTable(path)
    t.rows = t.rows[:-5]  # a changed delivery: 5 records fewer (within the retirement guard)
    t.write()
    proc = start(env)
    killed = kill_when(proc, env.out, env.release, point)
    assert killed, f"the run ended before the {point} step could be interrupted"
    folder = env.out / env.release
    check_no_half_release(folder)
    agree = release_is_complete(folder) and warehouse_rows(env.out, env.release) == (
        harmonized_rows(folder)
    )
    rerun = run_in_process(env, capsys, caplog)
    check_promises(Case(id="kill-rerun", partner=P, mutate=case.mutate, exit=None), rerun)
    if not agree:
        assert MISMATCH.search(rerun.stdout + rerun.stderr), (
            "release folder and warehouse disagreed after the kill and the rerun did not say so"
        )
    if rerun.code == 0:
        assert release_is_complete(folder), "the rerun exited 0 without a complete release"
        assert warehouse_rows(env.out, env.release) == harmonized_rows(folder)
        assert harmonized_rows(folder) < harmonized_rows_before(first)


def harmonized_rows_before(first: RunResult) -> int:
    match = re.search(r"(\d+) records in ", first.stdout)
    assert match, "the first run did not report its row count"
    return int(match.group(1))
