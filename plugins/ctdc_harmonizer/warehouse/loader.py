"""Load one harmonized release into the warehouse, replacing it as a whole.

Privacy: the rows describe trafficking survivors. Nothing here logs or raises
with a row value: logs carry counts, errors name columns, partners and files,
and database errors are re-raised without their driver message (which may
quote a value, e.g. PostgreSQL's "invalid input syntax ... : <value>").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import Connection

from ctdc_harmonizer.codebook import Codebook, default_codebook
from ctdc_harmonizer.columns import FILE, PARTNER, PSEUDONYM
from ctdc_harmonizer.errors import ContractError, InfrastructureError
from ctdc_harmonizer.warehouse import sqlite_arrow
from ctdc_harmonizer.warehouse.columns import CASE_TABLE, VALUE_LENGTH
from ctdc_harmonizer.warehouse.models import (
    BOOKKEEPING_COLUMNS,
    DataRelease,
    ExtractBatch,
    ReportingEntity,
    case_record_table,
)
from ctdc_harmonizer.warehouse.schema import migrate

log = logging.getLogger(__name__)

BATCH_COUNT_KEYS = [
    "rows_read",
    "rows_harmonized",
    "rows_rejected",
    "rows_excluded",
    "rows_erased",
    "rows_duplicates_merged",
]
ENTITY_KEYS = ["code", "name", "datasource_type"]
INSERT_CHUNK_ROWS = 50_000
SQLITE_CACHE_KIB = 256 * 1024


class WarehouseError(ContractError):
    """The warehouse load failed; the message never quotes a row value."""


class WarehouseUnavailableError(InfrastructureError):
    """The database could not be reached or was busy: retrying may help (Airflow retries)."""


def _database_error(release: str, exc: sa.exc.DBAPIError) -> Exception:
    # Keep only the error class and SQLSTATE; the driver text may contain a value.
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    text = f"loading release '{release}' failed in the database: {type(exc.orig).__name__}" + (
        f" (SQLSTATE {code})" if code else ""
    )
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return WarehouseUnavailableError(
            f"{text}: the warehouse cannot be reached or is busy (retrying may help)"
        )
    return WarehouseError(text)


class _Writer(Protocol):
    """One load transaction on one connection. `begin_load` runs its steps in this order;
    `commit` (with the release's metadata) or `rollback` ends it."""

    dialect: str

    def database_error(self, exc: BaseException) -> Exception | None: ...
    def upsert_entities(self, entities: Sequence[dict]) -> dict[str, int]: ...
    def replace_release(self, codebook_version: str, row_count: int) -> None: ...
    def insert_batches(
        self, batch_frame: pd.DataFrame, entity_ids: dict[str, int]
    ) -> pd.DataFrame: ...
    def insert_rows(self, rows: pd.DataFrame) -> str: ...
    def commit(self, metadata_json: str) -> None: ...
    def rollback(self) -> None: ...


class PendingLoad:
    """A release loaded into an open transaction, not yet committed: the release folder's
    content hash, recorded in the release's metadata, is known only once the folder is built,
    which may happen while the rows are being loaded (run/local.py). `commit` records the
    metadata and commits; `rollback` leaves the warehouse as it was. Use from one thread."""

    def __init__(self, writer: _Writer, counts: dict):
        self._writer, self.counts = writer, counts
        self.release = counts["release"]

    def commit(self, metadata: dict) -> dict:
        self._writer.commit(json.dumps(metadata, sort_keys=True, ensure_ascii=False, default=str))
        log.info(
            "warehouse: release %s loaded: %d case records, %d batches, %d entities (%s, %s)",
            self.release,
            self.counts["case_records"],
            self.counts["batches"],
            self.counts["entities"],
            self.counts["dialect"],
            self.counts["method"],
        )
        return dict(self.counts)

    def rollback(self) -> None:
        self._writer.rollback()


class _CoreWriter:
    """The load on a SQLAlchemy connection: PostgreSQL (COPY), SQLite without the ADBC
    driver or in memory, any other dialect."""

    def __init__(self, url: str, release: str):
        # hide_parameters: SQLAlchemy would otherwise print bound row values in errors.
        self._engine = sa.create_engine(url, hide_parameters=True)
        self.dialect, self.release = self._engine.dialect.name, release
        if self.dialect == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_connection)
        try:
            self._conn = self._engine.connect()
        except BaseException:
            self._engine.dispose()
            raise
        self._transaction = self._conn.begin()

    def database_error(self, exc: BaseException) -> Exception | None:
        if isinstance(exc, sa.exc.DBAPIError):
            return _database_error(self.release, exc)
        return None

    def upsert_entities(self, entities: Sequence[dict]) -> dict[str, int]:
        return _upsert_entities(self._conn, entities)

    def replace_release(self, codebook_version: str, row_count: int) -> None:
        _delete_release(self._conn, self.release)
        self._conn.execute(
            sa.insert(DataRelease),
            [
                {
                    "label": self.release,
                    "codebook_version": codebook_version,
                    "created_at": datetime.now(UTC),
                    "row_count": row_count,
                    "metadata_json": "{}",  # recorded by commit()
                }
            ],
        )

    def insert_batches(self, batch_frame: pd.DataFrame, entity_ids: dict[str, int]) -> pd.DataFrame:
        return _insert_batches(self._conn, self.release, batch_frame, entity_ids)

    def insert_rows(self, rows: pd.DataFrame) -> str:
        return _insert_rows(self._conn, rows)

    def commit(self, metadata_json: str) -> None:
        try:
            self._conn.execute(
                sa.update(DataRelease)
                .where(DataRelease.label == self.release)
                .values(metadata_json=metadata_json)
            )
            self._transaction.commit()
        except sa.exc.DBAPIError as exc:
            raise _database_error(self.release, exc) from None
        finally:
            self._close()

    def rollback(self) -> None:
        try:
            self._transaction.rollback()
        finally:
            self._close()

    def _close(self) -> None:
        self._conn.close()
        self._engine.dispose()


