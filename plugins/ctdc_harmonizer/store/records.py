"""A partner's stored records as of a release: current harmonized versions with their keys,
and the staged rows a re-harmonization starts from.

The fast path is the partner's snapshot (one Parquet blob per partner and release that
changed it, written by the commit); without one (a warehouse migrated from before the store,
a snapshot dropped by an erasure) the records are read from the tables, and the next commit
that changes the partner writes a snapshot again.

PRIVACY: the frames hold pseudonyms, identity and linkage keys (restricted): they stay in the
run's private work folder and never reach a release file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json

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
    HELD_BACK,
    IDENTITY,
    MAPPING,
    PSEUDONYM,
    RELEASABLE_FROM,
    ROW,
    STAGED_ID,
    UNKNOWN_RELEASE_YEAR,
)
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.privacy.linkage import LINK_COLUMNS
from ctdc_harmonizer.store.payload import decode_payloads
from ctdc_harmonizer.warehouse.connection import Warehouse
from ctdc_harmonizer.warehouse.models import (
    LINK_KEY_COLUMNS,
    Delivery,
    DeliveryFile,
    PartnerSnapshot,
    ReportingEntity,
    case_record_table,
    staged_record_table,
)

CODEBOOK_VERSION = "_codebook_version"
# A current record's bookkeeping, then the codebook columns (`record_columns`).
KEY_COLUMNS = [
    CASE_ID,
    STAGED_ID,
    IDENTITY,
    CONTENT,
    PSEUDONYM,
    *LINK_COLUMNS,
    DELIVERY_FILE_ID,
    FILE,
    MAPPING,
    CODEBOOK_VERSION,
    HELD_BACK,
    RELEASABLE_FROM,
]
INTEGER_KEYS = [CASE_ID, STAGED_ID, CONTENT, DELIVERY_FILE_ID, RELEASABLE_FROM]


def record_columns(codebook: Codebook | None = None) -> list[str]:
    return [*KEY_COLUMNS, *(codebook or default_codebook()).columns]


def current_at(table: sa.Table, base: int) -> sa.ColumnElement[bool]:
    """The versions of `table` current at release sequence `base`."""
    return sa.and_(
        table.c.valid_from <= base, sa.or_(table.c.valid_to.is_(None), table.c.valid_to > base)
    )


def entity_id(db: Warehouse, partner: str) -> int | None:
    found = db.execute(sa.select(ReportingEntity.id).where(ReportingEntity.code == partner))
    return found[0][0] if found else None


def empty_records(codebook: Codebook | None = None) -> pd.DataFrame:
    codebook = codebook or default_codebook()
    return typed_records(pd.DataFrame(columns=record_columns(codebook)), codebook)


def typed_records(frame: pd.DataFrame, codebook: Codebook) -> pd.DataFrame:
    """The record frame with its one set of dtypes, whichever path it was read by."""
    out = pd.DataFrame(index=frame.index)
    for name in record_columns(codebook):
        column = frame[name] if name in frame else pd.Series(pd.NA, index=frame.index)
        if name == RELEASABLE_FROM and name not in frame and HELD_BACK in frame:
            # Read from the tables, or from a snapshot written before it was kept: when a
            # held-back record may be released is not known (tried whenever the year moves).
            held = frame[HELD_BACK].fillna(False).astype(bool).to_numpy()
            column = pd.Series(pd.NA, index=frame.index, dtype="Int64")
            column[held] = UNKNOWN_RELEASE_YEAR
        if name == HELD_BACK:
            out[name] = column.fillna(False).astype(bool)
        elif name in INTEGER_KEYS:
            out[name] = column.astype("Int64")
        elif name in LINK_COLUMNS:
            out[name] = column.astype("UInt64")
        elif name in codebook.columns and codebook.variable(name).type == "year":
            out[name] = column.astype("Int64")
        else:
            out[name] = column.astype("string[pyarrow]")
    return out


def _link_keys_unsigned(frame: pd.DataFrame) -> pd.DataFrame:
    """Stored link keys are signed 64-bit integers; the pipeline's are unsigned."""
    for stored, name in zip(LINK_KEY_COLUMNS, LINK_COLUMNS, strict=True):
        values = frame.pop(stored)
        present = values.notna().to_numpy()
        raw = values.astype("Int64").to_numpy(dtype=np.int64, na_value=0).view(np.uint64)
        frame[name] = pd.arrays.IntegerArray(raw, ~present)
    return frame


