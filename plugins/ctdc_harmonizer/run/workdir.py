"""The run's private work folder: it owns every intermediate file, its name and its format.

In the spirit of Dagster's IO manager: a step asks its `WorkDir` (or a partner's `PartnerWork`)
for a frame or a report by what it is, never by a file name, so a new intermediate is one
property here. Frames are Arrow IPC (`.arrow`; the synthesis's few are Parquet), small
reports JSON or CSV. Nothing in here is a release: the folder holds de-identified rows with
pseudonyms and linkage keys, is readable by the pipeline's user only (local folders are
created 0700) and is deleted when the run ends, failed or not.

The root is a local path by default (`<out>/.work/<release>`) or any fsspec URL (e.g.
`s3://bucket/ctdc-work/<out id>/<release>`, through universal_pathlib, the library under
Airflow's `ObjectStoragePath`), so that partner chains running on different workers share their
intermediates (run/storage.py checks the URL). On a remote store every read, write and delete
goes through `storage.guarded`: a failure becomes a value-free error naming the object, retried
when the store was unreachable; nothing is ever created on an object store but the objects
themselves (no bucket). The release folder itself is always built on the out folder's file
system: publishing it is an atomic rename there (release/folder.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upath import UPath

from ctdc_harmonizer.fileio import named_os_errors, private_folder
from ctdc_harmonizer.run import storage

if TYPE_CHECKING:  # frames are read and written by the steps that import pandas
    import pandas as pd

# Intermediates a run writes and reads back at once: Arrow IPC, which costs less than Parquet's
# encoding and decoding (a 250k-row staged frame: ~0.5 s of CPU against ~0.75 s). Always
# compressed, lz4 on a local disk (fast) and zstd on an object store (small): each buffer is
# then read into its own allocation, so a column kept from a frame keeps only itself alive
# (read uncompressed, every column of a frame shares one buffer as large as the file).
ARROW_SUFFIX = ".arrow"


def _is_local(path: UPath) -> bool:
    return isinstance(path, Path)


def _is_arrow(name: str) -> bool:
    return name.endswith(ARROW_SUFFIX)


def _write_ipc(frame: pd.DataFrame, sink: Any, compression: str) -> None:
    """Arrow IPC (Feather v2): the same Arrow table, with its pandas metadata, that Parquet
    would encode, so a frame reads back with the same dtypes."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)


