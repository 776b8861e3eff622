"""Warehouse schema: the models are the one definition, the migrations frozen history.

A database migrated to head must equal `ctdc_harmonizer.warehouse.models` (Alembic's own
comparison, on SQLite and PostgreSQL); the migration files must not import the package,
so a later change to the code or the codebook cannot rewrite what an old revision did; and
the comparison must be able to fail when the codebook (hence the models) moves on.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from ctdc_harmonizer.codebook import Codebook, Variable, default_codebook
from ctdc_harmonizer.warehouse import migrate
from ctdc_harmonizer.warehouse.layout import CASE_TABLE, RELEASE_VIEW, release_view_sql
from ctdc_harmonizer.warehouse.models import Base, case_record_columns
from ctdc_harmonizer.warehouse.schema import HEAD_REVISION, MIGRATIONS_DIR, alembic_config
from support.databases import postgres_schema

MIGRATION_FILES = sorted((MIGRATIONS_DIR / "versions").glob("*.py"))
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
# What a migration may import: the standard library bits it needs, SQLAlchemy, Alembic.
# json: migration 0006 rewrites the staged payloads (standard library, no project knowledge).
ALLOWED_IMPORTS = {"__future__", "collections", "json", "sqlalchemy", "alembic"}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.sqlite'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema("ctdc_schema") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    """The same test on a SQLite file and on a throw-away PostgreSQL schema."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def differences(url: str, metadata: sa.MetaData) -> list:
    """Alembic's autogenerate comparison of the database at `url` with `metadata`: the list
    of operations that would make the database match it (empty when they agree)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            # Server defaults too (off by default in Alembic): none is declared on either side,
            # so one appearing in a migration only would be a difference worth seeing.
            context = MigrationContext.configure(conn, opts={"compare_server_default": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def view_columns(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [c["name"] for c in sa.inspect(conn).get_columns(RELEASE_VIEW)]
    finally:
        engine.dispose()


def models_for(codebook: Codebook) -> sa.MetaData:
    """The models' metadata as it would be with `codebook` in place of the live one: every
    table copied unchanged except case_record, rebuilt by the models' own column factory."""
    metadata = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        if table.name != CASE_TABLE:
            table.to_metadata(metadata)
    sa.Table(CASE_TABLE, metadata, *case_record_columns(codebook))
    return metadata


def with_variable(codebook: Codebook) -> Codebook:
    """`codebook` plus one categorical variable, numbered n+1, as a later codebook might."""
    extra = Variable(
        number=len(codebook.variables) + 1,
        name="extraVariable",
        label="A variable a later codebook might add",
        group=codebook.variables[-1].group,
        type="categorical",
    )
    return dataclasses.replace(codebook, variables=(*codebook.variables, extra))


# --- the migrated schema equals the models ---------------------------------------------------


def test_migrated_schema_equals_the_models(url: str) -> None:
    migrate(url)
    assert differences(url, Base.metadata) == []


def test_release_view_is_the_one_the_code_expects(url: str) -> None:
    """The view is not in the models (Alembic does not compare views): its columns must be
    release_label + the live codebook's, and on SQLite, which keeps the statement verbatim,
    the frozen text of migration 0005 must equal what `release_view_sql()` generates."""
    migrate(url)
    assert view_columns(url) == ["release_label", *default_codebook().columns]
    if url.startswith("sqlite"):
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'view' AND name = :v"),
                {"v": RELEASE_VIEW},
            ).scalar_one()
        engine.dispose()
        assert stored == release_view_sql()


# --- the comparison can fail: a codebook that moves on makes the models differ ---------------


def test_the_models_rebuilt_for_the_live_codebook_still_match(sqlite_url: str) -> None:
    """Control for the drift tests below: `models_for` itself introduces no difference."""
    migrate(sqlite_url)
    assert differences(sqlite_url, models_for(default_codebook())) == []


def test_an_extra_codebook_variable_is_a_difference(url: str) -> None:
    migrate(url)
    found = differences(url, models_for(with_variable(default_codebook())))
    assert [(d[0], d[2], d[3].name) for d in found] == [("add_column", CASE_TABLE, "extraVariable")]


def test_a_retyped_codebook_variable_is_a_difference(sqlite_url: str) -> None:
    """A variable turned into a year: INTEGER NOT NULL instead of VARCHAR(64) NULL."""
    codebook = default_codebook()
    last = codebook.variables[-1]
    retyped = dataclasses.replace(
        codebook, variables=(*codebook.variables[:-1], dataclasses.replace(last, type="year"))
    )
    migrate(sqlite_url)
    found = differences(sqlite_url, models_for(retyped))
    # Column-level changes come as one list of modify_* operations per table.
    changes = sorted((op[0], op[2], op[3]) for group in found for op in group)
    assert changes == [
        ("modify_nullable", CASE_TABLE, last.name),
        ("modify_type", CASE_TABLE, last.name),
    ]


