"""Do a release folder and the warehouse agree? (`ctdc check`, and every plan step.)

The store records each release folder's content hash when it commits it (store/commit.py);
a folder whose hash differs, or a release on one side only, is reported. Counts and labels only.
"""

from __future__ import annotations

import json
from pathlib import Path

from ctdc_harmonizer.release.folder import folder_digest
from ctdc_harmonizer.release.metadata import MARKER

CONSISTENT = "consistent"
ABSENT = "absent"
MISMATCH = "mismatch"
FOLDER_ONLY = "folder_only"
WAREHOUSE_ONLY = "warehouse_only"
UNVERIFIED = "unverified"  # loaded before hashes were recorded
UNREACHABLE = "warehouse_unreachable"
BAD_STATES = {MISMATCH, FOLDER_ONLY, WAREHOUSE_ONLY}


def warehouse_hashes(url: str) -> dict[str, str | None]:
    """release label -> folder_sha256 recorded at load time (None when not recorded)."""
    import sqlalchemy as sa

    from ctdc_harmonizer.warehouse.models import DataRelease

    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return {}  # do not create an empty database just to look into it
    engine = sa.create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(DataRelease.__tablename__):
                return {}
            rows = conn.execute(sa.select(DataRelease.label, DataRelease.metadata_json))
            return {label: json.loads(meta or "{}").get("folder_sha256") for label, meta in rows}
    finally:
        engine.dispose()


def release_states(out: str | Path, url: str | None = None, only: str | None = None) -> dict:
    """Per release label in the out folder or the warehouse: does the folder's content hash
    match the one the warehouse recorded? Counts and labels only."""
    from ctdc_harmonizer.safety import describe
    from ctdc_harmonizer.warehouse import default_warehouse_url

    out = Path(out)
    folders = {p.name: p for p in (out.iterdir() if out.is_dir() else []) if (p / MARKER).is_file()}
    try:
        recorded = warehouse_hashes(url or default_warehouse_url(str(out)))
    except Exception as exc:  # a check must not crash on an unreachable database
        labels = [only] if only else sorted(folders)
        return {label: {"state": UNREACHABLE, "reason": describe(exc)} for label in labels}
    labels = [only] if only else sorted(set(folders) | set(recorded))
    states = {}
    for label in labels:
        folder, in_warehouse = folders.get(label), label in recorded
        if folder is None:
            state = WAREHOUSE_ONLY if in_warehouse else ABSENT
        elif not in_warehouse:
            state = FOLDER_ONLY
        elif recorded[label] is None:
            state = UNVERIFIED
        else:
            state = CONSISTENT if folder_digest(folder) == recorded[label] else MISMATCH
        states[label] = {"state": state}
    return states
