"""Alembic environment of apdl's own migrations (separate from opauth's)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

import apdl.models  # noqa: F401 - registers the tables on Base.metadata
from apdl.db import Base

config = context.config
target_metadata = Base.metadata
VERSION_TABLE = "apdl_alembic_version"  # may share a PostgreSQL database with opauth's own table


def include_name(name: str | None, type_: str, _parent: object) -> bool:
    """Autogenerate compares apdl's own tables only (opauth's may live in the same database)."""
    return type_ != "table" or bool(name and name.startswith("apdl_"))


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, version_table=VERSION_TABLE, render_as_batch=True,
                      include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                     poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, version_table=VERSION_TABLE,
                          render_as_batch=True, include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