def _ipc_bytes(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    _write_ipc(frame, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


class _Folder:
    """Typed reads and writes under one folder, local or remote."""

    def __init__(self, root: str | Path | UPath):
        self.root = root if isinstance(root, UPath) else UPath(root)
        self.local = _is_local(self.root)
        if not self.local:
            storage.quiet_storage_loggers()

    def path(self, name: str) -> UPath:
        return self.root / name

    @contextlib.contextmanager
    def _io(self, doing: str, name: str = "") -> Iterator[None]:
        """Local: OS errors as they are (safety.describe names path and errno). Remote: a
        classified, value-free storage error; and no cached listing, since other workers
        write into the same prefix (s3fs would answer "not found" from a stale listing)."""
        if self.local:
            with named_os_errors(self.path(name) if name else self.root):
                yield
            return
        with storage.guarded(doing, str(self.path(name)) if name else str(self.root)):
            self.root.fs.invalidate_cache()
            yield

    def _make(self) -> None:
        """Create the folder; an object store has none to create (and no bucket is made)."""
        if not storage.is_object_store(self.root):
            with self._io("create"):
                self.root.mkdir(parents=True, exist_ok=True)

    def exists(self, name: str) -> bool:
        with self._io("look for", name):
            return self.path(name).exists()

    def write_frame(self, name: str, frame: pd.DataFrame) -> str:
        """Write a frame as its name says: `.arrow` as Arrow IPC, `.parquet` as Parquet. The
        frame's index is not kept (a frame read back has a fresh range index)."""
        target = self.path(name)
        if self.local:
            with named_os_errors(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                if _is_arrow(name):
                    _write_ipc(frame, str(target), compression="lz4")
                else:
                    frame.to_parquet(target, index=False)
            return str(target)
        # Serialised first: a data error stays one. Compressed: it crosses the network.
        data = _ipc_bytes(frame) if _is_arrow(name) else frame.to_parquet(index=False)
        with self._io("write", name):
            target.write_bytes(data)
        return str(target)

    def read_frame(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        import pandas as pd

        read = pd.read_feather if _is_arrow(name) else pd.read_parquet
        source = self.path(name)
        if self.local:
            with named_os_errors(source):
                return read(source, columns=columns)
        with self._io("read", name):
            data = source.read_bytes()
        return read(io.BytesIO(data), columns=columns)

    def _write_text(self, name: str, text: str) -> None:
        with self._io("write", name):
            if self.local:
                self.path(name).parent.mkdir(parents=True, exist_ok=True)
            self.path(name).write_text(text, encoding="utf-8")

    def _read_text(self, name: str) -> str:
        with self._io("read", name):
            return self.path(name).read_text(encoding="utf-8")

    def write_bytes(self, name: str, data: bytes) -> None:
        """A file as it was made elsewhere (a stored snapshot's Parquet)."""
        with self._io("write", name):
            if self.local:
                self.path(name).parent.mkdir(parents=True, exist_ok=True)
            self.path(name).write_bytes(data)

    def read_bytes(self, name: str) -> bytes:
        with self._io("read", name):
            return self.path(name).read_bytes()

    def write_json(self, name: str, payload: Any) -> None:
        self._write_text(name, json.dumps(payload, indent=2, sort_keys=True))

    def read_json(self, name: str) -> Any:
        return json.loads(self._read_text(name))

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        """A small report table (unmapped values, value issues) as CSV."""
        self._write_text(name, frame.to_csv(index=False))

    def read_table(self, name: str) -> pd.DataFrame:
        import pandas as pd

        text = self._read_text(name)
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


class PartnerWork(_Folder):
    """One partner's intermediates, `<work>/partners/<partner>/`, named by the step that
    writes them (a step writes only its own; later steps read what their inputs name)."""

    # stage_partner
    STAGED = "staged.arrow"  # rows to harmonize, as the reader's contract has them
    KEYS = "keys.arrow"  # per staged row: origin, identity, content, pseudonym, link keys, ids
    REMOVED = "removed.arrow"  # delivered rows erased or merged while staging
    WITHDRAWN = "withdrawn.arrow"  # pseudonyms this run adds to the withdrawal registry
    ERASED_STORED = "erased_stored.arrow"  # stored records of people withdrawn in this run
    STAGE_INFO = "stage.json"  # per delivered file: checksum, size, rows read, blank rows
    # harmonize_partner
    HARMONIZED = "harmonized.arrow"  # per harmonized row: codebook columns + its staged row
    OUTCOMES = "outcomes.arrow"  # per staged row: file, row, outcome, reason, column, origin
    PAYLOADS = "payloads.arrow"  # per delivered row: the staged values the store may keep
    UNMAPPED = "unmapped.csv"  # the restricted unmapped list (already restricted)
    ISSUES = "issues.csv"  # counted value issues
    COVERAGE = "coverage.json"  # the coverage gate's figures
    # per staged row: the release year from which a rejected row may be released
    # (columns.RELEASABLE_FROM; restricted: a year of registration)
    RELEASABLE = "releasable.arrow"
    # compare_with_store
    STAGED_NEW = "changes/staged_new.arrow"
    CASE_NEW = "changes/case_new.arrow"
    STAGED_END = "changes/staged_end.arrow"
    CASE_END = "changes/case_end.arrow"
    CURRENT = "changes/current.arrow"  # the partner's records once the release is committed
    DELIVERY = "changes/delivery.json"  # the delivery's record: mode, source, files, counts
    CHANGE_COUNTS = "changes/counts.json"

    def __init__(self, root: str | Path | UPath, partner: str):
        super().__init__(root)
        self.partner = partner


class WorkDir(_Folder):
    """The run's work folder; `create()` before the first step, `remove()` when it ends."""

    PLAN = "plan.json"
    # assemble_release
    RECORDS = "assembled/records.arrow"  # every current record, bookkeeping + codebook
    MERGED = "assembled/merged.arrow"  # partner and identity of records merged by linkage
    RECONCILIATION = "assembled/reconciliation.json"
    OVERLAPS = "assembled/overlaps.json"
    UNMAPPED = "assembled/unmapped.csv"  # the partners' restricted unmapped lists
    ISSUES = "assembled/issues.csv"
    REJECTS = "assembled/rejects.csv"
    COVERAGE = "assembled/coverage.json"

    @staticmethod
    def carried(partner: str) -> str:
        """read_carried_records: a carried partner's records (store.records.carried_parquet)."""
        return f"carried/{partner}.parquet"

    def partner(self, partner: str) -> PartnerWork:
        work = PartnerWork(self.root / "partners" / partner, partner)
        work._make()
        return work

    def create(self) -> WorkDir:
        """Start from nothing (a rerun must not see a failed run's files)."""
        self.remove()
        if self.local:
            private_folder(self.root)
        else:
            self._make()
        return self

    def remove(self) -> bool:
        """Delete the folder and everything in it; True when there was one."""
        if self.local:
            if not self.root.exists():
                return False
            shutil.rmtree(self.root, ignore_errors=True)
            return True
        with self._io("remove"):
            fs, path = self.root.fs, self.root.path
            if not fs.exists(path):
                return False
            fs.rm(path, recursive=True)
            fs.invalidate_cache()
        return True


class SynthesisWork(_Folder):
    """A synthesis's intermediates, `<out>/restricted/<release>/work/` (restricted, removed
    once the public release is written)."""

    SENSITIVE = "sensitive.parquet"  # the suppressed hand-off table, as pac-synth's strings
    SYNTHETIC = "synthetic.parquet"  # the sampled records
    PUBLIC_COMPARABILITY = "public_comparability.json"
    PUBLIC_COMPARABILITY_PAGE = "public_comparability.html"

    def create(self) -> SynthesisWork:
        """Start from nothing: a rerun starts from the hand-off again."""
        self.remove()
        self._make()
        return self

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def write_text(self, name: str, text: str) -> None:
        self._write_text(name, text)

    def read_text(self, name: str) -> str:
        return self._read_text(name)
