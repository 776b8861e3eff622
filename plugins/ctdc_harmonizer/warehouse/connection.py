"""One way into the warehouse: statements built from the models, a native bulk path per
backend, one value-free error path.

Every statement is a SQLAlchemy Core expression over `models.py`'s tables (no table or column
name is typed twice). What differs per backend is only how it runs:

- a SQLite file: the ADBC SQLite driver, whose connection binds and returns Arrow tables
  (a million rows without a Python object per value); the Core statements are compiled for
  SQLite and run on it, in one transaction of ours (BEGIN IMMEDIATE ... COMMIT);
- PostgreSQL (psycopg 3): a SQLAlchemy connection; bulk rows go in with COPY (CSV written by
  Arrow) and come out with COPY ... TO STDOUT read by Arrow;
- anything else (SQLite in memory, other dialects): a SQLAlchemy connection, rows bound
  through executemany and fetched as tuples.

Privacy: the rows describe trafficking survivors. No error raised here quotes a value: a
database error keeps its class, its SQLSTATE and a classification (disk full, unreachable or
busy: retryable), never the driver's text, which may quote a row (PostgreSQL's "invalid input
syntax ...: <value>").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from ctdc_harmonizer.errors import ContractError, InfrastructureError

log = logging.getLogger(__name__)

INGEST_ROWS = 100_000  # Arrow blocks per bulk insert: one copy of a block at a time
SQLITE_CACHE_KIB = 64 * 1024  # index pages of a million-row load stay in memory
# SQLAlchemy's own text form of a DateTime on SQLite: rows written either way read the same.
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"
DISK_FULL_SQLSTATE = "53100"
DISK_FULL_PHRASES = ("database or disk is full", "no space left on device")


class WarehouseError(ContractError):
    """A warehouse statement failed; the message never quotes a row value."""


class WarehouseUnavailableError(InfrastructureError):
    """The database could not be reached or was busy: retrying may help (Airflow retries)."""


class WarehouseDiskFullError(InfrastructureError):
    """The database's disk is full: free space, then rerun (nothing was committed)."""


def database_error(doing: str, exc: BaseException) -> Exception:
    """The value-free error for a driver's `exc` while `doing` something: its class and
    SQLSTATE, disk full and unreachable/busy told apart. The driver's text is read only to
    recognise a full disk, never repeated."""
    original = getattr(exc, "orig", None) or exc
    kind = type(original).__name__
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    text = f"{doing} failed in the database: {kind}" + (f" (SQLSTATE {code})" if code else "")
    lowered = str(original).lower()
    if code == DISK_FULL_SQLSTATE or any(phrase in lowered for phrase in DISK_FULL_PHRASES):
        return WarehouseDiskFullError(
            f"{text}: disk full where the warehouse is stored; free space and rerun (nothing "
            "was committed)"
        )
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or kind in {
        "OperationalError",
        "InterfaceError",
    }:
        return WarehouseUnavailableError(
            f"{text}: the warehouse cannot be reached or is busy (retrying may help)"
        )
    return WarehouseError(text)


def _is_driver_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return isinstance(exc, sa.exc.DBAPIError) or module.startswith(
        ("adbc_driver", "psycopg", "sqlite3")
    )


class Warehouse(Protocol):
    """An open warehouse connection (see the module docstring). `begin()` starts the one
    transaction that `commit()` or `rollback()` ends; reads work without one."""

    dialect: str

    def begin(self) -> None: ...
    def execute(self, statement: sa.Executable, rows: Sequence[Mapping] | None = None) -> list: ...
    def insert_arrow(self, table: sa.Table, data: pa.Table) -> None: ...
    def insert_arrow_ids(self, table: sa.Table, data: pa.Table) -> np.ndarray | None: ...
    def bulk_load(self, tables: Sequence[sa.Table]) -> contextlib.AbstractContextManager: ...
    def select_arrow(self, statement: sa.Select) -> pa.Table: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.strftime(SQLITE_DATETIME)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


