"""The SQLite load without a Python object per value: the case records go in from Arrow.

The standard library's sqlite3 binds row by row from Python tuples, which costs about as much
as SQLite's own insert (more than 10 s at a million records). The ADBC SQLite driver binds
an Arrow table directly. Its connection runs the whole load transaction, the release's own
rows included (entities, release, batches; plain SQL on the tables the models define), so
the load stays one transaction that `commit` ends with the release's metadata, with the
foreign keys enforced as on every other connection to the warehouse. `loader.begin_load`
runs the steps, in the same order as on a SQLAlchemy connection.

The schema is created and upgraded by Alembic beforehand, through SQLAlchemy, as for every
backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa

from ctdc_harmonizer.columns import FILE
from ctdc_harmonizer.warehouse.models import (
    CaseRecord,
    DataRelease,
    ExtractBatch,
    ReportingEntity,
)

# SQLAlchemy's own text form of a DateTime on SQLite: rows loaded either way read the same.
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"
INGEST_ROWS = 100_000
CACHE_KIB = 64 * 1024  # as fast as 256 MiB at a million records, 80 MiB less memory
ENTITY, RELEASE, BATCH, CASE = (
    model.__table__.name for model in (ReportingEntity, DataRelease, ExtractBatch, CaseRecord)
)


def available() -> bool:
    try:
        import adbc_driver_sqlite.dbapi  # noqa: F401
    except ImportError:
        return False
    return True


def _columns(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


class ArrowWriter:
    """An open load transaction on an ADBC connection (see the module docstring)."""

    dialect = "sqlite"

    def __init__(self, database: str, release: str, on_error: Callable[[Exception], Exception]):
        import adbc_driver_sqlite.dbapi as adbc

        self.release, self._on_error = release, on_error
        # The transaction is ours (BEGIN ... COMMIT): SQLite takes its pragmas only outside one.
        self._connection = adbc.connect(database, autocommit=True)
        self._cursor = self._connection.cursor()
        self._cursor.execute("PRAGMA foreign_keys=ON")  # off by default, per connection
        self._cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # index pages, not a GiB
        self._cursor.execute("BEGIN IMMEDIATE")  # the write lock now: a rival load waits here

    def database_error(self, exc: BaseException) -> Exception | None:
        """The value-free error for the driver's `exc`; None when it is not the driver's."""
        if isinstance(exc, Exception) and type(exc).__module__.startswith("adbc_driver"):
            return self._on_error(exc)
        return None

    def upsert_entities(self, entities: Sequence[dict]) -> dict[str, int]:
        cur = self._cursor
        cur.executemany(
            f'INSERT INTO "{ENTITY}" (code, name, datasource_type) VALUES (?, ?, ?) '
            "ON CONFLICT (code) DO UPDATE SET name = excluded.name, "
            "datasource_type = excluded.datasource_type",
            [(str(e["code"]), str(e["name"]), str(e["datasource_type"])) for e in entities],
        )
        cur.execute(f'SELECT code, id FROM "{ENTITY}"')
        return {code: entity_id for code, entity_id in cur.fetchall()}

    def replace_release(self, codebook_version: str, row_count: int) -> None:
        cur = self._cursor
        for table, column in (  # children first, so the foreign keys hold throughout
            (CASE, "release_label"),
            (BATCH, "release_label"),
            (RELEASE, "label"),
        ):
            cur.execute(f'DELETE FROM "{table}" WHERE "{column}" = ?', (self.release,))
        created = datetime.now(UTC).strftime(SQLITE_DATETIME)
        cur.execute(
            f'INSERT INTO "{RELEASE}" (label, codebook_version, created_at, row_count, '
            "metadata_json) VALUES (?, ?, ?, ?, '{}')",
            (self.release, codebook_version, created, row_count),
        )

    def insert_batches(self, batch_frame: pd.DataFrame, entity_ids: dict[str, int]) -> pd.DataFrame:
        cur, release = self._cursor, self.release
        counts = [c for c in batch_frame.columns if c.startswith("rows_")]
        names = ["release_label", "entity_id", "file_name", "sha256", *counts]
        marks = ", ".join("?" for _ in names)
        cur.executemany(
            f'INSERT INTO "{BATCH}" ({_columns(names)}) VALUES ({marks})',
            [
                (
                    release,
                    entity_ids[b["partner"]],
                    b["file"],
                    b["sha256"],
                    *(int(b[c]) for c in counts),
                )
                for b in batch_frame.to_dict("records")
            ],
        )
        cur.execute(
            f'SELECT id, entity_id, file_name FROM "{BATCH}" WHERE release_label = ?', (release,)
        )
        return pd.DataFrame(cur.fetchall(), columns=["batch_id", "entity_id", FILE])

    def insert_rows(self, rows: pd.DataFrame) -> str:
        for start in range(0, len(rows), INGEST_ROWS):  # Arrow per block: one copy at a time
            block = pa.Table.from_pandas(
                rows.iloc[start : start + INGEST_ROWS], preserve_index=False
            )
            self._cursor.adbc_ingest(CASE, block, mode="append")
        return "arrow"

    def commit(self, metadata_json: str) -> None:
        try:
            self._cursor.execute(
                f'UPDATE "{RELEASE}" SET metadata_json = ? WHERE label = ?',
                (metadata_json, self.release),
            )
            self._cursor.execute("COMMIT")
        except Exception as exc:
            raise self._on_error(exc) from None
        finally:
            self.close()

    def rollback(self) -> None:
        try:
            self._cursor.execute("ROLLBACK")
        finally:
            self.close()

    def close(self) -> None:
        self._cursor.close()
        self._connection.close()
