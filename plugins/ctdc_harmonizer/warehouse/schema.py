"""Create or upgrade the warehouse schema, through Alembic only."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, make_url, pool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
WAREHOUSE_URL_ENV = "CTDC_WAREHOUSE_URL"
SQLITE_FILE = "warehouse.sqlite"


def default_warehouse_url(out_dir: str | Path) -> str:
    """`$CTDC_WAREHOUSE_URL` if set, else a SQLite file `warehouse.sqlite` in `out_dir`."""
    env = os.environ.get(WAREHOUSE_URL_ENV, "").strip()
    if env:
        return env
    return f"sqlite:///{Path(out_dir).resolve() / SQLITE_FILE}"


def alembic_config(url: str) -> Config:
    """An in-memory Alembic Config pointing at the packaged migrations (no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Config values go through configparser interpolation: '%' (e.g. an URL-encoded
    # search_path option) must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def migrate(url: str) -> None:
    """Upgrade the database at `url` to the latest warehouse revision (idempotent)."""
    _ensure_sqlite_dir(url)
    cfg = alembic_config(url)
    engine = create_engine(url, poolclass=pool.NullPool, hide_parameters=True)
    try:
        # Hand the connection over so the whole upgrade is one transaction where the
        # backend allows transactional DDL (PostgreSQL).
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()