def _from_tables(db: Warehouse, entity: int, base: int, codebook: Codebook) -> pd.DataFrame:
    """The slow path: current case versions (with their staged keys) and held-back staged
    records, read from the tables."""
    case, staged = case_record_table, staged_record_table
    staged_keys = [
        staged.c.content_key.label(CONTENT),
        *(staged.c[name] for name in LINK_KEY_COLUMNS),
    ]
    with_case = (
        sa.select(
            case.c.id.label(CASE_ID),
            case.c.staged_record_id.label(STAGED_ID),
            case.c.identity_key.label(IDENTITY),
            case.c.pseudonym.label(PSEUDONYM),
            case.c.delivery_file_id.label(DELIVERY_FILE_ID),
            DeliveryFile.file_name.label(FILE),
            case.c.mapping_sha256.label(MAPPING),
            case.c.codebook_version.label(CODEBOOK_VERSION),
            *(case.c[name] for name in codebook.columns),
            *staged_keys,
        )
        .select_from(
            case.outerjoin(staged, staged.c.id == case.c.staged_record_id).outerjoin(
                DeliveryFile.__table__, DeliveryFile.id == case.c.delivery_file_id
            )
        )
        .where(case.c.entity_id == entity, current_at(case, base))
    )
    held_back = (
        sa.select(
            staged.c.id.label(STAGED_ID),
            staged.c.identity_key.label(IDENTITY),
            staged.c.pseudonym.label(PSEUDONYM),
            staged.c.delivery_file_id.label(DELIVERY_FILE_ID),
            DeliveryFile.file_name.label(FILE),
            *staged_keys,
        )
        .select_from(
            staged.join(DeliveryFile.__table__, DeliveryFile.id == staged.c.delivery_file_id)
        )
        .where(staged.c.entity_id == entity, current_at(staged, base))
        .where(~sa.exists().where(case.c.staged_record_id == staged.c.id, current_at(case, base)))
    )
    parts = [
        db.select_arrow(with_case).to_pandas().assign(**{HELD_BACK: False}),
        db.select_arrow(held_back).to_pandas().assign(**{HELD_BACK: True}),
    ]
    frame = pd.concat([_link_keys_unsigned(p) for p in parts], ignore_index=True)
    return typed_records(frame, codebook)


# A record's ids and keys: (nearly) every value distinct, so a Parquet dictionary of them is
# built only to be dropped at its size limit. Written plain.
DISTINCT_COLUMNS = [CASE_ID, STAGED_ID, IDENTITY, CONTENT, PSEUDONYM, *LINK_COLUMNS]
# Zstandard at its fastest level: the keys are hexadecimal text, which it stores in about half
# their bytes where Snappy keeps them whole (a snapshot of 250k records: 22 MiB, not 39 MiB),
# for no more CPU than Snappy's pass and its dictionaries took.
SNAPSHOT_COMPRESSION = "zstd"
SNAPSHOT_COMPRESSION_LEVEL = 1


def snapshot_bytes(records: pd.DataFrame) -> tuple[bytes, str]:
    """A partner's current records as a Parquet file, and its SHA-256. The table and its
    pandas metadata are what `DataFrame.to_parquet(index=False)` wrote before (snapshots of
    either encoding read back as the same frame); only the encoding differs: see
    DISTINCT_COLUMNS and SNAPSHOT_COMPRESSION."""
    table = pa.Table.from_pandas(records.reset_index(drop=True), preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=SNAPSHOT_COMPRESSION,
        compression_level=SNAPSHOT_COMPRESSION_LEVEL,
        use_dictionary=[name for name in table.column_names if name not in DISTINCT_COLUMNS],
    )
    data = sink.getvalue().to_pybytes()
    return data, hashlib.sha256(data).hexdigest()


