"""A release and everything it changes in the store, written in one transaction.

`commit_release` runs, on one connection and in one transaction:

1. the store has not moved since the run was planned (else: rerun; nothing is written);
2. when the run replaces the head release, that release is undone first (its versions
   deleted, the versions it closed reopened, its deliveries and snapshots dropped);
3. the partners, the release row (with the release folder's content hash), each delivery and
   its files;
4. each changed partner's new staged records and harmonized versions, the versions they
   close (revised, retired, re-harmonized, held back);
5. withdrawals: new registry entries, and every version of each withdrawn person erased from
   the store, history included (the positions of their rows in earlier release folders are
   returned, for the purge of those folders after publication);
6. the records the release's linkage merged away; a new snapshot of each changed partner.

A crash or an error anywhere leaves the store as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from ctdc_harmonizer.codebook import Codebook, default_codebook
from ctdc_harmonizer.columns import (
    CASE_ID,
    CONTENT,
    DELIVERY_FILE_ID,
    FILE,
    IDENTITY,
    PARTNER,
    PSEUDONYM,
    ROW,
    STAGED_ID,
)
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.memory import release_unused_memory
from ctdc_harmonizer.privacy.linkage import LINK_COLUMNS
from ctdc_harmonizer.store.changes import ERASED
from ctdc_harmonizer.store.identity import release_order
from ctdc_harmonizer.store.records import current_at, id_table, snapshot_bytes, typed_records
from ctdc_harmonizer.warehouse.connection import Warehouse, warehouse
from ctdc_harmonizer.warehouse.models import (
    DELIVERY_COUNT_COLUMNS,
    LINK_KEY_COLUMNS,
    DataRelease,
    Delivery,
    DeliveryFile,
    PartnerSnapshot,
    PendingPurge,
    PersonSpend,
    PrivacyAudit,
    ReleaseExclusion,
    ReportingEntity,
    WithdrawalRegistry,
    case_record_table,
    staged_record_table,
)

log = logging.getLogger(__name__)

REF = "_ref"  # a new staged record's number within its partner's changes
PAYLOAD = "_payload"
KEYED_ORDER = "keyed"
PURGE = "withdrawal_purge"


class StoreMovedError(CtdcError):
    """The store changed since the run was planned (another run committed): rerun."""


# A change set's frame, or what reads it when the commit comes to it.
Frame = pd.DataFrame | Callable[[], pd.DataFrame]


@dataclass
class ChangeSet:
    """What one partner's chain decided (store/changes.py), ready to write. Each frame may
    be given as a reader (no argument): the commit then reads it when it comes to it and
    lets go of it once written, so that a partner's changes are never all in memory at once
    (at 250k records its new staged rows, versions and current records are some 300 MiB)."""

    partner: str
    delivery: dict | None  # mode, source, received_at, mapping, counts, files, ...
    staged_new: Frame  # REF, IDENTITY, PSEUDONYM, CONTENT, LINK_COLUMNS, PAYLOAD, FILE, ROW
    case_new: Frame  # codebook columns, IDENTITY, PSEUDONYM, STAGED_ID or REF, ...
    staged_end: Frame  # STAGED_ID, reason
    case_end: Frame  # CASE_ID, reason
    # the partner's records after this release (store/records.py columns, REF for new ones)
    current: Frame
    mapping: str = ""
    # Nothing else changed, but the snapshot should be written again: it did not know from
    # which year some held-back records may be released, and the chain now does
    # (columns.RELEASABLE_FROM; a snapshot from before it was kept).
    snapshot_stale: bool = False

    def frame(self, name: str) -> pd.DataFrame:
        """The frame `name`, read now if it was given as a reader (then kept)."""
        value = getattr(self, name)
        if value is None:
            raise CtdcError(f"partner '{self.partner}': its {name} changes were already written")
        if callable(value):
            value = value()
            setattr(self, name, value)
        return value

    def take(self, name: str) -> pd.DataFrame:
        """The frame `name`, which the change set then lets go of (written by the caller)."""
        value = self.frame(name)
        setattr(self, name, None)
        return value


@dataclass
class Assembly:
    """What the release's assembly decided that the commit needs only at its end."""

    rows: int  # records in the release
    entities: list[dict]  # every partner with records in the release: code, name, type
    merged: pd.DataFrame  # PARTNER and IDENTITY of the records the linkage merged away


