"""The run's private work folder: it owns every intermediate file, its name and its format.

In the spirit of Dagster's IO manager: a step asks its `WorkDir` (or a partner's `PartnerWork`)
for a frame or a report by what it is, never by a file name, so a new intermediate is one
property here. Frames are Parquet, small reports JSON or CSV. Nothing in here is a release: the
folder holds de-identified rows with pseudonyms and linkage keys, is readable by the pipeline's
user only (local folders are created 0700) and is deleted when the run ends, failed or not.

The root is a local path by default (`<out>/.work/<release>`) or any fsspec URL (e.g.
`s3://bucket/ctdc-work/<release>`, through universal_pathlib, the library under Airflow's
`ObjectStoragePath`), so that partner chains running on different workers share their
intermediates. The release folder itself is always built on the out folder's file system:
publishing it is an atomic rename there (release/publish.py).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from upath import UPath

from ctdc_harmonizer.fileio import private_folder

PLAN = "plan.json"
COMBINED = "combined.parquet"
RECONCILIATION = "reconciliation.json"
OVERLAPS = "overlaps.json"


def _is_local(path: UPath) -> bool:
    return isinstance(path, Path)


class _Folder:
    """Typed reads and writes under one folder, local or remote."""

    def __init__(self, root: str | Path | UPath):
        self.root = root if isinstance(root, UPath) else UPath(root)

    def path(self, name: str) -> UPath:
        return self.root / name

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def write_frame(self, name: str, frame: pd.DataFrame) -> str:
        target = self.path(name)
        if _is_local(target):
            frame.to_parquet(target, index=False)
        else:
            with target.open("wb") as handle:
                frame.to_parquet(handle, index=False)
        return str(target)

    def read_frame(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        source = self.path(name)
        if _is_local(source):
            return pd.read_parquet(source, columns=columns)
        with source.open("rb") as handle:
            return pd.read_parquet(handle, columns=columns)

    def write_json(self, name: str, payload: Any) -> None:
        text = json.dumps(payload, indent=2, sort_keys=True)
        self.path(name).write_text(text, encoding="utf-8")

    def read_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_text(encoding="utf-8"))

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        """A small report table (unmapped values, value issues) as CSV."""
        self.path(name).write_text(frame.to_csv(index=False), encoding="utf-8")

    def read_table(self, name: str) -> pd.DataFrame:
        text = self.path(name).read_text(encoding="utf-8")
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


class PartnerWork(_Folder):
    """One partner's intermediates: `<work>/<partner>/`."""

    STAGED = "staged.parquet"  # de-identified rows still to harmonize (no identifier)
    REMOVED = "removed.parquet"  # rows erased or merged while staging: file, row, outcome
    PRIVATE = "private.parquet"  # pseudonym + linkage keys of the staged rows, same order
    WITHDRAWN = "withdrawn.parquet"  # pseudonyms this run adds to the withdrawal registry
    STAGE_INFO = "stage.json"  # per delivered file: checksum, rows read, blank rows, columns
    HARMONIZED = "harmonized.parquet"  # codebook columns + bookkeeping + privacy columns
    OUTCOMES = "outcomes.parquet"  # one row per staged row: file, row, outcome, reason, column
    UNMAPPED = "unmapped.csv"  # the restricted unmapped list (already restricted)
    ISSUES = "issues.csv"  # counted value issues
    COVERAGE = "coverage.json"  # the coverage gate's figures
    LINKED = "linked.parquet"  # files of this partner's rows merged into another's record

    def __init__(self, root: str | Path | UPath, partner: str):
        super().__init__(root)
        self.partner = partner


class WorkDir(_Folder):
    """The run's work folder; `create()` before the first step, `remove()` when it ends."""

    def partner(self, partner: str) -> PartnerWork:
        work = PartnerWork(self.root / partner, partner)
        work.root.mkdir(parents=True, exist_ok=True)
        return work

    def create(self) -> WorkDir:
        """Start from nothing (a rerun must not see a failed run's files)."""
        self.remove()
        if _is_local(self.root):
            private_folder(self.root)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
        return self

    def remove(self) -> bool:
        """Delete the folder and everything in it; True when there was one."""
        if not self.root.exists():
            return False
        if _is_local(self.root):
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            self.root.fs.rm(self.root.path, recursive=True)
        return True