def _adbc_error(release: str) -> Callable[[Exception], Exception]:
    def described(exc: Exception) -> Exception:
        # Only the class: a driver's message may quote a value.
        text = f"loading release '{release}' failed in the database: {type(exc).__name__}"
        if type(exc).__name__ == "OperationalError":  # locked, busy, disk: retrying may help
            return WarehouseUnavailableError(f"{text}: the warehouse is busy or unreachable")
        return WarehouseError(text)

    return described


def _open_writer(url: str, release: str) -> _Writer:
    """The load's transaction: on a SQLite file, the ADBC driver's (Arrow, no Python object
    per value); otherwise a SQLAlchemy connection's. Errors value-free."""
    parsed = sa.make_url(url)
    database = parsed.database
    if (
        parsed.get_backend_name() == "sqlite"
        and database
        and database != ":memory:"
        and sqlite_arrow.available()
    ):
        described = _adbc_error(release)
        try:
            return sqlite_arrow.ArrowWriter(database, release, described)
        except Exception as exc:
            raise described(exc) from None
    try:
        return _CoreWriter(url, release)
    except sa.exc.DBAPIError as exc:
        raise _database_error(release, exc) from None


def begin_load(
    url: str,
    release: str,
    harmonized: pd.DataFrame,
    batches: list[dict],
    entities: list[dict],
    codebook_version: str | None = None,
) -> PendingLoad:
    """Replace release `release` in the warehouse at `url` with `harmonized`, in a transaction
    left open for `PendingLoad.commit` (which records the release's metadata).

    `harmonized` holds the codebook columns plus `_partner`/`_file`, which are
    resolved to entity_id/batch_id and not stored. Everything after the schema
    migration runs in one transaction, so a rerun replaces rather than duplicates.
    """
    codebook = default_codebook()
    _check_frame(harmonized, codebook)
    batch_frame = _batch_frame(batches)
    _check_links(harmonized, batch_frame, entities)
    try:
        migrate(url)
    except sa.exc.DBAPIError as exc:
        raise _database_error(release, exc) from None
    version = codebook_version or codebook.version  # else the warehouse's own codebook
    writer = _open_writer(url, release)
    try:
        entity_ids = writer.upsert_entities(entities)
        writer.replace_release(version, len(harmonized))
        stored = writer.insert_batches(batch_frame, entity_ids)
        rows = _case_rows(harmonized, release, _batch_ids(stored, entity_ids), codebook)
        del harmonized  # the rows are a copy: at a million records, hundreds of MiB less
        method = writer.insert_rows(rows)
    except BaseException as exc:
        writer.rollback()
        error = writer.database_error(exc)
        if error is not None:
            raise error from None
        raise
    counts = {
        "release": release,
        "case_records": len(rows),
        "batches": len(batch_frame),
        "entities": len(entities),
        "dialect": writer.dialect,
        "method": method,
    }
    return PendingLoad(writer, counts)