@dataclass
class ReleaseRow:
    label: str
    sequence: int
    base: int
    replaces: str | None
    codebook_version: str
    # The release's metadata (the built folder's, with its content hash) and its assembly, or
    # what returns them: then asked for once every partner's changes are written, just before
    # the transaction commits, so that the command line writes the records while the release
    # is being assembled and its folder built (pipeline/local.py); if one raises, nothing of
    # the release is committed.
    metadata: dict | Callable[[], dict]
    assembly: Assembly | Callable[[], Assembly]


@dataclass
class Committed:
    release: str
    sequence: int
    staged_inserted: int = 0
    versions_inserted: int = 0
    versions_closed: int = 0
    deliveries: int = 0
    withdrawals_recorded: int = 0
    records_erased: int = 0
    exclusions: int = 0
    snapshots: int = 0
    releases_to_purge: list[str] = field(default_factory=list)


@dataclass
class _Inserted:
    """What the erasure needs of the rows this commit inserts, kept as they go in, so that it
    scans only the rows the store held before (a first release: none): from which id each
    record table's new rows start, and which of them hold a pseudonym withdrawn in this run
    ((id, entity_id) of staged records, (id, entity_id, valid_from, valid_to) of versions,
    as `_holding` gives them). `known` falls to False when the warehouse did not tell the new
    rows' ids (not SQLite): the erasure then scans whole tables. `pseudonyms`: those withdrawn
    in this run, sorted (what the snapshots leave out and the erasure erases)."""

    first: dict[str, int]
    pseudonyms: list[str]
    held: dict[str, list[tuple]] = field(default_factory=dict)
    known: bool = True

    @cached_property
    def withdrawn(self) -> pa.Array:
        return pa.array(self.pseudonyms, type=pa.string())

    @classmethod
    def starting(cls, db: Warehouse, withdrawn: pd.DataFrame) -> _Inserted:
        first = {}
        for table in (staged_record_table, case_record_table):
            found = db.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0)))
            first[table.name] = int(found[0][0]) + 1
        pseudonyms = sorted(set(withdrawn["pseudonym"].dropna())) if len(withdrawn) else []
        return cls(first, pseudonyms)

    def add(self, table: sa.Table, ids: np.ndarray | None, rows: pa.Table, extra: list) -> None:
        """Rows just inserted into `table` (`rows`, with their entity_id and pseudonym) that
        got `ids` (None: not told); `extra`: the values of `_holding`'s extra columns."""
        if ids is None:
            self.known = False
            return
        if not len(self.withdrawn):
            return
        hit = pc.is_in(rows.column("pseudonym"), value_set=self.withdrawn).to_numpy(
            zero_copy_only=False
        )
        entities = rows.column("entity_id").to_numpy()
        self.held.setdefault(table.name, []).extend(
            (int(i), int(e), *extra) for i, e in zip(ids[hit], entities[hit], strict=True)
        )


def _head(db: Warehouse) -> tuple[int, str | None]:
    found = db.execute(
        sa.select(DataRelease.sequence, DataRelease.label)
        .order_by(DataRelease.sequence.desc())
        .limit(1)
    )
    return (found[0][0], found[0][1]) if found else (0, None)


def _check_head(db: Warehouse, release: ReleaseRow) -> None:
    head, label = _head(db)
    expected = release.sequence if release.replaces else release.base
    if head != expected or (release.replaces and label != release.replaces):
        raise StoreMovedError(
            f"release {release.label}: the store changed since this run was planned (its latest "
            f"release is now {label or 'none'}); nothing was written: run again"
        )


def _undo_release(db: Warehouse, label: str, sequence: int) -> None:
    """Remove what the release `label` (the head) wrote, reopening what it closed."""
    case, staged = case_record_table, staged_record_table
    db.execute(sa.delete(ReleaseExclusion).where(ReleaseExclusion.release_label == label))
    db.execute(sa.delete(PartnerSnapshot).where(PartnerSnapshot.sequence == sequence))
    db.execute(sa.delete(case).where(case.c.valid_from == sequence))
    db.execute(sa.delete(staged).where(staged.c.valid_from == sequence))
    for table in (case, staged):
        db.execute(
            sa.update(table)
            .where(table.c.valid_to == sequence)
            .values(valid_to=None, end_reason=None)
        )
    deliveries = sa.select(Delivery.id).where(Delivery.release_label == label)
    db.execute(sa.delete(DeliveryFile).where(DeliveryFile.delivery_id.in_(deliveries)))
    db.execute(sa.delete(Delivery).where(Delivery.release_label == label))
    db.execute(sa.delete(DataRelease).where(DataRelease.label == label))


