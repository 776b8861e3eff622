"""The release folder and the warehouse load, published together.

The complete release folder is built aside (release/folder.py) in the run's private folder,
on the same file system as the out folder. `load_and_publish` loads the warehouse in one
transaction that records the folder's content hash (`folder_sha256` in the data_release row's
metadata), and only after the commit renames the folder into place. So a crash leaves either
the old release (folder and warehouse) or a new warehouse load whose hash the folder does not
match, which release/state.py (the plan step and `ctdc check`) detects and reports. A folder
holding part of a release never appears under its release name.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.columns import Outcome
from ctdc_harmonizer.fileio import read_json
from ctdc_harmonizer.release.folder import RECONCILIATION, check_replaceable, folder_digest
from ctdc_harmonizer.release.metadata import MARKER

log = logging.getLogger(__name__)


def swap_into_place(staging: Path, target: Path, aside: Path) -> None:
    """Rename the complete staged folder into place (same file system: atomic renames).

    The old release is renamed aside first (then deleted): between the two renames the
    release name is absent, never half-written."""
    if aside.exists():
        shutil.rmtree(aside)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        check_replaceable(target)
        os.rename(target, aside)
    os.rename(staging, target)
    shutil.rmtree(aside, ignore_errors=True)


def warehouse_batches(
    reconciliation: dict, partners: dict[str, tuple[str, str]]
) -> tuple[list[dict], list[dict]]:
    """The reporting entities (partners: name, datasource) and extract batches (files, with
    their counts)."""
    batches, entities = [], []
    for partner, entry in reconciliation["partners"].items():
        name, datasource = partners[partner]
        entities.append({"code": partner, "name": name, "datasource_type": datasource})
        for file, counts in entry["files"].items():
            batches.append(
                {
                    "partner": partner,
                    "file": file,
                    "sha256": counts["sha256"],
                    "rows_read": counts["rows_read"],
                    "rows_harmonized": counts[Outcome.HARMONIZED],
                    "rows_rejected": sum(counts[Outcome.REJECTED].values()),
                    "rows_excluded": sum(counts[Outcome.EXCLUDED].values()),
                    "rows_erased": counts[Outcome.ERASED],
                    "rows_duplicates_merged": counts[Outcome.DUPLICATES_MERGED],
                }
            )
    return batches, entities


def staged_metadata(staging: Path) -> dict:
    """The staged folder's metadata.json plus its content hash: what the warehouse records."""
    meta = read_json(staging / MARKER)
    meta["folder_sha256"] = folder_digest(staging)
    return meta


def load_and_publish(
    release: str,
    staging: Path,
    target: Path,
    aside: Path,
    combined: pd.DataFrame,
    url: str,
) -> dict:
    """Load the staged release into the warehouse (one transaction, recording the folder's
    content hash), then publish the folder. See the module docstring for crash behaviour."""
    from ctdc_harmonizer.warehouse import load_release

    recon = read_json(staging / RECONCILIATION)
    meta = staged_metadata(staging)
    partners = {code: (p["name"], p["datasource"]) for code, p in meta["partners"].items()}
    batches, entities = warehouse_batches(recon, partners)
    log.info("release %s: loading the warehouse", release)
    counts = load_release(url, release, combined, batches, entities, meta)
    swap_into_place(staging, target, aside)
    counts["folder_sha256"] = meta["folder_sha256"]
    return counts


class ConcurrentLoad:
    """The warehouse load of a release, started before its folder is built (command line).

    A thread opens the transaction and loads the rows while another process builds the
    folder; `publish` then hands it the folder's metadata (with its content hash), the
    thread records it and commits, and only then is the folder renamed into place: the same
    guarantees as `load_and_publish`, without waiting for one before the other. The thread
    owns its database connection from start to end (SQLite's rule), and spends most of its
    time in the database driver, outside the GIL.
    """

    def __init__(
        self, url: str, release: str, combined: Callable[[], pd.DataFrame], batches, entities
    ):
        self._metadata: queue.Queue[dict | None] = queue.Queue(maxsize=1)
        self._result: dict | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._load,
            args=(url, release, combined, batches, entities),
            name=f"load-{release}",
            daemon=True,
        )
        self._thread.start()

    def _load(self, url: str, release: str, combined, batches, entities) -> None:
        from ctdc_harmonizer.warehouse.loader import begin_load

        try:  # the frame is read here, so that only the load holds it
            pending = begin_load(url, release, combined(), batches, entities)
        except BaseException as exc:  # handed to the main thread by publish()
            self._error = exc
            return
        metadata = self._metadata.get()
        if metadata is None:  # the folder could not be built: nothing is committed
            pending.rollback()
            return
        try:
            self._result = pending.commit(metadata)
        except BaseException as exc:
            self._error = exc

    def publish(self, release: str, staging: Path, target: Path, aside: Path) -> dict:
        """Record the built folder's metadata, commit, then rename the folder into place."""
        meta = staged_metadata(staging)
        self._metadata.put(meta)
        self._thread.join()
        if self._error is not None:
            raise self._error
        swap_into_place(staging, target, aside)
        return {**self._result, "folder_sha256": meta["folder_sha256"]}

    def abandon(self) -> None:
        """The folder was not built: roll the load back (nothing in the warehouse changes)."""
        if self._thread.is_alive():
            self._metadata.put(None)
            self._thread.join()
