"""Create or upgrade the warehouse schema, through Alembic only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, Engine, create_engine, make_url, pool, text
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)

from ctdc_harmonizer.errors import CtdcError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
WAREHOUSE_URL_ENV = "CTDC_WAREHOUSE_URL"
SQLITE_FILE = "warehouse.sqlite"


def default_warehouse_url(out_dir: str | Path) -> str:
    """`$CTDC_WAREHOUSE_URL` if set, else a SQLite file `warehouse.sqlite` in `out_dir`."""
    env = os.environ.get(WAREHOUSE_URL_ENV, "").strip()
    if env:
        return env
    return f"sqlite:///{Path(out_dir).resolve() / SQLITE_FILE}"


def warehouse_exists(url: str) -> bool:
    """Whether there is a warehouse to read: a SQLite file that exists; a server database is
    taken to exist (plan checks that it answers)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return (
            bool(parsed.database)
            and parsed.database != ":memory:"
            and Path(parsed.database).is_file()
        )
    return True


def alembic_config(url: str) -> Config:
    """An in-memory Alembic Config pointing at the packaged migrations (no alembic.ini).
    Alembic is imported here, not with the module: the partner workers import this package
    but never migrate (about 0.1 s and 10 MiB per process)."""
    from alembic.config import Config

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


# The newest migration's revision. A warehouse already at it needs no Alembic, which costs
# about 1 s of CPU to import and to load its scripts, in every process that migrates (the
# plan, the commit, Airflow's tasks). tests/warehouse/test_warehouse_schema.py keeps it
# equal to the head of the migration scripts.
HEAD_REVISION = "0009"


def _at_head(engine: Engine) -> bool:
    """Whether the warehouse's Alembic version is HEAD_REVISION (read where Alembic keeps it:
    the connection's first schema). Any error, a new database without the table included,
    leaves the answer to Alembic, which reports problems without values."""
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        return False
    return [row[0] for row in versions] == [HEAD_REVISION]


def migrate(url: str) -> None:
    """Upgrade the database at `url` to the latest warehouse revision (idempotent). Driver
    errors are value-free (warehouse/connection.py)."""
    from ctdc_harmonizer.warehouse.connection import database_error

    _ensure_sqlite_dir(url)
    engine = create_engine(url, poolclass=pool.NullPool, hide_parameters=True)
    if _at_head(engine):
        engine.dispose()
        return
    from alembic import command

    cfg = alembic_config(url)
    try:
        # Hand the connection over so the whole upgrade is one transaction where the
        # backend allows transactional DDL (PostgreSQL).
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except DBAPIError as exc:
        raise database_error("upgrading the warehouse schema", exc) from None
    finally:
        engine.dispose()


def warm_migrations() -> None:
    """Run every migration once on a throwaway in-memory SQLite database, touching nothing
    else: Alembic's import and the loading of its scripts (about two thirds of a new
    warehouse's creation, ~0.2 s) are then paid here, and the creation later pays its DDL.
    For a process with idle time before it creates a warehouse (`ctdc run` while the
    partners' chains run)."""
    migrate("sqlite://")


# Named in messages: where the warehouse URL comes from.
WAREHOUSE_SETTING = f"the warehouse setting (--warehouse / ${WAREHOUSE_URL_ENV})"
CONNECT_TIMEOUT_SECONDS = 10


class WarehouseSettingError(CtdcError):
    """The warehouse URL is unusable (not a URL, unknown or missing driver): a setting to
    fix, not worth retrying."""


def shown_url(url: URL) -> str:
    """The URL for a message: password masked, query options (which may hold secrets) left
    out."""
    shown = url.set(query={}).render_as_string(hide_password=True)
    return shown + ("?..." if url.query else "")


def check_warehouse(url: str) -> None:
    """Before any extract is read: the URL parses, its driver loads, and (for a server
    database) a connection opens. SQLite is not opened: that would create the file."""
    from ctdc_harmonizer.warehouse.connection import WarehouseUnavailableError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        # Not echoed: a malformed URL cannot have its password masked.
        raise WarehouseSettingError(
            f"{WAREHOUSE_SETTING} is not a database URL "
            "(expected e.g. postgresql+psycopg://user@host/database)"
        ) from None
    shown = shown_url(parsed)
    connect_args = {}
    libpq = parsed.drivername in {"postgresql", "postgresql+psycopg", "postgresql+psycopg2"}
    if libpq and "connect_timeout" not in parsed.query:  # a black-holed host: not minutes
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    try:
        engine = create_engine(
            parsed, poolclass=pool.NullPool, hide_parameters=True, connect_args=connect_args
        )
    except NoSuchModuleError:
        raise WarehouseSettingError(
            f"{WAREHOUSE_SETTING} is unusable: unknown database dialect or driver "
            f"'{parsed.drivername}' in {shown}"
        ) from None
    except (ImportError, ArgumentError, ValueError, TypeError) as exc:
        raise WarehouseSettingError(
            f"{WAREHOUSE_SETTING} is unusable: {shown} cannot be opened "
            f"({type(exc).__name__}; is its database driver installed?)"
        ) from None
    if engine.dialect.is_async:
        engine.dispose()
        raise WarehouseSettingError(
            f"{WAREHOUSE_SETTING} is unusable: {shown} names an asynchronous driver; the "
            "warehouse needs a synchronous one, e.g. postgresql+psycopg"
        )
    if engine.dialect.name == "sqlite":
        engine.dispose()
        return
    try:
        with engine.connect():
            pass
    except (OperationalError, InterfaceError) as exc:  # refused, timed out, auth: retryable
        raise WarehouseUnavailableError(
            f"the warehouse cannot be reached: cannot connect to {shown} "
            f"({type(exc.orig).__name__}); check {WAREHOUSE_SETTING} and that the "
            "database is running"
        ) from None
    except Exception as exc:  # a driver's own types; its message may quote the URL
        raise WarehouseSettingError(
            f"{WAREHOUSE_SETTING} is unusable: connecting to {shown} failed ({type(exc).__name__})"
        ) from None
    finally:
        engine.dispose()