def _entities(db: Warehouse, entities: list[dict]) -> dict[str, int]:
    table = ReportingEntity.__table__
    known = dict(db.execute(sa.select(table.c.code, table.c.id)))
    new = [e for e in entities if e["code"] not in known]
    old = [e for e in entities if e["code"] in known]
    if new:
        db.execute(sa.insert(table), new)
    if old:
        db.execute(
            sa.update(table)
            .where(table.c.code == sa.bindparam("b_code"))
            .values(name=sa.bindparam("b_name"), datasource_type=sa.bindparam("b_type")),
            [
                {"b_code": e["code"], "b_name": e["name"], "b_type": e["datasource_type"]}
                for e in old
            ],
        )
    return dict(db.execute(sa.select(table.c.code, table.c.id)))


def _insert_delivery(
    db: Warehouse, release: ReleaseRow, entity: int, delivery: dict
) -> dict[str, int]:
    """The delivery and its files; returns file name -> delivery_file id."""
    counts = {name: int(delivery["counts"].get(name, 0)) for name in DELIVERY_COUNT_COLUMNS}
    db.execute(
        sa.insert(Delivery),
        [
            {
                "entity_id": entity,
                "release_label": release.label,
                "mode": delivery["mode"],
                "received_at": dt.datetime.fromisoformat(delivery["received_at"]),
                "source": delivery["source"],
                "mapping_sha256": delivery["mapping"],
                "payload_fields": delivery.get("payload_fields"),
                "codebook_version": release.codebook_version,
                **counts,
                "records_retired": int(delivery["records_retired"]),
            }
        ],
    )
    delivery_id = db.execute(
        sa.select(sa.func.max(Delivery.id)).where(
            Delivery.entity_id == entity, Delivery.release_label == release.label
        )
    )[0][0]
    files = [
        {
            "delivery_id": delivery_id,
            "file_name": name,
            "sha256": entry["sha256"],
            "size_bytes": entry.get("size_bytes"),
            **{c: int(entry["counts"].get(c, 0)) for c in DELIVERY_COUNT_COLUMNS},
        }
        for name, entry in sorted(delivery["files"].items())
    ]
    if files:
        db.execute(sa.insert(DeliveryFile), files)
    return dict(
        db.execute(
            sa.select(DeliveryFile.file_name, DeliveryFile.id).where(
                DeliveryFile.delivery_id == delivery_id
            )
        )
    )


def _signed(values: pd.Series) -> pa.Array:
    present = values.notna().to_numpy()
    raw = values.astype("UInt64").to_numpy(dtype=np.uint64, na_value=0).view(np.int64)
    return pa.array(raw, mask=~present)


def _text(values: pd.Series) -> pa.Array:
    return pa.array(values.astype("string").array, type=pa.string(), from_pandas=True)


def _looked_up(names: pd.Series, ids: dict[str, int]) -> pd.Series:
    """`names.map(ids)` as nullable integers (a name not in `ids`: NA), matched in Arrow: a
    pandas map of a text column through a dict makes a Python string of every row."""
    keys = sorted(ids)
    values = pa.array(names.astype("string").array, type=pa.string(), from_pandas=True)
    where = pc.index_in(values, value_set=pa.array(keys, type=pa.string()))
    found = pa.array([ids[k] for k in keys], type=pa.int64()).take(where)
    return pd.Series(pd.array(found, dtype="Int64"), index=names.index)