def load_release(
    url: str,
    release: str,
    harmonized: pd.DataFrame,
    batches: list[dict],
    entities: list[dict],
    metadata: dict,
) -> dict:
    """Replace release `release` in the warehouse at `url` with `harmonized`, in one
    transaction that also records `metadata`."""
    version = str(metadata.get("codebook_version") or "") or None
    return begin_load(url, release, harmonized, batches, entities, version).commit(metadata)


def _sqlite_connection(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # SQLite leaves FK enforcement off unless asked, per connection.
    cur.execute("PRAGMA foreign_keys=ON")
    # A page cache of up to 256 MiB for the load: inserting a million rows into the indexed
    # case_record table otherwise rereads its index pages (a third of the load's time).
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cur.close()


def _check_frame(harmonized: pd.DataFrame, codebook: Codebook) -> None:
    """Column presence, required year, value width: named by column and count only."""
    expected = [*codebook.columns, PARTNER, FILE]
    missing = [c for c in expected if c not in harmonized.columns]
    if missing:
        raise WarehouseError(f"harmonized frame lacks columns: {', '.join(missing)}")
    for var in codebook.variables:
        col = harmonized[var.name]
        if var.type == "year" or var.required:
            n_null = int(col.isna().sum())
            if n_null:
                raise WarehouseError(f"column '{var.name}': {n_null} rows are NULL")
        else:
            too_long = int((col.dropna().astype(str).str.len() > VALUE_LENGTH).sum())
            if too_long:
                raise WarehouseError(
                    f"column '{var.name}': {too_long} values exceed {VALUE_LENGTH} characters"
                )
    for col in (PARTNER, FILE):
        n_null = int(harmonized[col].isna().sum())
        if n_null:
            raise WarehouseError(f"column '{col}': {n_null} rows are NULL")


def _batch_frame(batches: Sequence[dict]) -> pd.DataFrame:
    keys = ["partner", "file", "sha256", *BATCH_COUNT_KEYS]
    for i, batch in enumerate(batches):
        missing = [k for k in keys if k not in batch]
        if missing:
            raise WarehouseError(f"batch {i} lacks keys: {', '.join(missing)}")
    frame = pd.DataFrame([{k: b[k] for k in keys} for b in batches], columns=keys)
    frame = frame.astype({"partner": str, "file": str, "sha256": str})
    dup = frame.duplicated(["partner", "file"])
    if dup.any():
        pairs = frame.loc[dup, ["partner", "file"]].itertuples(index=False)
        raise WarehouseError(
            "batches listed twice: " + ", ".join(f"partner '{p}', file '{f}'" for p, f in pairs)
        )
    return frame


def _check_links(
    harmonized: pd.DataFrame, batch_frame: pd.DataFrame, entities: Sequence[dict]
) -> None:
    """Every row must belong to a listed batch, every batch to a listed entity."""
    for i, entity in enumerate(entities):
        missing = [k for k in ENTITY_KEYS if k not in entity]
        if missing:
            raise WarehouseError(f"entity {i} lacks keys: {', '.join(missing)}")
    codes = {str(e["code"]) for e in entities}
    if len(codes) != len(entities):
        raise WarehouseError("entities list a partner code twice")
    unknown_partners = sorted(set(batch_frame["partner"]) - codes)
    if unknown_partners:
        raise WarehouseError(
            "batches of partners missing from entities: "
            + ", ".join(f"'{p}'" for p in unknown_partners)
        )
    # Partner codes and file names are bookkeeping, not case values: safe to name.
    links = harmonized[[PARTNER, FILE]].astype(str).drop_duplicates()
    known = batch_frame[["partner", "file"]].rename(columns={"partner": PARTNER, "file": FILE})
    orphans = links.merge(known, how="left", indicator=True).query("_merge == 'left_only'")
    if len(orphans):
        pairs = orphans[[PARTNER, FILE]].itertuples(index=False)
        raise WarehouseError(
            "harmonized rows link to no listed batch: "
            + ", ".join(f"partner '{p}', file '{f}'" for p, f in pairs)
        )


def _upsert_entities(conn: Connection, entities: Sequence[dict]) -> dict[str, int]:
    """Insert or update entities by code; return code -> id for all listed codes."""
    table = ReportingEntity.__table__
    values = [{k: str(e[k]) for k in ENTITY_KEYS} for e in entities]
    if values:
        dialect = conn.dialect.name
        if dialect in ("postgresql", "sqlite"):
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as dialect_insert
            else:
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            stmt = dialect_insert(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c.code],
                set_={"name": stmt.excluded.name, "datasource_type": stmt.excluded.datasource_type},
            )
            conn.execute(stmt, values)
        else:
            # Portable fallback: update the known codes, insert the others.
            existing = set(conn.scalars(sa.select(table.c.code)))
            new = [v for v in values if v["code"] not in existing]
            old = [v for v in values if v["code"] in existing]
            if old:
                conn.execute(
                    table.update()
                    .where(table.c.code == sa.bindparam("b_code"))
                    .values(name=sa.bindparam("name"), datasource_type=sa.bindparam("dst")),
                    [
                        {"b_code": v["code"], "name": v["name"], "dst": v["datasource_type"]}
                        for v in old
                    ],
                )
            if new:
                conn.execute(sa.insert(table), new)
    codes = [v["code"] for v in values]
    rows = conn.execute(sa.select(table.c.code, table.c.id).where(table.c.code.in_(codes)))
    return {code: entity_id for code, entity_id in rows}