def test_a_relabelled_variable_is_a_difference_where_comments_are_kept(pg_url: str) -> None:
    """PostgreSQL stores column comments (SQLite does not): a corrected label shows."""
    codebook = default_codebook()
    first = codebook.variables[0]
    relabelled = dataclasses.replace(
        codebook,
        variables=(dataclasses.replace(first, label="Year Registered"), *codebook.variables[1:]),
    )
    migrate(pg_url)
    found = differences(pg_url, models_for(relabelled))
    assert [(op[0], op[2], op[3]) for group in found for op in group] == [
        ("modify_comment", CASE_TABLE, first.name)
    ]


# --- an existing database upgrades: 0004 renames rows_duplicate, keeping the counts --------


def run_sql(url: str, statement: str, **params: object) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def batch_columns(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [c["name"] for c in sa.inspect(conn).get_columns("extract_batch")]
    finally:
        engine.dispose()


def revision(url: str) -> str:
    return run_sql(url, "SELECT version_num FROM alembic_version")[0][0]


def test_a_database_at_0003_upgrades_keeping_its_counts_and_downgrades_back(url: str) -> None:
    """Written with plain SQL as revision 0003 had the tables (the models no longer fit)."""
    command.upgrade(alembic_config(url), "0003")
    run_sql(
        url,
        "INSERT INTO reporting_entity (id, code, name, datasource_type) "
        "VALUES (1, 'iom', 'IOM', 'Case Management')",
    )
    run_sql(
        url,
        "INSERT INTO data_release (label, codebook_version, created_at, row_count, "
        "metadata_json) VALUES ('2025-02', '3', :at, 1, '{}')",
        at=datetime(2025, 2, 1, tzinfo=UTC),
    )
    run_sql(
        url,
        "INSERT INTO extract_batch (id, release_label, entity_id, file_name, sha256, rows_read, "
        "rows_harmonized, rows_rejected, rows_excluded, rows_erased, rows_duplicate) "
        "VALUES (7, '2025-02', 1, 'iom.xlsx', :sha, 10, 1, 2, 3, 0, 4)",
        sha="0" * 64,
    )
    # A case record pointing at the batch: SQLite recreates extract_batch, the link must hold.
    run_sql(
        url,
        'INSERT INTO case_record (release_label, batch_id, entity_id, "yearOfRegistration") '
        "VALUES ('2025-02', 7, 1, 2024)",
    )

    command.upgrade(alembic_config(url), "0004")
    assert revision(url) == "0004"
    assert "rows_duplicate" not in batch_columns(url)
    assert run_sql(url, "SELECT id, rows_read, rows_duplicates_merged FROM extract_batch") == [
        (7, 10, 4)
    ]
    assert run_sql(
        url, "SELECT b.file_name FROM case_record c JOIN extract_batch b ON b.id = c.batch_id"
    ) == [("iom.xlsx",)]
    if url.startswith("sqlite"):
        assert run_sql(url, "PRAGMA foreign_key_check") == []

    command.downgrade(alembic_config(url), "0003")
    assert revision(url) == "0003"
    assert "rows_duplicates_merged" not in batch_columns(url)
    assert run_sql(url, "SELECT id, rows_duplicate FROM extract_batch") == [(7, 4)]


# --- the migrations are history: they cannot follow the code ---------------------------------


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def _at_0004_with_two_releases(url: str) -> None:
    """A warehouse as main wrote it before the store: two releases, three partners; `iom`
    and `legacy` in the first, `iom` and `hotline` in the second (legacy did not deliver)."""
    command.upgrade(alembic_config(url), "0004")
    for entity, code in ((1, "iom"), (2, "legacy"), (3, "hotline")):
        run_sql(
            url,
            "INSERT INTO reporting_entity (id, code, name, datasource_type) "
            "VALUES (:i, :c, :c, 'Case Management')",
            i=entity,
            c=code,
        )
    for label, day in (("2024", 1), ("2025", 2)):
        run_sql(
            url,
            "INSERT INTO data_release (label, codebook_version, created_at, row_count, "
            "metadata_json) VALUES (:l, '3', :at, 3, '{\"folder_sha256\": \"x\"}')",
            l=label,
            at=datetime(2025, 2, day, tzinfo=UTC),
        )
    batches = [
        (1, "2024", 1, "iom_2024.csv"),
        (2, "2024", 2, "legacy.csv"),
        (3, "2025", 1, "iom_2025.csv"),
        (4, "2025", 3, "calls.jsonl"),
    ]
    for batch, label, entity, name in batches:
        run_sql(
            url,
            "INSERT INTO extract_batch (id, release_label, entity_id, file_name, sha256, "
            "rows_read, rows_harmonized, rows_rejected, rows_excluded, rows_erased, "
            "rows_duplicates_merged) VALUES (:b, :l, :e, :n, :sha, 5, 2, 1, 1, 1, 0)",
            b=batch,
            l=label,
            e=entity,
            n=name,
            sha=f"{batch}" * 64,
        )
    records = [  # (release, batch, entity, year, pseudonym)
        ("2024", 1, 1, 2020, "a" * 64),
        ("2024", 1, 1, 2021, None),
        ("2024", 2, 2, 2010, None),
        ("2025", 3, 1, 2020, "a" * 64),
        ("2025", 4, 3, 2024, "b" * 64),
        ("2025", 4, 3, 2024, "b" * 64),  # the same pseudonym twice: not an identity
    ]
    for label, batch, entity, year, pseudonym in records:
        run_sql(
            url,
            'INSERT INTO case_record (release_label, batch_id, entity_id, "yearOfRegistration", '
            "pseudonym) VALUES (:l, :b, :e, :y, :p)",
            l=label,
            b=batch,
            e=entity,
            y=year,
            p=pseudonym,
        )


def test_a_warehouse_from_before_the_store_upgrades_keeping_its_releases(url: str) -> None:
    _at_0004_with_two_releases(url)
    command.upgrade(alembic_config(url), "head")
    assert revision(url) == HEAD
    # Every release still holds exactly its rows.
    held = run_sql(
        url,
        'SELECT release_label, count(*), sum("yearOfRegistration") FROM ctdc_release_v3 '
        "GROUP BY release_label ORDER BY release_label",
    )
    assert held == [("2024", 3, 2020 + 2021 + 2010), ("2025", 3, 2020 + 2024 + 2024)]
    assert run_sql(url, "SELECT label, sequence, row_order FROM data_release ORDER BY label") == [
        ("2024", 1, "id"),
        ("2025", 2, "id"),
    ]
    # Current records: each partner's rows of the last release that held it (legacy carried
    # forward as copies valid from the next release on).
    current = run_sql(
        url,
        "SELECT e.code, count(*) FROM case_record c JOIN reporting_entity e "
        "ON e.id = c.entity_id WHERE c.valid_to IS NULL GROUP BY e.code ORDER BY e.code",
    )
    assert current == [("hotline", 2), ("iom", 1), ("legacy", 1)]
    assert run_sql(  # current from the last release on, which leaves it out (an exclusion)
        url,
        "SELECT c.valid_from, x.release_label FROM case_record c JOIN reporting_entity e "
        "ON e.id = c.entity_id JOIN release_exclusion x ON x.case_record_id = c.id "
        "WHERE e.code = 'legacy' AND c.valid_to IS NULL",
    ) == [(2, "2025")]
    keys = dict(
        run_sql(
            url,
            "SELECT pseudonym, identity_key FROM case_record "
            "WHERE valid_to IS NULL AND pseudonym IS NOT NULL AND entity_id = 1",
        )
    )
    assert keys == {"a" * 64: "a" * 64}  # a unique pseudonym is the identity: redelivery revises
    hotline = [
        k for (k,) in run_sql(url, "SELECT identity_key FROM case_record WHERE entity_id = 3")
    ]
    assert len(set(hotline)) == 2 and "b" * 64 not in hotline  # shared: made from the ids
    # Deliveries and files from the batches, provenance on every row.
    assert run_sql(url, "SELECT count(*), sum(rows_read), sum(rows_new) FROM delivery") == [
        (4, 20, 8)
    ]
    assert run_sql(url, "SELECT count(*) FROM case_record WHERE delivery_file_id IS NULL") == [(0,)]
    if url.startswith("sqlite"):
        assert run_sql(url, "PRAGMA foreign_key_check") == []
    assert differences(url, Base.metadata) == []
    with pytest.raises(NotImplementedError, match="restore a backup"):
        command.downgrade(alembic_config(url), "0004")


def test_there_are_migration_files() -> None:
    assert [p.name[:4] for p in MIGRATION_FILES] == [
        "0001",
        "0002",
        "0003",
        "0004",
        "0005",
        "0006",
        "0007",
        "0008",
        "0009",
    ]


@pytest.mark.parametrize("path", MIGRATION_FILES, ids=lambda p: p.name)
def test_a_migration_imports_neither_the_package_nor_the_codebook(path: Path) -> None:
    """An allow-list rather than a ban on `ctdc_harmonizer`: reading the codebook YAML or
    importing the models any other way would make history drift just the same."""
    modules = imported_modules(path)
    assert not any(m.split(".")[0] == "ctdc_harmonizer" for m in modules), modules
    assert {m.split(".")[0] for m in modules} <= ALLOWED_IMPORTS, modules
    source = path.read_text(encoding="utf-8")
    assert "importlib" not in source and "__import__" not in source


def test_the_head_revision_is_the_newest_migration(sqlite_url: str) -> None:
    """migrate() skips Alembic for a warehouse at HEAD_REVISION: it must name the newest."""
    head = ScriptDirectory.from_config(alembic_config(sqlite_url)).get_current_head()
    assert head == HEAD_REVISION


def test_alembic_runs_only_for_a_warehouse_not_at_head(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(url)  # a new database: Alembic creates it
    upgrades: list[str] = []
    monkeypatch.setattr(command, "upgrade", lambda cfg, revision: upgrades.append(revision))
    migrate(url)  # at head: read, not upgraded
    assert upgrades == []
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0007'"))
    engine.dispose()
    migrate(url)  # an earlier revision goes through Alembic
    assert upgrades == ["head"]