def _insert_staged(
    db: Warehouse,
    sequence: int,
    entity: int,
    files: dict[str, int],
    rows: pd.DataFrame,
    inserted: _Inserted,
) -> pd.Series:
    """New staged records; returns their staged_record ids indexed by REF."""
    if rows.empty:
        return pd.Series([], dtype=np.int64)
    # The distinct names only (a set of the column made a Python string per row).
    unknown = sorted(set(rows[FILE].unique()) - set(files))
    if unknown:
        raise CtdcError(f"staged rows name files that were not delivered: {', '.join(unknown)}")
    file_ids = _looked_up(rows[FILE], files).to_numpy(dtype=np.int64)
    columns = {
        "entity_id": pa.array(np.full(len(rows), entity, dtype=np.int64)),
        "delivery_file_id": pa.array(file_ids),
        "source_row": pa.array(rows[ROW].to_numpy(dtype=np.int64)),
        "identity_key": _text(rows[IDENTITY]),
        "pseudonym": _text(rows[PSEUDONYM]),
        "content_key": pa.array(rows[CONTENT].astype("Int64").to_numpy(dtype=np.int64)),
        **{
            stored: _signed(rows[name])
            for stored, name in zip(LINK_KEY_COLUMNS, LINK_COLUMNS, strict=True)
        },
        "payload": _text(rows[PAYLOAD]),
        "valid_from": pa.array(np.full(len(rows), sequence, dtype=np.int64)),
    }
    refs = rows[REF].to_numpy(dtype=np.int64)
    data = pa.table(columns)
    # The ids the rows got, in their order, when the warehouse knows them (SQLite: no read).
    ids = db.insert_arrow_ids(staged_record_table, data)
    inserted.add(staged_record_table, ids, data, [])
    if ids is not None:
        return pd.Series(ids, index=refs)
    staged = staged_record_table
    stored = db.select_arrow(
        sa.select(staged.c.id, staged.c.delivery_file_id, staged.c.source_row).where(
            staged.c.entity_id == entity, staged.c.valid_from == sequence
        )
    ).to_pandas()
    by_place = pd.Series(
        stored["id"].to_numpy(),
        index=pd.MultiIndex.from_arrays([stored["delivery_file_id"], stored["source_row"]]),
    )
    places = pd.MultiIndex.from_arrays([file_ids, rows[ROW].to_numpy(dtype=np.int64)])
    ids = by_place.reindex(places).to_numpy()
    # A Series, not a dict: mapping REFs through it is an index lookup, not 250k Python ints.
    return pd.Series(ids.astype(np.int64), index=refs)


def _insert_versions(
    db: Warehouse,
    sequence: int,
    entity: int,
    codebook: Codebook,
    rows: pd.DataFrame,
    staged_ids: pd.Series,
    file_ids: pd.Series,
    mapping: str,
    inserted: _Inserted,
) -> pd.Series:
    """The new versions; returns their case_record ids indexed by the staged record each was
    harmonized from (the last version of a staged record, should one have two)."""
    case = case_record_table
    if rows.empty:
        return pd.Series([], dtype=np.int64)
    columns: dict[str, pa.Array] = {
        "entity_id": pa.array(np.full(len(rows), entity, dtype=np.int64)),
        "staged_record_id": pa.array(staged_ids.astype("Int64").array, from_pandas=True),
        "delivery_file_id": pa.array(file_ids.astype("Int64").array, from_pandas=True),
        "identity_key": _text(rows[IDENTITY]),
        "mapping_sha256": pa.array([mapping] * len(rows), type=pa.string()),
        "codebook_version": pa.array([codebook.version] * len(rows), type=pa.string()),
    }
    for var in codebook.variables:
        values = rows[var.name]
        if var.type == "year":
            columns[var.name] = pa.array(values.astype("Int64").array, from_pandas=True)
        else:
            columns[var.name] = _text(values)
    columns["pseudonym"] = _text(rows[PSEUDONYM])
    columns["valid_from"] = pa.array(np.full(len(rows), sequence, dtype=np.int64))
    # The ids the rows got, in their order, when the warehouse knows them (SQLite: no read).
    data = pa.table(columns)
    ids = db.insert_arrow_ids(case, data)
    inserted.add(case, ids, data, [sequence, None])  # valid from this release, still current
    if ids is not None:
        keys = columns["staged_record_id"]
        by_staged = pd.Series(ids, index=pd.Index(keys.to_numpy(zero_copy_only=False)))
    else:  # read back, matched by staged record
        new_cases = db.select_arrow(
            sa.select(case.c.staged_record_id, case.c.id).where(
                case.c.entity_id == entity, case.c.valid_from == sequence
            )
        )
        by_staged = pd.Series(
            new_cases.column("id").to_numpy(),
            index=pd.Index(new_cases.column("staged_record_id").to_numpy(zero_copy_only=False)),
        )
    return by_staged[~by_staged.index.duplicated(keep="last")]


