"""The store's history as a tool: what each partner delivered and when, what each release held,
and any earlier release rebuilt from the store.

Counts, labels, file names and checksums only. A rebuilt release is the table its folder
held (`harmonized.csv`, `harmonized.parquet`), written the way the release wrote it, from the
record versions valid at its sequence: byte-identical to the published files unless people were
erased from the store since (their rows are gone from both the store and, through the purge,
the published folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ctdc_harmonizer.codebook import Codebook, default_codebook
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.fileio import sha256_of
from ctdc_harmonizer.release.folder import TABLE_CSV, TABLE_PARQUET, release_table, write_table
from ctdc_harmonizer.store.commit import KEYED_ORDER
from ctdc_harmonizer.store.identity import release_order
from ctdc_harmonizer.store.records import current_at
from ctdc_harmonizer.warehouse.connection import warehouse
from ctdc_harmonizer.warehouse.models import (
    DELIVERY_COUNT_COLUMNS,
    DataRelease,
    Delivery,
    DeliveryFile,
    ReleaseExclusion,
    ReportingEntity,
    case_record_table,
)


def deliveries(url: str, partner: str | None = None) -> pd.DataFrame:
    """One row per delivery: partner, release, received, mode, files, and where its rows went."""
    statement = (
        sa.select(
            ReportingEntity.code.label("partner"),
            Delivery.release_label.label("release"),
            DataRelease.sequence,
            Delivery.received_at,
            Delivery.mode,
            sa.func.count(DeliveryFile.id).label("files"),
            *(getattr(Delivery, name) for name in DELIVERY_COUNT_COLUMNS),
            Delivery.records_retired,
        )
        .join(ReportingEntity, ReportingEntity.id == Delivery.entity_id)
        .join(DataRelease, DataRelease.label == Delivery.release_label)
        .outerjoin(DeliveryFile, DeliveryFile.delivery_id == Delivery.id)
        .group_by(
            ReportingEntity.code,
            Delivery.id,
            Delivery.release_label,
            DataRelease.sequence,
            Delivery.received_at,
            Delivery.mode,
            *(getattr(Delivery, name) for name in DELIVERY_COUNT_COLUMNS),
            Delivery.records_retired,
        )
        .order_by(DataRelease.sequence, ReportingEntity.code)
    )
    if partner:
        statement = statement.where(ReportingEntity.code == partner)
    with warehouse(url, "reading the store's history") as db:
        rows = db.execute(statement)
    columns = [
        "partner",
        "release",
        "sequence",
        "received_at",
        "mode",
        "files",
        *DELIVERY_COUNT_COLUMNS,
        "records_retired",
    ]
    return pd.DataFrame(rows, columns=columns)


def releases(url: str) -> pd.DataFrame:
    """One row per release and partner: the records the release held of that partner."""
    case = case_record_table
    with warehouse(url, "reading the store's history") as db:
        labels = db.execute(
            sa.select(DataRelease.label, DataRelease.sequence, DataRelease.row_count).order_by(
                DataRelease.sequence
            )
        )
        rows = []
        for label, sequence, count in labels:
            excluded = sa.select(ReleaseExclusion.case_record_id).where(
                ReleaseExclusion.release_label == label
            )
            held = db.execute(
                sa.select(ReportingEntity.code, sa.func.count())
                .select_from(case.join(ReportingEntity, ReportingEntity.id == case.c.entity_id))
                .where(current_at(case, sequence), case.c.id.not_in(excluded))
                .group_by(ReportingEntity.code)
                .order_by(ReportingEntity.code)
            )
            rows += [(label, sequence, count, code, n) for code, n in held]
    return pd.DataFrame(rows, columns=["release", "sequence", "rows", "partner", "records"])


def rebuild_release(
    url: str, label: str, into: str | Path, codebook: Codebook | None = None
) -> dict:
    """Write release `label`'s table again from the store into `into` (see the module
    docstring); returns its row count and the files' checksums."""
    codebook = codebook or default_codebook()
    case = case_record_table
    with warehouse(url, f"rebuilding release '{label}'") as db:
        found = db.execute(
            sa.select(DataRelease.sequence, DataRelease.row_order).where(DataRelease.label == label)
        )
        if not found:
            raise CtdcError(f"release {label} is not in the store")
        sequence, row_order = found[0]
        excluded = sa.select(ReleaseExclusion.case_record_id).where(
            ReleaseExclusion.release_label == label
        )
        table = (
            db.select_arrow(
                sa.select(case.c.id, case.c.identity_key, *(case.c[c] for c in codebook.columns))
                .where(current_at(case, sequence), case.c.id.not_in(excluded))
                .order_by(case.c.id)
            )
            .to_pandas()
            .astype({"identity_key": "string[pyarrow]"})
        )
    if row_order == KEYED_ORDER:
        order = release_order(label, table["identity_key"])
    else:  # releases made before the store: in record id order
        order = np.arange(len(table))
    frame = release_table(table[codebook.columns].iloc[order].reset_index(drop=True), codebook)
    target = Path(into)
    target.mkdir(parents=True, exist_ok=True)
    write_table(frame, target)
    return {
        "release": label,
        "rows": len(frame),
        "files": {name: sha256_of(target / name) for name in (TABLE_CSV, TABLE_PARQUET)},
    }
