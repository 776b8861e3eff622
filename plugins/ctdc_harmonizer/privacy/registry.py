"""The withdrawal registry: withdrawals remembered as pseudonyms, honoured in every later run.

A withdrawal a partner delivers (by record id or by identifying fields) is turned into the
pseudonym of the person it names and recorded once in the warehouse table
`withdrawal_registry`, with the partner and the date: never the id or the name. Every
later run erases the records carrying a registered pseudonym, whatever the partner
delivers (with or without a withdrawals file), and counts them under `erased`. The commit
(store/commit.py) erases every stored version of a newly withdrawn person, history included;
then `purge_release_folders` rewrites the earlier release folders that held them, each with an
audit entry holding counts only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ctdc_harmonizer.errors import CtdcError

AUDIT_FILE = "audit.json"
PURGE = "withdrawal_purge"


def _engine(url: str) -> sa.Engine | None:
    """An engine on an existing warehouse; None when there is none yet (first run)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return None
        if not Path(parsed.database).exists():
            return None
    return sa.create_engine(url, hide_parameters=True, poolclass=sa.pool.NullPool)


def known_pseudonyms(url: str, partner: str, wanted: pd.Series | None = None) -> set[str]:
    """Registered pseudonyms of `partner`, plus those of `wanted` found in a stored release.
    Read-only: a warehouse without the registry yet (before migration 0003) has none."""
    # The warehouse is imported where it is used, as elsewhere in this module: at the top it
    # would load Alembic wherever the pipeline is imported.
    from ctdc_harmonizer.warehouse.models import (
        WithdrawalRegistry,
        case_record_table,
        staged_record_table,
    )

    engine = _engine(url)
    if engine is None:
        return set()
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            found: set[str] = set()
            if inspector.has_table(WithdrawalRegistry.__tablename__):
                found.update(
                    conn.scalars(
                        sa.select(WithdrawalRegistry.pseudonym).where(
                            WithdrawalRegistry.partner == partner
                        )
                    )
                )
            asked = sorted(set(wanted.dropna())) if wanted is not None else []
            for table in (case_record_table, staged_record_table):  # stored, history included
                columns = (
                    {c["name"] for c in inspector.get_columns(table.name)}
                    if inspector.has_table(table.name)
                    else set()
                )
                if not asked or "pseudonym" not in columns:
                    continue
                for start in range(0, len(asked), 500):
                    statement = (
                        sa.select(table.c.pseudonym)
                        .distinct()
                        .where(table.c.pseudonym.in_(asked[start : start + 500]))
                    )
                    found.update(conn.scalars(statement))
            return found
    except sa.exc.DBAPIError as exc:
        raise CtdcError(
            f"the withdrawal registry cannot be read ({type(exc.orig).__name__})"
        ) from None
    finally:
        engine.dispose()


def _release_folders(out: Path, labels: list[str]) -> dict[str, Path]:
    from ctdc_harmonizer.release.metadata import MARKER

    return {
        label: out / label
        for label in labels
        if (out / label / MARKER).exists() and (out / label / "harmonized.parquet").exists()
    }