class _SqliteArrow:
    """A SQLite file through the ADBC driver (Core statements compiled for SQLite)."""

    dialect = "sqlite"

    def __init__(self, database: str, busy_seconds: float = 30.0):
        import adbc_driver_sqlite.dbapi as adbc
        from sqlalchemy.dialects import sqlite

        self._dialect = sqlite.dialect(paramstyle="qmark")
        # The transaction is ours (BEGIN ... COMMIT): SQLite takes its pragmas only outside one.
        self._connection = adbc.connect(database, autocommit=True)
        self._cursor = self._connection.cursor()
        self._cursor.execute("PRAGMA foreign_keys=ON")  # off by default, per connection
        self._cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        # A rival writer's transaction is waited for, this long (URL option `timeout`).
        self._cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")

    def _compiled(
        self, statement: sa.Executable, keys: list[str] | None = None
    ) -> tuple[str, list[str], dict]:
        """The statement's SQL for SQLite, its parameter names in order, their bound values
        (`keys`: the columns an executemany's rows give)."""
        if isinstance(statement, sa.schema.ExecutableDDLElement):  # CREATE/DROP: no values
            return str(statement.compile(dialect=self._dialect)), [], {}
        compiled = statement.compile(
            dialect=self._dialect, column_keys=keys, compile_kwargs={"render_postcompile": True}
        )
        return str(compiled), list(compiled.positiontup or []), compiled.params

    def begin(self) -> None:
        self._cursor.execute("BEGIN IMMEDIATE")  # the write lock now: a rival writer waits

    def execute(self, statement: sa.Executable, rows: Sequence[Mapping] | None = None) -> list:
        if rows is not None:  # executemany: each row's values, else the statement's own
            if rows:
                sql, names, bound = self._compiled(statement, list(rows[0]))
                self._cursor.executemany(
                    sql,
                    [tuple(_sqlite_value(row.get(n, bound.get(n))) for n in names) for row in rows],
                )
            return []
        sql, names, bound = self._compiled(statement)
        self._cursor.execute(sql, tuple(_sqlite_value(bound[n]) for n in names))
        return self._cursor.fetchall() if self._cursor.description else []

    def insert_arrow(self, table: sa.Table, data: pa.Table) -> None:
        # A temporary table (info "temporary") lives in SQLite's temp schema, not in main.
        temporary = bool(table.info.get("temporary"))
        for start in range(0, data.num_rows, INGEST_ROWS):
            block = data.slice(start, INGEST_ROWS)
            self._cursor.adbc_ingest(table.name, block, mode="append", temporary=temporary)

    def insert_arrow_ids(self, table: sa.Table, data: pa.Table) -> np.ndarray | None:
        """`insert_arrow`, then the integer primary key each row got, in row order, known
        without reading the rows back: SQLite gives a row inserted without a rowid the largest
        rowid of its table plus one (a table without AUTOINCREMENT, as every table here), and
        in our write transaction (BEGIN IMMEDIATE) no one else inserts; the rows are inserted
        one after another in their order. Only when the largest rowid grew by exactly the row
        count were all of them numbered so (SQLite picks a random unused rowid once the
        largest is 2**63 - 1); otherwise None, and the caller reads them back."""
        (key,) = table.primary_key.columns
        largest = sa.select(sa.func.coalesce(sa.func.max(key), 0))
        before = int(self.execute(largest)[0][0])
        self.insert_arrow(table, data)
        after = int(self.execute(largest)[0][0])
        if after - before != data.num_rows:
            return None
        return np.arange(before + 1, after + 1, dtype=np.int64)

    @contextlib.contextmanager
    def bulk_load(self, tables: Sequence[sa.Table]) -> Iterator[None]:
        """A block that fills `tables` in this transaction: the indexes of each of them that
        holds no row yet (a first release) are dropped, then created again at the block's end
        from the very SQL the schema holds: one sort of a million keys per index instead of a
        B-tree insert per row and index. A table with rows keeps its indexes (an incremental
        commit adds few rows to large indexes). If the block raises, the indexes are not
        created again: the caller's transaction rolls back, and with it their drop."""
        dropped: list[str] = []
        for table in tables:
            if self.execute(sa.select(sa.literal(1)).select_from(table).limit(1)):
                continue
            self._cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                "AND sql IS NOT NULL ORDER BY name",
                (table.name,),
            )
            for name, sql in self._cursor.fetchall():
                self._cursor.execute(f'DROP INDEX "{name}"')
                dropped.append(sql)
        yield
        for sql in dropped:
            self._cursor.execute(sql)

    def select_arrow(self, statement: sa.Select) -> pa.Table:
        sql, names, bound = self._compiled(statement)
        self._cursor.execute(sql, tuple(_sqlite_value(bound[n]) for n in names))
        return self._cursor.fetch_arrow_table()

    def commit(self) -> None:
        self._cursor.execute("COMMIT")

    def rollback(self) -> None:
        with contextlib.suppress(Exception):
            self._cursor.execute("ROLLBACK")

    def close(self) -> None:
        self._cursor.close()
        self._connection.close()


def _arrow_type(column: sa.Column) -> pa.DataType:
    python = column.type.python_type if hasattr(column.type, "python_type") else str
    if python is int:
        return pa.int64()
    if python is float:
        return pa.float64()
    return pa.string()


