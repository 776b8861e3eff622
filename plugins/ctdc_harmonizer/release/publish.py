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
import shutil
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


def warehouse_batches(reconciliation: dict, metadata: dict) -> tuple[list[dict], list[dict]]:
    """The reporting entities (partners) and extract batches (files, with their counts)."""
    batches, entities = [], []
    for partner, entry in reconciliation["partners"].items():
        entities.append(
            {
                "code": partner,
                "name": metadata["partners"][partner]["name"],
                "datasource_type": metadata["partners"][partner]["datasource"],
            }
        )
        for name, counts in entry["files"].items():
            batches.append(
                {
                    "partner": partner,
                    "file": name,
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
    meta = read_json(staging / MARKER)
    meta["folder_sha256"] = folder_digest(staging)
    batches, entities = warehouse_batches(recon, meta)
    log.info("release %s: loading the warehouse", release)
    counts = load_release(url, release, combined, batches, entities, meta)
    swap_into_place(staging, target, aside)
    counts["folder_sha256"] = meta["folder_sha256"]
    return counts