def _delete_release(conn: Connection, release: str) -> None:
    # Children first, so the foreign keys hold throughout.
    conn.execute(sa.delete(case_record_table).where(case_record_table.c.release_label == release))
    conn.execute(sa.delete(ExtractBatch).where(ExtractBatch.release_label == release))
    conn.execute(sa.delete(DataRelease).where(DataRelease.label == release))


def _insert_batches(
    conn: Connection, release: str, batch_frame: pd.DataFrame, entity_ids: dict[str, int]
) -> pd.DataFrame:
    """Insert the release's batches; return them as stored (batch_id, entity_id, _file)."""
    frame = batch_frame.assign(
        release_label=release, entity_id=batch_frame["partner"].map(entity_ids)
    )
    records = (
        frame.rename(columns={"file": "file_name"})
        .drop(columns=["partner"])
        .astype(object)
        .to_dict("records")
    )
    if records:
        conn.execute(sa.insert(ExtractBatch), records)
    table = ExtractBatch.__table__
    return pd.DataFrame(
        conn.execute(
            sa.select(table.c.id, table.c.entity_id, table.c.file_name).where(
                table.c.release_label == release
            )
        ).all(),
        columns=["batch_id", "entity_id", FILE],
    )


def _batch_ids(stored: pd.DataFrame, entity_ids: dict[str, int]) -> pd.DataFrame:
    """The stored batches by (_partner, _file): batch_id, entity_id."""
    codes = pd.DataFrame(list(entity_ids.items()), columns=[PARTNER, "entity_id"]).astype(
        {"entity_id": "int64"}
    )
    return stored.astype({"entity_id": "int64"}).merge(codes, on="entity_id", how="inner")


