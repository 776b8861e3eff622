"""Warehouse: Alembic schema, view generated from the codebook, idempotent release loads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.warehouse import default_warehouse_url, load_release, migrate
from ctdc_harmonizer.warehouse import loader as loader_module
from ctdc_harmonizer.warehouse.loader import WarehouseError
from databases import postgres_schema

CODEBOOK = default_codebook()
TABLES = ["reporting_entity", "data_release", "extract_batch", "case_record"]
ENTITIES = [
    {"code": "iom", "name": "IOM", "datasource_type": "Case Management"},
    {"code": "hotline", "name": "Hotline partner", "datasource_type": "Hotline"},
]
# (partner, file, rows in the frame)
FILES = [("iom", "iom_2024.xlsx", 5), ("iom", "iom_2023.xlsx", 3), ("hotline", "calls.csv", 4)]


def make_frame() -> pd.DataFrame:
    """A small harmonized frame: every codebook column, cycling allowed values and NULLs."""
    n = sum(rows for _, _, rows in FILES)
    data: dict[str, pd.Series] = {}
    for var in CODEBOOK.variables:
        if var.type == "year":
            data[var.name] = pd.Series([2018 + i % 5 for i in range(n)], dtype="Int64")
            continue
        pool = ["USA", "PHL", "UKR"] if var.type == "country" else var.allowed
        # Every third value is NULL, so NULL handling is exercised in each column.
        values = [pd.NA if i % 3 == 0 else pool[i % len(pool)] for i in range(n)]
        data[var.name] = pd.Series(values, dtype="string")
    frame = pd.DataFrame(data)
    frame["_partner"] = [p for p, _, rows in FILES for _ in range(rows)]
    frame["_file"] = [f for _, f, rows in FILES for _ in range(rows)]
    return frame


def make_batches() -> list[dict]:
    return [
        {
            "partner": p,
            "file": f,
            "sha256": "0" * 64,
            "rows_read": rows + 2,
            "rows_harmonized": rows,
            "rows_rejected": 1,
            "rows_excluded": 1,
            "rows_erased": 0,
            "rows_duplicates_merged": 0,
        }
        for p, f, rows in FILES
    ]


def counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
    engine.dispose()
    return out


def load(url: str, release: str = "2025-02", frame: pd.DataFrame | None = None) -> dict:
    frame = make_frame() if frame is None else frame
    return load_release(
        url, release, frame, make_batches(), ENTITIES, {"codebook_version": "3", "note": "test"}
    )


def check_release(url: str, release: str = "2025-02") -> None:
    """View columns, per-release counts and NULLs against the frame that was loaded."""
    frame = make_frame()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        result = conn.execute(
            sa.text('SELECT * FROM ctdc_release_v3 WHERE "release_label" = :r'), {"r": release}
        )
        assert list(result.keys()) == ["release_label", *CODEBOOK.columns]
        view = pd.DataFrame(result.all(), columns=list(result.keys()))
        assert len(view) == len(frame)
        for col in CODEBOOK.columns:
            n_null = conn.execute(
                sa.text(
                    f'SELECT count(*) FROM case_record WHERE release_label = :r AND "{col}" IS NULL'
                ),
                {"r": release},
            ).scalar_one()
            assert n_null == int(frame[col].isna().sum()), col
        # Stored values equal the frame's, as a multiset (row order is not a contract).
        assert sorted(view["yearOfRegistration"]) == sorted(frame["yearOfRegistration"])
        assert sorted(view["gender"].dropna()) == sorted(frame["gender"].dropna())
        per_batch = dict(
            conn.execute(
                sa.text(
                    "SELECT b.file_name, count(c.id) FROM extract_batch b "
                    "JOIN case_record c ON c.batch_id = b.id AND c.entity_id = b.entity_id "
                    "WHERE b.release_label = :r GROUP BY b.file_name"
                ),
                {"r": release},
            ).all()
        )
        assert per_batch == {f: rows for _, f, rows in FILES}
        meta = conn.execute(
            sa.text("SELECT codebook_version, row_count FROM data_release WHERE label = :r"),
            {"r": release},
        ).one()
        assert tuple(meta) == ("3", len(frame))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'wh' / 'warehouse.sqlite'}"


def test_migrate_creates_codebook_columns(sqlite_url: str) -> None:
    migrate(sqlite_url)
    migrate(sqlite_url)  # a second upgrade is a no-op
    engine = sa.create_engine(sqlite_url)
    insp = sa.inspect(engine)
    assert set(TABLES) <= set(insp.get_table_names())
    assert "ctdc_release_v3" in insp.get_view_names()
    cols = {c["name"]: c for c in insp.get_columns("case_record")}
    # pseudonym: migration 0003 (privacy), never in the release view
    assert list(cols) == [
        "id",
        "release_label",
        "batch_id",
        "entity_id",
        *CODEBOOK.columns,
        "pseudonym",
    ]
    for var in CODEBOOK.variables:
        col = cols[var.name]
        if var.type == "year":
            assert isinstance(col["type"], sa.Integer) and not col["nullable"]
        else:
            assert isinstance(col["type"], sa.String) and col["type"].length == 64
            assert col["nullable"]
    assert any(ix["column_names"] == ["release_label"] for ix in insp.get_indexes("case_record"))
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0004"
        )  # head: rows_duplicates_merged (0004)
    engine.dispose()


def test_sqlite_load(sqlite_url: str) -> None:
    result = load(sqlite_url)
    n = len(make_frame())
    assert result == {
        "release": "2025-02",
        "case_records": n,
        "batches": len(FILES),
        "entities": len(ENTITIES),
        "dialect": "sqlite",
        "method": "arrow",
    }
    assert counts(sqlite_url) == {
        "reporting_entity": 2,
        "data_release": 1,
        "extract_batch": 3,
        "case_record": n,
    }
    check_release(sqlite_url)


def test_sqlite_idempotent_and_releases_kept(sqlite_url: str) -> None:
    load(sqlite_url)
    first = counts(sqlite_url)
    load(sqlite_url)
    assert counts(sqlite_url) == first
    load(sqlite_url, release="2025-08")
    second = counts(sqlite_url)
    assert second["reporting_entity"] == 2  # upserted by code, not duplicated
    assert second["data_release"] == 2
    assert second["extract_batch"] == 2 * first["extract_batch"]
    assert second["case_record"] == 2 * first["case_record"]
    check_release(sqlite_url, "2025-02")
    check_release(sqlite_url, "2025-08")


def test_entity_upsert_updates_name(sqlite_url: str) -> None:
    load(sqlite_url)
    renamed = [{**ENTITIES[0], "name": "IOM (renamed)"}, ENTITIES[1]]
    load_release(sqlite_url, "2025-02", make_frame(), make_batches(), renamed, {})
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT code, name FROM reporting_entity")).all()
        version = conn.execute(sa.text("SELECT codebook_version FROM data_release")).scalar()
    engine.dispose()
    assert dict(rows)["iom"] == "IOM (renamed)" and len(rows) == 2
    assert version == CODEBOOK.version  # falls back to the warehouse's codebook


def test_failed_reload_keeps_previous_release(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(sqlite_url)
    before = counts(sqlite_url)

    def boom(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("insert failed")

    # After the release's old rows are deleted, in the load's transaction (either path).
    monkeypatch.setattr(loader_module, "_case_rows", boom)
    with pytest.raises(RuntimeError):
        load(sqlite_url)
    assert counts(sqlite_url) == before  # the deletes were rolled back


def test_errors_name_columns_not_values(sqlite_url: str) -> None:
    secret = "SURVIVOR-NAME-" * 6  # wider than the column: must not be echoed
    frame = make_frame()
    frame["gender"] = frame["gender"].astype(object)
    frame.loc[1, "gender"] = secret
    with pytest.raises(WarehouseError, match="column 'gender'") as info:
        load(sqlite_url, frame=frame)
    assert "SURVIVOR" not in str(info.value)

    frame = make_frame()
    frame.loc[0, "yearOfRegistration"] = pd.NA
    with pytest.raises(WarehouseError, match="'yearOfRegistration': 1 rows are NULL"):
        load(sqlite_url, frame=frame)

    frame = make_frame()
    frame.loc[0, "_file"] = "unknown.csv"
    with pytest.raises(WarehouseError, match="file 'unknown.csv'"):
        load(sqlite_url, frame=frame)

    with pytest.raises(WarehouseError, match="lacks columns: citizenship"):
        load(sqlite_url, frame=make_frame().drop(columns=["citizenship"]))


def test_default_warehouse_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTDC_WAREHOUSE_URL", raising=False)
    assert default_warehouse_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/warehouse.sqlite"
    monkeypatch.setenv("CTDC_WAREHOUSE_URL", "postgresql+psycopg://u@h/db")
    assert default_warehouse_url(tmp_path) == "postgresql+psycopg://u@h/db"


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_schema("ctdc_test") as url:
        yield url


@pytest.mark.postgres
def test_postgres_copy_load_and_idempotency(pg_url: str) -> None:
    result = load(pg_url)
    n = len(make_frame())
    assert result["dialect"] == "postgresql" and result["method"] == "copy"
    assert result["case_records"] == n
    first = counts(pg_url)
    assert first == {"reporting_entity": 2, "data_release": 1, "extract_batch": 3, "case_record": n}
    check_release(pg_url)

    load(pg_url)
    assert counts(pg_url) == first
    load(pg_url, release="2025-08")
    assert counts(pg_url)["case_record"] == 2 * n
    check_release(pg_url, "2025-08")

    # Everything, alembic_version included, lives in the per-run schema.
    schema = sa.make_url(pg_url).query["options"].split("=", 1)[1]
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        names = set(
            conn.execute(
                sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            ).scalars()
        )
        view_cols = conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = :s AND table_name = 'ctdc_release_v3' "
                "ORDER BY ordinal_position"
            ),
            {"s": schema},
        ).scalars()
        assert list(view_cols) == ["release_label", *CODEBOOK.columns]
    engine.dispose()
    assert {*TABLES, "alembic_version", "ctdc_release_v3"} <= names


@pytest.mark.postgres
def test_postgres_copy_error_is_sanitised(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    load(pg_url)
    before = counts(pg_url)
    # Bypass the frame checks so the database itself rejects a value.
    monkeypatch.setattr(loader_module, "_check_frame", lambda *_: None)
    frame = make_frame()
    frame["yearOfRegistration"] = frame["yearOfRegistration"].astype(object)
    frame.loc[2, "yearOfRegistration"] = "SURVIVOR-SECRET"
    with pytest.raises(WarehouseError) as info:
        load(pg_url, frame=frame)
    assert "SURVIVOR" not in str(info.value) and "SQLSTATE" in str(info.value)
    assert info.value.__cause__ is None
    assert counts(pg_url) == before


def test_sqlite_load_enforces_foreign_keys(sqlite_url: str, monkeypatch: pytest.MonkeyPatch):
    """The Arrow path's own connection checks the links too: a record naming no batch is
    refused (by the database, value-free), and nothing of the load stays."""
    load(sqlite_url)
    before = counts(sqlite_url)
    case_rows = loader_module._case_rows

    def orphaned(*args, **kwargs):
        rows = case_rows(*args, **kwargs)
        return rows.assign(batch_id=10_000)  # no such batch

    monkeypatch.setattr(loader_module, "_case_rows", orphaned)
    with pytest.raises(WarehouseError, match="failed in the database") as info:
        load(sqlite_url)
    assert "10000" not in str(info.value)
    assert counts(sqlite_url) == before