def _close(
    db: Warehouse, table: sa.Table, ends: pd.DataFrame, id_column: str, sequence: int
) -> int:
    ends = ends[ends["reason"] != ERASED]  # erasures delete, below
    if ends.empty:
        return 0
    with id_table(db, ends[id_column].astype("int64"), ends["reason"]) as ids:
        reason = sa.select(ids.c.reason).where(ids.c.id == table.c.id).scalar_subquery()
        db.execute(
            sa.update(table)
            .where(table.c.id.in_(sa.select(ids.c.id)))
            .values(valid_to=sequence, end_reason=reason)
        )
    return len(ends)


def _release_members(db: Warehouse, label: str, sequence: int) -> pd.DataFrame:
    """Case id and identity key of every record release `label` held."""
    case = case_record_table
    excluded = sa.select(ReleaseExclusion.case_record_id).where(
        ReleaseExclusion.release_label == label
    )
    return (
        db.select_arrow(
            sa.select(case.c.id, case.c.identity_key)
            .where(current_at(case, sequence))
            .where(case.c.id.not_in(excluded))
        )
        .to_pandas()
        .astype({"identity_key": "string[pyarrow]"})
    )


def _folder_rows(out: Path | None, label: str) -> int | None:
    """Rows of the published folder of `label` in `out` (None: no such folder)."""
    from ctdc_harmonizer.release.folder import TABLE_PARQUET
    from ctdc_harmonizer.release.metadata import MARKER

    if out is None:
        return None
    folder = out / label
    if not (folder / MARKER).is_file() or not (folder / TABLE_PARQUET).is_file():
        return None
    return pq.read_metadata(folder / TABLE_PARQUET).num_rows


def _holding(
    db: Warehouse,
    table: sa.Table,
    pseudonyms: list[str],
    extra: list[sa.Column],
    inserted: _Inserted | None = None,
) -> list[tuple]:
    """(id, entity_id, *extra) of every version of `table` holding one of `pseudonyms`; with
    `inserted` (its ids known), the rows this commit inserted are taken from it and only
    those from before are read."""
    query = sa.select(table.c.id, table.c.entity_id, *extra, table.c.pseudonym).where(
        table.c.pseudonym.is_not(None)
    )
    held: list[tuple] = []
    if inserted is not None and inserted.known:
        query = query.where(table.c.id < inserted.first[table.name])
        held = list(inserted.held.get(table.name, []))
    found = db.select_arrow(query)
    if not found.num_rows:  # (an empty result's text columns may come typed as integers)
        return held
    column = found.column("pseudonym")
    found = found.filter(pc.is_in(column, value_set=pa.array(pseudonyms, type=column.type)))
    columns = (found.column(i).to_pylist() for i in range(2 + len(extra)))
    return list(zip(*columns, strict=True)) + held