def _rewrite_folder(folder: Path, positions: np.ndarray, stored_rows: int, run: str) -> None:
    """Drop the rows at `positions` (the release's row order, store/commit.py) from the
    folder's harmonized table, atomically per file, and append an audit entry (counts)."""
    # The CSV is written as the release wrote it (release.folder.write_csv: pandas' bytes,
    # through Arrow; pandas' own writer took ~0.7 s per 175k-row folder, and a withdrawal
    # rewrites every earlier folder that held the person).
    from ctdc_harmonizer.release.folder import write_csv

    parquet = pd.read_parquet(folder / "harmonized.parquet")
    keep = np.ones(len(parquet), dtype=bool)
    keep[positions] = False
    kept = parquet[keep].reset_index(drop=True)
    tmp = folder / ".harmonized.parquet.tmp"
    kept.to_parquet(tmp, index=False)
    os.replace(tmp, folder / "harmonized.parquet")
    tmp = folder / ".harmonized.csv.tmp"
    write_csv(kept, tmp)
    os.replace(tmp, folder / "harmonized.csv")
    audit_path = folder / AUDIT_FILE
    audit = json.loads(audit_path.read_text("utf-8")) if audit_path.exists() else {"entries": []}
    audit["entries"].append(
        {
            "action": PURGE,
            "date": dt.date.today().isoformat(),
            "by_run_of_release": run,
            "records_removed": int(len(positions)),
            "rows_before": int(stored_rows),
            "rows_after": int(len(kept)),
            "files_rewritten": ["harmonized.csv", "harmonized.parquet"],
        }
    )
    tmp = folder / ".audit.json.tmp"
    tmp.write_text(json.dumps(audit, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, audit_path)


def _refresh_derived(folder: Path, label: str, url: str) -> None:
    """After a purge: the hand-off (if any) is rebuilt from the purged table, so no later
    synthesis receives a withdrawn record, and the warehouse records the folder's new hash
    (a crash before this line is reported as a mismatch by `ctdc check`, as it should be)."""
    from ctdc_harmonizer.release.folder import folder_digest
    from ctdc_harmonizer.synthesis.handoff import handoff_dir, write_handoff
    from ctdc_harmonizer.warehouse.models import DataRelease

    if handoff_dir(folder.parent, label).is_dir():
        write_handoff(folder)
    engine = sa.create_engine(url, hide_parameters=True, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            meta = conn.execute(
                sa.select(DataRelease.metadata_json).where(DataRelease.label == label)
            ).scalar()
            meta = json.loads(meta or "{}")
            meta["folder_sha256"] = folder_digest(folder)
            conn.execute(
                sa.update(DataRelease)
                .where(DataRelease.label == label)
                .values(metadata_json=json.dumps(meta, sort_keys=True))
            )
    except sa.exc.DBAPIError as exc:
        raise CtdcError(
            f"release {label}: purged folder's hash not recorded ({type(exc.orig).__name__}); "
            "`ctdc check` reports it as a mismatch until the release is rerun"
        ) from None
    finally:
        engine.dispose()


def apply_pending_purges(url: str, out: Path) -> dict:
    """Rewrite every release folder in `out` the store still has to purge (its pending
    purges: the rows of people erased by a commit), each with an audit entry; rebuild their
    hand-off; record their new content hash; then drop the pending purge. Counts only."""
    from ctdc_harmonizer.warehouse.connection import warehouse
    from ctdc_harmonizer.warehouse.models import PendingPurge
    from ctdc_harmonizer.warehouse.schema import warehouse_exists

    if not warehouse_exists(url):
        return {"releases_purged": 0, "records_purged": 0, "folders_rewritten": 0}
    with warehouse(url, "reading pending purges") as db:
        pending = db.execute(
            sa.select(
                PendingPurge.release_label,
                PendingPurge.rows_before,
                PendingPurge.positions_json,
                PendingPurge.recorded_by,
            )
        )
    folders = _release_folders(Path(out), [label for label, *_ in pending])
    records = 0
    for label, rows_before, positions_json, recorded_by in pending:
        folder = folders.get(label)
        positions = json.loads(positions_json)
        if folder is not None:
            rows = len(pd.read_parquet(folder / "harmonized.parquet", columns=[]))
            if rows == rows_before:  # not yet rewritten (a rewritten one has fewer rows)
                _rewrite_folder(
                    folder, np.array(positions, dtype=np.int64), rows_before, recorded_by
                )
            _refresh_derived(folder, label, url)
        records += len(positions)
        with warehouse(url, "recording a purge", write=True) as db:
            db.execute(sa.delete(PendingPurge).where(PendingPurge.release_label == label))
    return {
        "releases_purged": len(pending),
        "records_purged": records,
        "folders_rewritten": len(folders),
    }