class _Core:
    """A SQLAlchemy connection: PostgreSQL (COPY both ways) or any other dialect."""

    def __init__(self, url: str):
        # hide_parameters: SQLAlchemy would otherwise print bound row values in errors.
        self._engine = sa.create_engine(url, hide_parameters=True, poolclass=sa.pool.NullPool)
        self.dialect = self._engine.dialect.name
        if self.dialect == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        try:
            self._conn = self._engine.connect()
        except BaseException:
            self._engine.dispose()
            raise
        self._copy = self.dialect == "postgresql" and self._engine.dialect.driver == "psycopg"
        self._transaction: sa.Transaction | None = None

    def begin(self) -> None:
        if self._conn.in_transaction():  # a read opened an implicit one: start clean
            self._conn.rollback()
        self._transaction = self._conn.begin()

    def execute(self, statement: sa.Executable, rows: Sequence[Mapping] | None = None) -> list:
        if rows is not None:
            if rows:
                self._conn.execute(statement, list(rows))
            return []
        result = self._conn.execute(statement)
        return result.all() if result.returns_rows else []

    def insert_arrow(self, table: sa.Table, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        if self._copy:
            self._copy_in(table, data)
            return
        names = data.column_names
        for start in range(0, data.num_rows, INGEST_ROWS):
            block = data.slice(start, INGEST_ROWS).to_pylist()
            self._conn.execute(sa.insert(table), [{n: r[n] for n in names} for r in block])

    def insert_arrow_ids(self, table: sa.Table, data: pa.Table) -> np.ndarray | None:
        """`insert_arrow`; the keys the rows got are not known here (a sequence may be shared
        with other sessions, and COPY returns none): None, the caller reads them back."""
        self.insert_arrow(table, data)
        return None

    @contextlib.contextmanager
    def bulk_load(self, tables: Sequence[sa.Table]) -> Iterator[None]:
        """Nothing done here: the indexes stay as they are (see _SqliteArrow.bulk_load)."""
        yield

    def _copy_in(self, table: sa.Table, data: pa.Table) -> None:
        """COPY in CSV written by Arrow: a NULL is an unquoted empty field, text is quoted
        when needed (an empty text then stays text), no Python object per value."""
        from psycopg import sql
        from pyarrow import csv as pacsv

        statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
            sql.Identifier(table.name),
            sql.SQL(", ").join(sql.Identifier(c) for c in data.column_names),
        )
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        cursor = self._conn.connection.driver_connection.cursor()
        with cursor, cursor.copy(statement) as copy:
            for start in range(0, data.num_rows, INGEST_ROWS):
                block = pa.BufferOutputStream()
                pacsv.write_csv(data.slice(start, INGEST_ROWS), block, options)
                copy.write(block.getvalue())

    def select_arrow(self, statement: sa.Select) -> pa.Table:
        columns = list(statement.selected_columns)
        schema = pa.schema([(c.name, _arrow_type(c)) for c in columns])
        if self._copy:
            return self._copy_out(statement, schema)
        rows = self._conn.execute(statement).all()
        arrays = [pa.array([r[i] for r in rows], type=f.type) for i, f in enumerate(schema)]
        return pa.Table.from_arrays(arrays, schema=schema)

    def _copy_out(self, statement: sa.Select, schema: pa.Schema) -> pa.Table:
        from pyarrow import csv as pacsv

        compiled = statement.compile(
            dialect=self._engine.dialect, compile_kwargs={"literal_binds": True}
        )
        copy_sql = f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv, HEADER false)"
        buffer = io.BytesIO()
        cursor = self._conn.connection.driver_connection.cursor()
        with cursor, cursor.copy(copy_sql) as copy:
            for block in copy:
                buffer.write(block)
        if not buffer.getbuffer().nbytes:
            return schema.empty_table()
        buffer.seek(0)
        return pacsv.read_csv(
            buffer,
            read_options=pacsv.ReadOptions(column_names=schema.names),
            convert_options=pacsv.ConvertOptions(
                column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False
            ),
        )

    def commit(self) -> None:
        if self._transaction is not None:
            self._transaction.commit()
            self._transaction = None
        elif self._conn.in_transaction():
            self._conn.commit()

    def rollback(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.rollback()
        self._transaction = None

    def close(self) -> None:
        self._conn.close()
        self._engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # off unless asked, per connection
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def _adbc_available() -> bool:
    try:
        import adbc_driver_sqlite.dbapi  # noqa: F401
    except ImportError:
        return False
    return True


def open_warehouse(url: str) -> Warehouse:
    """A connection to the (migrated) warehouse at `url`: ADBC on a SQLite file when the
    driver is installed, else SQLAlchemy. Driver errors value-free."""
    parsed = sa.make_url(url)
    database = parsed.database
    try:
        if (
            parsed.get_backend_name() == "sqlite"
            and database
            and database != ":memory:"
            and _adbc_available()
        ):
            timeout = float(parsed.query.get("timeout", 30.0))
            return _SqliteArrow(database, busy_seconds=timeout)
        return _Core(url)
    except Exception as exc:
        if _is_driver_error(exc):
            raise database_error("opening the warehouse", exc) from None
        raise


@contextlib.contextmanager
def warehouse(url: str, doing: str, write: bool = False) -> Iterator[Warehouse]:
    """An open warehouse for one piece of work: with `write`, in one transaction committed at
    the end (rolled back on any error); every driver error becomes `database_error(doing)`."""
    connection = open_warehouse(url)
    try:
        if write:
            connection.begin()
        yield connection
        if write:
            connection.commit()
    except BaseException as exc:
        if write:
            connection.rollback()
        if isinstance(exc, Exception) and _is_driver_error(exc):
            raise database_error(doing, exc) from None
        raise
    finally:
        connection.close()