def _erase(
    db: Warehouse,
    release: ReleaseRow,
    withdrawn: pd.DataFrame,
    result: Committed,
    out: Path | None,
    inserted: _Inserted,
) -> None:
    """Register this run's withdrawals; erase every version of every registered person the
    store still holds, recording first where their rows sit in earlier release folders (a
    pending purge per folder, applied after publication: registry.apply_pending_purges).
    A folder that does not hold the rows the store says it does is not rewritten on a guess:
    the whole commit is refused."""
    registry = WithdrawalRegistry.__table__
    have = {p for (p,) in db.execute(sa.select(registry.c.pseudonym))}
    new = withdrawn.drop_duplicates("pseudonym")
    new = new[~new["pseudonym"].isin(have)]
    if len(new):
        today = dt.date.today()
        db.execute(
            sa.insert(registry),
            [
                {"pseudonym": p, "partner": partner, "recorded_on": today}
                for p, partner in zip(new["pseudonym"], new["partner"], strict=True)
            ],
        )
    result.withdrawals_recorded = len(new)
    pseudonyms = inserted.pseudonyms
    if not pseudonyms:
        return
    # Their privacy loss per person goes with them: they stop accruing, nothing is kept
    # (the release ledger still counts what each release spent; synthesis/people.py).
    # In lists of 500, far under SQLite's bound-variable limit (withdrawals are few).
    for start in range(0, len(pseudonyms), 500):
        chunk = pseudonyms[start : start + 500]
        db.execute(sa.delete(PersonSpend).where(PersonSpend.person.in_(chunk)))
    case, staged = case_record_table, staged_record_table
    # One scan per table, matched in Arrow: pseudonyms are not indexed (migration 0006), and
    # a withdrawal list may be longer than SQLite binds in one statement. The rows this commit
    # inserted were matched as they went in (`inserted`): only the earlier ones are scanned.
    hits = _holding(db, case, pseudonyms, [case.c.valid_from, case.c.valid_to], inserted)
    staged_hits = _holding(db, staged, pseudonyms, [], inserted)
    erased_cases = {int(row[0]) for row in hits}
    releases = db.execute(
        sa.select(DataRelease.label, DataRelease.sequence, DataRelease.row_order).where(
            DataRelease.sequence < release.sequence
        )
    )
    for label, sequence, order in releases:
        if not any(f <= sequence and (t is None or t > sequence) for _, _, f, t in hits):
            continue
        members = _release_members(db, label, sequence)
        if order == KEYED_ORDER:
            ordered = members["id"].to_numpy()[release_order(label, members["identity_key"])]
        else:
            ordered = np.sort(members["id"].to_numpy())
        positions = np.flatnonzero(np.isin(ordered, list(erased_cases)))
        if len(positions):
            held = _folder_rows(out, label)
            if held is not None and held != len(ordered):
                raise CtdcError(
                    f"release {label}: its folder holds {held} rows, the store {len(ordered)}: "
                    "they disagree, so the withdrawn records cannot be located in the folder; "
                    f"rebuild it (`ctdc rebuild --release {label}`), then run again"
                )
            if db.execute(
                sa.select(PendingPurge.release_label).where(PendingPurge.release_label == label)
            ):
                raise CtdcError(
                    f"release {label}: an earlier purge of its folder has not been applied yet; "
                    "run again (each run applies pending purges before committing)"
                )
            if held is not None:
                db.execute(
                    sa.insert(PendingPurge),
                    [
                        {
                            "release_label": label,
                            "rows_before": len(ordered),
                            "positions_json": json.dumps(positions.tolist()),
                            "recorded_by": release.label,
                        }
                    ],
                )
                result.releases_to_purge.append(label)
            db.execute(
                sa.update(DataRelease)
                .where(DataRelease.label == label)
                .values(row_count=DataRelease.row_count - len(positions))
            )
            db.execute(
                sa.insert(PrivacyAudit),
                [
                    {
                        "recorded_at": dt.datetime.now(dt.UTC),
                        "release_label": label,
                        "action": PURGE,
                        "records": len(positions),
                    }
                ],
            )
    ids = sorted(erased_cases)
    if ids:
        with id_table(db, pd.Series(ids)) as erased:
            gone = sa.select(erased.c.id)
            db.execute(sa.delete(ReleaseExclusion).where(ReleaseExclusion.case_record_id.in_(gone)))
            db.execute(sa.delete(case).where(case.c.id.in_(gone)))
    staged_ids = sorted({int(row[0]) for row in staged_hits})
    if staged_ids:
        with id_table(db, pd.Series(staged_ids)) as erased:
            db.execute(sa.delete(staged).where(staged.c.id.in_(sa.select(erased.c.id))))
    # Snapshots before this release may hold them: dropped (rebuilt from the tables).
    entities = sorted({int(row[1]) for row in hits} | {int(row[1]) for row in staged_hits})
    if entities:
        db.execute(
            sa.delete(PartnerSnapshot).where(
                PartnerSnapshot.entity_id.in_(entities),
                PartnerSnapshot.sequence < release.sequence,
            )
        )
    result.records_erased = len(ids)


def _write_snapshot(db: Warehouse, entity: int, sequence: int, records: pd.DataFrame) -> None:
    data, sha256 = snapshot_bytes(records)
    db.execute(
        sa.insert(PartnerSnapshot),
        [
            {
                "entity_id": entity,
                "sequence": sequence,
                "rows": len(records),
                "sha256": sha256,
                "parquet": data,
            }
        ],
    )
    # Kept: this one and the latest before it (what a rerun of this release starts from).
    snap = PartnerSnapshot.__table__
    earlier = db.execute(
        sa.select(sa.func.max(snap.c.sequence)).where(
            snap.c.entity_id == entity, snap.c.sequence < sequence
        )
    )[0][0]
    if earlier is not None:
        db.execute(sa.delete(snap).where(snap.c.entity_id == entity, snap.c.sequence < earlier))


