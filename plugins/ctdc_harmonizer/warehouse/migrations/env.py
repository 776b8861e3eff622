"""Alembic environment of the CTDC warehouse.

There is no alembic.ini: `ctdc_harmonizer.warehouse.schema.migrate()` builds the
Config in code and may hand over an open connection in `config.attributes`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from ctdc_harmonizer.warehouse.models import Base

config = context.config
target_metadata = Base.metadata


def _version_table_schema(connection: Connection) -> str | None:
    # Keep alembic_version next to the tables, i.e. in the first schema of the
    # search_path (a per-run test schema, or public), not wherever the default is.
    if connection.dialect.name != "postgresql":
        return None
    return connection.exec_driver_sql("SELECT current_schema()").scalar()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=_version_table_schema(connection),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    engine = create_engine(
        config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool, hide_parameters=True
    )
    with engine.begin() as conn:
        _run_with(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