def _case_rows(
    harmonized: pd.DataFrame, release: str, batch_ids: pd.DataFrame, codebook: Codebook
) -> pd.DataFrame:
    """The case_record rows as an object frame with None for NULL, in table order."""
    links = harmonized[[PARTNER, FILE]].astype(str)
    ids = links.merge(batch_ids, on=[PARTNER, FILE], how="left", validate="m:1")
    rows = harmonized[codebook.columns].reset_index(drop=True)
    rows.insert(0, "entity_id", ids["entity_id"].to_numpy())
    rows.insert(0, "batch_id", ids["batch_id"].to_numpy())
    rows.insert(0, "release_label", release)
    # PRIVACY: the record's keyed pseudonym, when the pipeline computed one (privacy/).
    extra = ["pseudonym"] if PSEUDONYM in harmonized.columns else []
    if extra:
        rows["pseudonym"] = harmonized[PSEUDONYM].reset_index(drop=True).astype(object)
    return rows[[*BOOKKEEPING_COLUMNS, *codebook.columns, *extra]]


def _row_tuples(rows: pd.DataFrame, size: int) -> Iterator[Iterator[tuple]]:
    """Chunks of rows as tuples of Python values with None for NULL (what the DBAPIs bind;
    numpy scalars are not), built column by column in C. Per chunk, so a million rows never
    exist as Python objects at once."""
    for start in range(0, len(rows), size):
        chunk = rows.iloc[start : start + size]
        columns = [chunk[name].to_numpy(dtype=object, na_value=None).tolist() for name in chunk]
        yield zip(*columns, strict=True)


def _arrow_rows(rows: pd.DataFrame) -> pa.Table:
    """The case_record rows as an Arrow table (integers as int64, text as string). A column
    of mixed Python objects goes as text, for the database to accept or refuse by type."""
    mixed = [name for name in rows if rows[name].dtype == object]
    return pa.Table.from_pandas(rows.astype(dict.fromkeys(mixed, "string")), preserve_index=False)


def _insert_rows(conn: Connection, rows: pd.DataFrame) -> str:
    """Bulk insert case records: COPY on PostgreSQL/psycopg 3, else Core executemany."""
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        _copy_rows(conn, rows)
        return "copy"
    if conn.dialect.name == "sqlite":
        # The DBAPI's executemany on plain tuples: Core's per-row parameter dicts cost
        # several times more than the insert itself at a million rows.
        columns = ", ".join(f'"{c}"' for c in rows.columns)
        marks = ", ".join("?" for _ in rows.columns)
        statement = f'INSERT INTO "{CASE_TABLE}" ({columns}) VALUES ({marks})'
        cursor = conn.connection.driver_connection.cursor()
        for chunk in _row_tuples(rows, INSERT_CHUNK_ROWS):
            cursor.executemany(statement, chunk)
        return "executemany"
    names = list(rows.columns)
    for chunk in _row_tuples(rows, INSERT_CHUNK_ROWS):
        conn.execute(
            sa.insert(case_record_table), [dict(zip(names, r, strict=True)) for r in chunk]
        )
    return "insert"


def _copy_rows(conn: Connection, rows: pd.DataFrame) -> None:
    """COPY in CSV written by Arrow, in blocks: a NULL is an unquoted empty field, every text
    value is quoted (so an empty text would stay text), no Python object per value."""
    from psycopg import sql
    from pyarrow import csv as pacsv

    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.Identifier(CASE_TABLE), sql.SQL(", ").join(sql.Identifier(c) for c in rows.columns)
    )
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    # The driver connection of this SQLAlchemy connection: same transaction.
    dbapi_conn = conn.connection.driver_connection
    try:
        table = _arrow_rows(rows)  # Arrow's conversion errors quote the value: caught below
        with dbapi_conn.cursor() as cur, cur.copy(statement) as copy:
            for start in range(0, table.num_rows, INSERT_CHUNK_ROWS):
                block = pa.BufferOutputStream()
                pacsv.write_csv(table.slice(start, INSERT_CHUNK_ROWS), block, options)
                copy.write(block.getvalue())
    except Exception as exc:
        # psycopg's message can quote the offending value; keep class and SQLSTATE only.
        code = getattr(exc, "sqlstate", None)
        raise WarehouseError(
            f"COPY into {CASE_TABLE} failed: {type(exc).__name__}"
            + (f" (SQLSTATE {code})" if code else "")
        ) from None
