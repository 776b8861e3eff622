"""One writer per out folder's store: `<out>/.locks/store.lock` (run/plan.py's STORE_LOCK).

A run builds on the store as it was planned and commits its release on top: two runs at once
would each plan against a store the other is about to change, so one waits for nobody and the
second is refused at once, naming the run that holds the store.

Two kinds of holder, one file:

- a process (`ctdc run`): holds an exclusive `flock` on the file for its whole run. The
  kernel drops it when the process ends, however it ends (SIGKILL included), so a crashed
  run never blocks the next one;
- an Airflow DAG run (a *lease*): its tasks are separate processes, so no process can hold
  the flock for the run. The `plan` task writes the run's id, its release and its state
  ("running") into the file under the flock (check-and-write is atomic); the approval step marks
  it "awaiting approval" while it waits; every publishing step checks it still owns the lease,
  and the run's teardown task clears it, whether the run succeeded or failed. A lease left by a
  deployment that died without running its teardown is reported with its owner and start
  time; the data team deletes the file once they know that run is gone.

A second writer fails at once with a `ReleaseLockedError` naming the run that holds the store,
its release and its state ("release 2026 is awaiting approval in Airflow run ..."); nobody
waits, nothing queues behind a run that may wait days for its approval.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ctdc_harmonizer.errors import ReleaseLockedError

LOCK_FOLDER = ".locks"
PROCESS, LEASE = "process", "lease"
RUNNING, AWAITING_APPROVAL = "running", "awaiting approval"  # a lease's states
_held: dict[str, int] = {}  # lock path -> open fd holding the flock (process locks)


class LockInfo(BaseModel):
    """A lock a run holds: its file, its owner (a process or a DAG run) and its kind."""

    model_config = ConfigDict(frozen=True)

    path: str
    owner: str
    kind: Literal["process", "lease"]


def lock_path(out: str | Path, name: str) -> Path:
    return Path(out) / LOCK_FOLDER / f"{name}.lock"


def holder(out: str | Path, name: str) -> dict:
    """Who holds the lock `name` of `out` as its file says (owner, kind, since), or {}. A
    process holder's entry may be stale (its flock died with it); a lease's is not."""
    path = lock_path(out, name)
    try:
        content = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def process_owner() -> str:
    return f"process {os.getpid()} on {socket.gethostname()}"


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}


def _write(fd: int, content: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(content, sort_keys=True).encode())
    os.fsync(fd)


def _open_locked(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        who = holder(path.parent.parent, path.stem)
        by = f" ({who['owner']}, since {who.get('since')})" if who.get("owner") else ""
        raise ReleaseLockedError(
            f"the store of this out folder is being updated by another run{by} (lock {path}); "
            "not starting a second one"
        ) from None
    return fd


def lease_conflict(current: dict, path: Path) -> str:
    """Why a second run may not start: the run holding the lease, its release and state."""
    what = f"release {current['release']}" if current.get("release") else "a release"
    state = current.get("state") or "running"
    return (
        f"{what} is {state} in Airflow run '{current.get('owner')}' (since "
        f"{current.get('since')}; lock {path}): this run does not start a second one. "
        f"{'Answer its approval, or wait' if state == AWAITING_APPROVAL else 'Wait'} for it "
        "to end, then trigger again; if that run has ended without its teardown, delete the "
        "lock file"
    )


def acquire(
    out: str | Path, name: str, lease_owner: str | None = None, release: str | None = None
) -> LockInfo:
    """Take the lock `name` of `out`: a flock held by this process (lease_owner None) or an
    Airflow lease for `lease_owner` (a DAG run id) making `release`."""
    path = lock_path(out, name)
    fd = _open_locked(path)
    try:
        current = _read(fd)
        owner = lease_owner or process_owner()
        # A process holder's flock died with it: its file content is stale. A lease is not.
        if current.get("kind") == LEASE and current.get("owner") != owner:
            raise ReleaseLockedError(lease_conflict(current, path))
        kind = LEASE if lease_owner else PROCESS
        since = datetime.now(UTC).isoformat(timespec="seconds")
        entry = {"owner": owner, "kind": kind, "since": since}
        if kind == LEASE:
            entry |= {"release": release, "state": RUNNING}
        _write(fd, entry)
    except BaseException:
        os.close(fd)
        raise
    if kind == LEASE:
        os.close(fd)  # the lease lives in the file; the flock only made check-and-write atomic
    else:
        _held[str(path)] = fd
    return LockInfo(path=str(path), owner=owner, kind=kind)


def check(lock: LockInfo, release: str) -> None:
    """The run (making `release`) still owns its lock (a step about to publish checks this
    first)."""
    path = Path(lock.path)
    try:
        content = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        content = {}
    if content.get("owner") != lock.owner:
        raise ReleaseLockedError(
            f"release '{release}': this run no longer holds the store's lock ({path}); not "
            "publishing"
        )


def mark(lock: LockInfo, state: str) -> bool:
    """Record the lease's state (e.g. AWAITING_APPROVAL), so that a rival run's refusal says
    what it waits for. False (nothing written) when the lease is not this run's any more."""
    path = Path(lock.path)
    if lock.kind != LEASE or not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a short check-and-write, like acquire's
        current = _read(fd)
        if current.get("owner") != lock.owner:
            return False
        _write(fd, current | {"state": state})
        return True
    finally:
        os.close(fd)


def release(lock: LockInfo) -> None:
    """Give the lock back (idempotent; a lock now owned by someone else is left alone)."""
    path = Path(lock.path)
    fd = _held.pop(str(path), None)
    if fd is None:
        if not path.exists():
            return
        try:
            fd = os.open(path, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a process run holds it now: not ours any more
            os.close(fd)
            return
    try:
        if _read(fd).get("owner") == lock.owner:
            # Emptied, not deleted: unlinking a flocked file lets two runs lock two inodes.
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