def _snapshot(db: Warehouse, partner: str, entity: int, base: int) -> tuple[bytes, int] | None:
    """The partner's latest snapshot at or before release sequence `base` (its Parquet bytes,
    checked against their checksum, and its row count), or None."""
    snap = PartnerSnapshot.__table__
    found = db.execute(
        sa.select(snap.c.parquet, snap.c.sha256, snap.c.rows)
        .where(snap.c.entity_id == entity, snap.c.sequence <= base)
        .order_by(snap.c.sequence.desc())
        .limit(1)
    )
    if not found:
        return None
    data, sha256, rows = found[0]
    data = bytes(data)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CtdcError(
            f"partner '{partner}': its stored snapshot does not match its checksum; "
            "delete the partner's rows of partner_snapshot (they are rebuilt) and rerun"
        )
    return data, int(rows)


def current_records(
    db: Warehouse, partner: str, base: int, codebook: Codebook | None = None
) -> pd.DataFrame:
    """The partner's records current at release sequence `base` (`record_columns`): from its
    snapshot when one is valid, else from the tables."""
    codebook = codebook or default_codebook()
    entity = entity_id(db, partner)
    if entity is None or base == 0:
        return empty_records(codebook)
    found = _snapshot(db, partner, entity, base)
    if found is not None:
        data, rows = found
        frame = pd.read_parquet(io.BytesIO(data))
        if len(frame) == rows:
            return typed_records(frame, codebook)
    return _from_tables(db, entity, base, codebook)


def carried_parquet(
    db: Warehouse, partner: str, base: int, columns: list[str], codebook: Codebook | None = None
) -> tuple[bytes, int]:
    """What a release takes of a carried partner's records current at `base`, as Parquet
    (`release_records_from` reads it), and its row count: its snapshot as stored when one is
    valid and holds HELD_BACK and `columns` (nothing decoded), else its records from the
    tables, encoded as a snapshot is. PRIVACY: restricted, as the snapshot (keys and
    pseudonyms included)."""
    codebook = codebook or default_codebook()
    wanted = [HELD_BACK, *columns]
    entity = entity_id(db, partner)
    if entity is not None and base:
        found = _snapshot(db, partner, entity, base)
        if found is not None:
            data, rows = found
            parquet = pq.ParquetFile(io.BytesIO(data))
            if parquet.metadata.num_rows == rows and set(wanted) <= set(parquet.schema_arrow.names):
                return data, rows
    records = current_records(db, partner, base, codebook)[wanted]
    return snapshot_bytes(records)[0], len(records)


def release_records_from(
    parquet: bytes, columns: list[str], codebook: Codebook | None = None
) -> pd.DataFrame:
    """HELD_BACK and `columns` of a carried partner's records (`carried_parquet`), as
    `typed_records` types them except that the codebook's coded columns are categorical
    (only the categories its released records use). Read column by column, the coded ones as
    Arrow dictionaries: no pseudonym, key or id decoded, no text column made of a million
    Python strings."""
    codebook = codebook or default_codebook()
    coded = [v.name for v in codebook.variables if v.type != "year" and v.name in columns]
    wanted = [HELD_BACK, *columns]
    table = pq.ParquetFile(io.BytesIO(parquet), read_dictionary=coded).read(
        columns=wanted, use_pandas_metadata=False
    )
    frame = table.to_pandas(types_mapper=_release_types)
    frame[HELD_BACK] = frame[HELD_BACK].fillna(False).astype(bool)
    for name in coded:
        frame[name] = _as_category(frame[name])
    return frame