def _json(metadata: dict) -> str:
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False, default=str)


def _unchanged(changes: ChangeSet) -> bool:
    """Nothing to write for the partner: no delivery, no new record or version, none closed."""
    return changes.delivery is None and all(
        changes.frame(name).empty for name in ("staged_new", "case_new", "staged_end", "case_end")
    )


def commit(
    url: str,
    release: ReleaseRow,
    entities: list[dict],
    partners: Iterable[ChangeSet],
    withdrawn: pd.DataFrame,
    codebook: Codebook | None = None,
    out: Path | None = None,
) -> Committed:
    """Write the release and its changes (see the module docstring). `entities`: the changed
    partners' (the release's assembly names every partner's at the end); `withdrawn`:
    pseudonym and partner of this run's withdrawals; `out`: the folder holding the published
    releases."""
    from ctdc_harmonizer.warehouse.schema import migrate

    codebook = codebook or default_codebook()
    result = Committed(release=release.label, sequence=release.sequence)
    migrate(url)  # a first release creates the warehouse
    log.info("store: committing release %s (sequence %d)", release.label, release.sequence)
    with warehouse(url, f"committing release '{release.label}'", write=True) as db:
        _check_head(db, release)
        if release.replaces:
            _undo_release(db, release.replaces, release.sequence)
        ids = _entities(db, entities)
        db.execute(
            sa.insert(DataRelease),
            [
                {
                    "label": release.label,
                    "sequence": release.sequence,
                    "codebook_version": release.codebook_version,
                    "created_at": dt.datetime.now(dt.UTC),
                    # Both set below once known, if not yet (the columns are not nullable).
                    "row_count": (0 if callable(release.assembly) else release.assembly.rows),
                    "row_order": KEYED_ORDER,
                    "metadata_json": (
                        "{}" if callable(release.metadata) else _json(release.metadata)
                    ),
                }
            ],
        )
        case = case_record_table
        currents: dict[str, pd.DataFrame] = {}
        # One partner at a time (`partners` may load each as it is asked for): only its keys
        # stay in memory once its rows and snapshot are written. Into empty record tables (a
        # first release), their indexes are built once all partners' rows are in.
        inserted = _Inserted.starting(db, withdrawn)
        with db.bulk_load([staged_record_table, case]):
            _write_partners(db, release, codebook, ids, partners, currents, result, inserted)
        _erase(db, release, withdrawn, result, out, inserted)
        # Last: the release may still be being assembled, its folder built.
        assembly = release.assembly() if callable(release.assembly) else release.assembly
        ids = _entities(db, assembly.entities)  # the carried partners' too
        if len(assembly.merged):
            result.exclusions = _exclude(db, ids, currents, assembly.merged, release.label)
        late: dict = {}
        if callable(release.assembly):
            late["row_count"] = assembly.rows
        if callable(release.metadata):
            late["metadata_json"] = _json(release.metadata())
        if late:
            db.execute(
                sa.update(DataRelease).where(DataRelease.label == release.label).values(**late)
            )
    log.info(
        "store: release %s committed: %d staged record(s), %d harmonized version(s), %d closed, "
        "%d record(s) erased",
        release.label,
        result.staged_inserted,
        result.versions_inserted,
        result.versions_closed,
        result.records_erased,
    )
    return result


