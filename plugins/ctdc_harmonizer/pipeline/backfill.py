"""Load a folder of past deliveries into an empty (or older) store, release by release.

    <folder>/<label>/<partner>/...   e.g. history/2012/iom/iom_export_2012.csv

Each `<label>` folder is one release, run in label order (labels that sort as the releases
were made: years, `2012-02`, ...), with exactly the partners found in it delivering; the
others are carried, as in any annual update. A team starts with its twenty years, not an
empty store.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ctdc_harmonizer.errors import CtdcError

log = logging.getLogger(__name__)


def release_folders(history: str | Path) -> list[Path]:
    root = Path(history)
    if not root.is_dir():
        raise CtdcError(f"backfill folder {root} not found")
    found = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise CtdcError(f"backfill folder {root} holds no <release>/<partner>/ folder")
    return found


def backfill(history: str | Path, out: str, **run_arguments: Any) -> list[dict[str, Any]]:
    """Run the annual update once per release folder, in order; each run's results."""
    from ctdc_harmonizer.pipeline import local
    from ctdc_harmonizer.pipeline.annual_update import ANNUAL_UPDATE

    done = []
    for folder in release_folders(history):
        log.info("backfill: release %s from %s", folder.name, folder)
        done.append(
            local.run(
                ANNUAL_UPDATE, landing=str(folder), out=out, release=folder.name, **run_arguments
            )
        )
    return done