def release_records(
    db: Warehouse, partner: str, base: int, columns: list[str], codebook: Codebook | None = None
) -> pd.DataFrame:
    """What a release takes of a carried partner's records current at `base` (both functions
    above, in one go). Equal to `current_records(...)[[HELD_BACK, *columns]]` with the coded
    columns made categorical, from a snapshot and from the tables alike (tested)."""
    parquet, _ = carried_parquet(db, partner, base, columns, codebook)
    return release_records_from(parquet, columns, codebook)


def _as_category(column: pd.Series) -> pd.Series:
    """`column` as `column.astype("string[pyarrow]").astype("category")` would be: the
    categories its rows use, sorted, as Arrow strings; from a categorical by its codes alone."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        return column.astype("string[pyarrow]").astype("category")
    codes = column.cat.codes.to_numpy()
    categories = column.cat.categories
    used = np.bincount(codes[codes >= 0], minlength=len(categories)) > 0
    kept = pd.Index(sorted(categories[used]), dtype=pd.StringDtype("pyarrow"))
    position = np.full(len(categories) + 1, -1, dtype=np.int64)  # [-1]: a missing value
    position[:-1][used] = kept.get_indexer(categories[used].astype(kept.dtype))
    return pd.Series(
        pd.Categorical.from_codes(position[codes], dtype=pd.CategoricalDtype(kept)),
        index=column.index,
        name=column.name,
    )


def _release_types(arrow_type: pa.DataType):
    """The pandas dtype `typed_records` gives each Arrow type a release reads (None: the
    default: booleans, and dictionaries as categoricals)."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow")
    if pa.types.is_unsigned_integer(arrow_type):
        return pd.UInt64Dtype()
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    return None


def held_back_release_years(db: Warehouse, partner: str, base: int) -> list[int]:
    """The distinct `RELEASABLE_FROM` years of the partner's held-back records current at
    `base` (UNKNOWN_RELEASE_YEAR among them when some are not known: no snapshot, or one
    written before the column was kept). Reads two columns of the snapshot, nothing else."""
    entity = entity_id(db, partner)
    if entity is None or base == 0:
        return []
    found = _snapshot(db, partner, entity, base)
    if found is None:
        return [UNKNOWN_RELEASE_YEAR]
    data, rows = found
    parquet = pq.ParquetFile(io.BytesIO(data))
    if RELEASABLE_FROM not in parquet.schema_arrow.names or parquet.metadata.num_rows != rows:
        return [UNKNOWN_RELEASE_YEAR]
    table = parquet.read(columns=[HELD_BACK, RELEASABLE_FROM])
    held = table.filter(pc.fill_null(table.column(HELD_BACK), False))
    years = pc.unique(held.column(RELEASABLE_FROM).drop_null()).to_pylist()
    return sorted(int(y) for y in years)


def may_be_released(releasable_from: pd.Series, year_max: int, year_moved: bool) -> np.ndarray:
    """Which held-back records harmonizing again for a release of year `year_max` may release:
    those rejected only for a year of registration now in range, and, when the release year
    moved, those whose year is not known. The others would be held back again: not redone."""
    years = releasable_from.astype("Int64")
    known = (years > UNKNOWN_RELEASE_YEAR) & (years <= year_max)
    unknown = years == UNKNOWN_RELEASE_YEAR
    return (known | (unknown & year_moved)).fillna(False).to_numpy(dtype=bool)


# Ids a statement works on, bound as rows of a temporary table rather than as an IN list:
# SQLite binds at most 32,766 variables, and a row-by-row UPDATE of a 250k-record history
# costs a statement per row.
IDS = sa.Table(
    "ctdc_ids",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("reason", sa.String),
    prefixes=["TEMPORARY"],
    info={"temporary": True},
)