def _write_partners(
    db: Warehouse,
    release: ReleaseRow,
    codebook: Codebook,
    ids: dict[str, int],
    partners: Iterable[ChangeSet],
    currents: dict[str, pd.DataFrame],
    result: Committed,
    inserted: _Inserted,
) -> None:
    """Each changed partner's delivery, new staged records and versions, the versions they
    close, and its new snapshot; its identity keys and case ids kept in `currents`."""
    case = case_record_table
    gone = set(inserted.pseudonyms)
    for changes in partners:
        entity = ids[changes.partner]
        if _unchanged(changes):
            # Its held-back records harmonized again and held back again: its snapshot
            # (the latest before this release) still holds its records, as they are,
            # unless it did not know when they may be released (then it is written again).
            current = changes.take("current")
            if changes.snapshot_stale:
                records = typed_records(current.drop(columns=[REF], errors="ignore"), codebook)
                _write_snapshot(db, entity, release.sequence, records)
                result.snapshots += 1
                currents[changes.partner] = records[[IDENTITY, CASE_ID]]
            else:
                currents[changes.partner] = current[[IDENTITY, CASE_ID]]
            continue
        files: dict[str, int] = {}
        if changes.delivery is not None:
            files = _insert_delivery(db, release, entity, changes.delivery)
            result.deliveries += 1
        # Each frame read as it comes and let go of once written (its payloads before the
        # versions come, the versions before the current records).
        refs = _insert_staged(
            db, release.sequence, entity, files, changes.take("staged_new"), inserted
        )
        release_unused_memory()
        result.staged_inserted += len(refs)
        result.versions_closed += _close(
            db, staged_record_table, changes.take("staged_end"), STAGED_ID, release.sequence
        )
        result.versions_closed += _close(
            db, case, changes.take("case_end"), CASE_ID, release.sequence
        )
        new = changes.take("case_new")
        staged_ids = new[STAGED_ID].astype("Int64").copy()
        from_refs = staged_ids.isna() & new[REF].notna()
        staged_ids[from_refs] = new.loc[from_refs, REF].astype(int).map(refs).astype("Int64")
        file_ids = new[DELIVERY_FILE_ID].astype("Int64").copy()
        by_name = file_ids.isna() & new[FILE].notna()
        file_ids[by_name] = _looked_up(new.loc[by_name, FILE], files)
        by_staged = _insert_versions(
            db,
            release.sequence,
            entity,
            codebook,
            new,
            staged_ids,
            file_ids,
            changes.mapping,
            inserted,
        )
        result.versions_inserted += len(new)
        del new, staged_ids, file_ids
        release_unused_memory()
        current = changes.take("current")
        pending = current[STAGED_ID].isna() & current[REF].notna()
        current.loc[pending, STAGED_ID] = current.loc[pending, REF].astype(int).map(refs)
        # The new versions' ids, matched by staged record.
        fresh = current[STAGED_ID].notna() & current[CASE_ID].isna()
        current.loc[fresh, CASE_ID] = pd.array(
            by_staged.reindex(current.loc[fresh, STAGED_ID].astype("int64")).to_numpy(),
            dtype="Int64",
        )
        named = current[DELIVERY_FILE_ID].isna() & current[FILE].isin(list(files))
        current.loc[named, DELIVERY_FILE_ID] = _looked_up(current.loc[named, FILE], files)
        if gone:  # the people withdrawn in this run are erased below (_erase)
            current = current[~current[PSEUDONYM].isin(gone)]
        records = typed_records(current.drop(columns=[REF], errors="ignore"), codebook)
        _write_snapshot(db, entity, release.sequence, records)
        result.snapshots += 1
        currents[changes.partner] = records[[IDENTITY, CASE_ID]]
        del changes, current, records
        # Handed back before the next partner's frames are read (memory.py).
        release_unused_memory()


def _exclude(
    db: Warehouse,
    ids: dict[str, int],
    currents: dict[str, pd.DataFrame],
    merged: pd.DataFrame,
    label: str,
) -> int:
    """The merged records' case ids (changed partners from their new records, carried ones
    from the store), excluded from the release."""
    case = case_record_table
    rows = []
    for partner, group in merged.groupby(PARTNER):
        wanted = set(group[IDENTITY])
        if partner in currents:
            current = currents[partner]
            found = current.loc[current[IDENTITY].isin(wanted), CASE_ID].dropna()
            rows += [int(i) for i in found]
            continue
        # The carried partner's current records, matched in Arrow (no IN list to bind).
        current = db.select_arrow(
            sa.select(case.c.id, case.c.identity_key).where(
                case.c.entity_id == ids[partner], case.c.valid_to.is_(None)
            )
        )
        keys = current.column("identity_key")
        hit = pc.is_in(keys, value_set=pa.array(sorted(wanted), type=keys.type))
        rows += current.column("id").filter(hit).to_pylist()
    if rows:
        db.execute(
            sa.insert(ReleaseExclusion),
            [
                {"release_label": label, "case_record_id": i, "reason": "linked_duplicate"}
                for i in rows
            ],
        )
    return len(rows)
