"""The warehouse: its schema through Alembic, one connection interface with a native bulk path
per backend (ADBC on a SQLite file, COPY on PostgreSQL, SQLAlchemy otherwise) and one
value-free error path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.warehouse import default_warehouse_url, migrate
from ctdc_harmonizer.warehouse.connection import (
    WarehouseDiskFullError,
    WarehouseError,
    WarehouseUnavailableError,
    database_error,
    open_warehouse,
    warehouse,
)
from ctdc_harmonizer.warehouse.models import (
    DataRelease,
    Delivery,
    ReportingEntity,
    WithdrawalRegistry,
)
from ctdc_harmonizer.warehouse.schema import alembic_config
from support.databases import postgres_schema

CODEBOOK = default_codebook()
TABLES = [
    "reporting_entity",
    "data_release",
    "delivery",
    "delivery_file",
    "staged_record",
    "case_record",
    "release_exclusion",
    "partner_snapshot",
    "pending_purge",
]
PLANTED = "Zorana Plantedova, born 1987-05-09"  # a value no error may quote

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'wh' / 'warehouse.sqlite'}"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_schema("ctdc_test") as url:
        yield url


@pytest.fixture(
    params=[
        "sqlite-adbc",
        "sqlite-core",
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The same test through each way into a warehouse."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
        if request.param == "sqlite-core":  # as where the ADBC driver is not installed
            monkeypatch.setattr(
                "ctdc_harmonizer.warehouse.connection._adbc_available", lambda: False
            )
    migrate(url)
    from ctdc_harmonizer.warehouse.models import case_record_table

    with warehouse(url, "emptying", write=True) as db:
        db.execute(sa.delete(case_record_table))
        db.execute(sa.delete(WithdrawalRegistry))
        db.execute(sa.delete(Delivery))
        db.execute(sa.delete(DataRelease))
        db.execute(sa.delete(ReportingEntity))
    return url


def test_migrate_creates_the_store(sqlite_url: str) -> None:
    migrate(sqlite_url)
    migrate(sqlite_url)  # a second upgrade is a no-op
    engine = sa.create_engine(sqlite_url)
    insp = sa.inspect(engine)
    assert set(TABLES) <= set(insp.get_table_names())
    assert "extract_batch" not in insp.get_table_names()  # replaced by delivery_file (0005)
    assert "ctdc_release_v3" in insp.get_view_names()
    cols = {c["name"]: c for c in insp.get_columns("case_record")}
    assert [c for c in cols if c in CODEBOOK.columns] == CODEBOOK.columns
    assert {"valid_from", "valid_to", "end_reason", "identity_key", "pseudonym"} <= set(cols)
    for var in CODEBOOK.variables:
        col = cols[var.name]
        if var.type == "year":
            assert isinstance(col["type"], sa.Integer) and not col["nullable"]
        else:
            assert isinstance(col["type"], sa.String) and col["type"].length == 64
            assert col["nullable"]
    staged = {c["name"] for c in insp.get_columns("staged_record")}
    # PRIVACY: the staged store holds keys and de-identified values, no id, name or date.
    assert staged == {
        "id",
        "entity_id",
        "delivery_file_id",
        "source_row",
        "identity_key",
        "pseudonym",
        "content_key",
        "link_exact",
        "link_exact_swapped",
        "link_sound",
        "link_sound_swapped",
        "payload",
        "valid_from",
        "valid_to",
        "end_reason",
    }
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    engine.dispose()


COUNTS = ["rows_read", "rows_new", "rows_revised", "rows_unchanged", "rows_rejected"]
COUNTS += ["rows_excluded", "rows_erased", "rows_duplicates_merged", "records_retired"]


def _release(db, label: str = "r1") -> int:
    db.execute(sa.insert(ReportingEntity), [{"code": "p", "name": "P", "datasource_type": "x"}])
    db.execute(
        sa.insert(DataRelease),
        [
            {
                "label": label,
                "sequence": 1,
                "codebook_version": "3",
                "created_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
                "row_count": 0,
                "row_order": "keyed",
                "metadata_json": "{}",
            }
        ],
    )
    return db.execute(sa.select(ReportingEntity.id))[0][0]


def test_bulk_rows_go_in_and_come_out_the_same(url: str) -> None:
    """Text that CSV and SQL must quote, an empty text beside a NULL, years."""
    from ctdc_harmonizer.warehouse.models import case_record_table

    texts = ["a,b", 'say "no"', "two\nlines", "", None, "Côte d'Ivoire", "x" * 64]
    n = len(texts)
    with warehouse(url, "loading", write=True) as db:
        entity = _release(db)
        data = pa.table(
            {
                "entity_id": [entity] * n,
                "identity_key": [f"{i:064x}" for i in range(n)],
                "codebook_version": ["3"] * n,
                "yearOfRegistration": list(range(2002, 2002 + n)),
                "gender": texts,
                "valid_from": [1] * n,
            }
        )
        db.insert_arrow(case_record_table, data)
    with warehouse(url, "reading") as db:
        back = db.select_arrow(
            sa.select(case_record_table.c.gender, case_record_table.c.yearOfRegistration).order_by(
                case_record_table.c.identity_key
            )
        )
    assert back.column("gender").to_pylist() == texts
    assert back.column("yearOfRegistration").to_pylist() == list(range(2002, 2002 + n))


def test_inserted_rows_ids_are_the_ones_the_rows_got(url: str) -> None:
    """`insert_arrow_ids`: on a SQLite file the ids the rows got, in row order, without reading
    them back (after rows deleted from the top, and across the bulk path's blocks); elsewhere
    None (the caller reads them back)."""
    from ctdc_harmonizer.warehouse import connection
    from ctdc_harmonizer.warehouse.models import case_record_table as case

    def rows(first: int, n: int) -> pa.Table:
        return pa.table(
            {
                "entity_id": [entity] * n,
                "identity_key": [f"{i:064x}" for i in range(first, first + n)],
                "codebook_version": ["3"] * n,
                "yearOfRegistration": [2020] * n,
                "valid_from": [1] * n,
            }
        )

    with warehouse(url, "loading", write=True) as db:
        entity = _release(db)
        db.insert_arrow(case, rows(0, 5))
        db.execute(sa.delete(case).where(case.c.identity_key >= f"{3:064x}"))  # ids 4, 5
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(connection, "INGEST_ROWS", 3)  # blocks of 3 rows
            got = db.insert_arrow_ids(case, rows(100, 7))
        stored = db.execute(
            sa.select(case.c.identity_key, case.c.id).where(case.c.identity_key >= f"{100:064x}")
        )
    if not isinstance(db, connection._SqliteArrow):  # SQLAlchemy, PostgreSQL: read back
        assert got is None
        return
    by_key = dict(stored)
    assert got.tolist() == [by_key[f"{i:064x}"] for i in range(100, 107)]
    assert got.tolist() == list(range(4, 11))  # the largest id left (3), plus one, ...


def test_a_transaction_is_all_or_nothing(url: str) -> None:
    with pytest.raises(WarehouseError), warehouse(url, "loading", write=True) as db:
        db.execute(sa.insert(ReportingEntity), [{"code": "a", "name": "A", "datasource_type": "x"}])
        db.execute(sa.insert(ReportingEntity), [{"code": "a", "name": "B", "datasource_type": "y"}])
    with warehouse(url, "reading") as db:
        assert db.execute(sa.select(sa.func.count()).select_from(ReportingEntity)) == [(0,)]


def test_errors_never_quote_a_value(url: str) -> None:
    with pytest.raises(WarehouseError) as caught, warehouse(url, "loading", write=True) as db:
        row = {"code": PLANTED, "name": PLANTED, "datasource_type": PLANTED}
        db.execute(sa.insert(ReportingEntity), [row, row])  # the unique code, twice
    message = str(caught.value)
    assert "loading failed in the database" in message
    assert "Zorana" not in message and "1987" not in message
    assert caught.value.__cause__ is None


def test_foreign_keys_hold_on_every_connection(url: str) -> None:
    orphan = {
        "entity_id": 999,
        "release_label": "nowhere",
        "mode": "full",
        "received_at": dt.datetime(2025, 1, 1),
        "source": "landing folder",
        "mapping_sha256": None,
        "codebook_version": "3",
        **dict.fromkeys(COUNTS, 0),
    }
    with pytest.raises(WarehouseError), warehouse(url, "loading", write=True) as db:
        db.execute(sa.insert(Delivery), [orphan])


class _Driver(Exception):
    """Stands for a driver's error class (its message may quote a value)."""

    def __init__(self, text: str, sqlstate: str | None = None):
        super().__init__(text)
        self.sqlstate = sqlstate


_Driver.__module__ = "psycopg.errors"


@pytest.mark.parametrize(
    ("error", "kind", "said"),
    [
        (_Driver(f"value too long: {PLANTED}", "22001"), WarehouseError, "SQLSTATE 22001"),
        (
            _Driver("could not extend file: No space left on device", "53100"),
            WarehouseDiskFullError,
            "disk full",
        ),
        (_Driver("database or disk is full"), WarehouseDiskFullError, "disk full"),
    ],
)
def test_driver_errors_are_classified_without_their_text(error, kind, said) -> None:
    described = database_error("committing release '2025'", error)
    assert isinstance(described, kind) and said in str(described)
    assert "Zorana" not in str(described) and "extend" not in str(described)


def test_an_unreachable_database_is_worth_retrying() -> None:
    from ctdc_harmonizer.safety import is_infrastructure

    operational = sa.exc.OperationalError("SELECT 1", {}, _Driver(f"refused {PLANTED}"))
    described = database_error("reading the store", operational)
    assert isinstance(described, WarehouseUnavailableError) and is_infrastructure(described)
    assert "Zorana" not in str(described)


def test_a_sqlite_file_is_opened_through_arrow(sqlite_url: str) -> None:
    migrate(sqlite_url)
    connection = open_warehouse(sqlite_url)
    try:
        assert type(connection).__name__ == "_SqliteArrow"
    finally:
        connection.close()


def test_default_warehouse_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTDC_WAREHOUSE_URL", raising=False)
    assert default_warehouse_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/warehouse.sqlite"
    monkeypatch.setenv("CTDC_WAREHOUSE_URL", "postgresql+psycopg://u@h/db")
    assert default_warehouse_url(tmp_path) == "postgresql+psycopg://u@h/db"