@contextlib.contextmanager
def id_table(db: Warehouse, ids: pd.Series, reasons: pd.Series | None = None):
    """`IDS` holding `ids` (and a reason per id) while the block runs."""
    db.execute(sa.schema.CreateTable(IDS))
    try:
        data = {"id": pa.array(np.asarray(ids, dtype=np.int64))}
        if reasons is not None:
            data["reason"] = pa.array(
                reasons.astype("string").array, type=pa.string(), from_pandas=True
            )
        db.insert_arrow(IDS, pa.table(data))
        yield IDS
    finally:
        db.execute(sa.schema.DropTable(IDS))


def _empty_staged(fields: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series([], dtype="string[pyarrow]") for name in fields})
    frame.insert(0, ROW, pd.Series([], dtype=np.int64))
    frame.insert(0, FILE, pd.Series([], dtype="string[pyarrow]"))
    frame.insert(0, STAGED_ID, pd.Series([], dtype="Int64"))
    return frame


def _decoded(partner: str, table: pa.Table, fields: list[str]) -> pd.DataFrame:
    """The payloads of `table`, each read in its delivery's field order (a partner's
    deliveries may keep different fields: its mapping changed between them)."""
    orders = table.column("payload_fields")
    if orders.null_count:
        raise CtdcError(
            f"partner '{partner}': {orders.null_count} stored record(s) come from a delivery "
            "that does not name its payload fields; the store is inconsistent"
        )
    kinds = pc.unique(orders).to_pylist()
    if len(kinds) == 1:
        return decode_payloads(table.column("payload"), json.loads(kinds[0]), fields)
    parts = []
    for kind in kinds:
        rows = np.flatnonzero(pc.equal(orders, kind).to_numpy(zero_copy_only=False))
        part = decode_payloads(table.column("payload").take(rows), json.loads(kind), fields)
        parts.append(part.set_axis(rows))
    return pd.concat(parts).sort_index().reset_index(drop=True)


def staged_rows(
    db: Warehouse, partner: str, staged_ids: list[int], fields: list[str]
) -> pd.DataFrame:
    """The stored staged values of `staged_ids` (the partner's; decoded payloads, `fields`),
    in that order, with STAGED_ID, FILE and ROW (the file and line the record was delivered
    in).

    The ids are joined from a temporary table: an `IN (...)` of a whole history's ids would
    bind more variables than SQLite allows (32,766), and the few held-back records of a
    carried partner are read without scanning its whole history."""
    if not staged_ids:
        return _empty_staged(fields)
    entity = entity_id(db, partner)
    staged = staged_record_table
    with id_table(db, pd.Series(staged_ids).drop_duplicates()) as wanted:
        table = db.select_arrow(
            sa.select(
                staged.c.id.label(STAGED_ID),
                DeliveryFile.file_name.label(FILE),
                staged.c.source_row.label(ROW),
                staged.c.payload,
                Delivery.payload_fields,
            )
            .select_from(
                wanted.join(staged, staged.c.id == wanted.c.id)
                .join(DeliveryFile.__table__, DeliveryFile.id == staged.c.delivery_file_id)
                .join(Delivery.__table__, Delivery.id == DeliveryFile.delivery_id)
            )
            .where(staged.c.entity_id == (entity if entity is not None else -1))
        )
    # Rows in the order asked for; an id the partner does not hold is the store's fault.
    found = pd.Index(table.column(STAGED_ID).to_numpy())
    where = found.get_indexer(pd.Index(staged_ids)) if found.is_unique else None
    if where is None or (where < 0).any():
        missing = len(staged_ids) if where is None else int((where < 0).sum())
        raise CtdcError(
            f"partner '{partner}': {missing} of its {len(staged_ids)} stored record(s) to "
            "harmonize again have no staged row in the store (the store is inconsistent); "
            "nothing was written"
        )
    table = table.take(pa.array(where))
    values = _decoded(partner, table, fields)
    values.insert(0, ROW, table.column(ROW).to_numpy().astype(np.int64))
    values.insert(0, FILE, pd.array(table.column(FILE), dtype="string[pyarrow]"))
    values.insert(0, STAGED_ID, pd.array(table.column(STAGED_ID).to_numpy(), dtype="Int64"))
    return values
