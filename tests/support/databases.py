"""Throw-away databases for the tests that need a real PostgreSQL server."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get(
    "CTDC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextlib.contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards; the test is
    skipped with the reason when no server answers."""
    import sqlalchemy as sa

    psycopg = pytest.importorskip("psycopg")
    base = sa.make_url(POSTGRES_URL)
    conninfo = base.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(conninfo, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {base.host}:{base.port} ({type(exc).__name__})")
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


# The warehouse backends a store test runs on: a SQLite file, and PostgreSQL where it answers.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def warehouse_url(backend: str, folder: Path, prefix: str) -> Iterator[str]:
    """A throw-away warehouse on `backend` (one of BACKENDS): a SQLite file in `folder`, or a
    fresh PostgreSQL schema named after `prefix`."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'warehouse.sqlite'}"
        return
    with postgres_schema(prefix) as url:
        yield url
