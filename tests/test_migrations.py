"""The Alembic migrations produce exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from db import Base, import_models, include_name

import_models()


def test_migrated_database_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.begin() as conn:
        # The AP download module may share the database; its tables are not opauth's to compare or drop.
        conn.execute(text("CREATE TABLE IF NOT EXISTS apdl_neighbour_probe (id INTEGER PRIMARY KEY)"))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False, "include_name": include_name})
            diff = compare_metadata(context, Base.metadata)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE apdl_neighbour_probe"))
        engine.dispose()
    assert diff == [], f"models and migrations differ; write a migration: {diff}"


def test_a_neighbour_applications_tables_are_left_alone() -> None:
    assert include_name("apdl_alembic_version", "table", {}) is False
    assert include_name("apdl_residents", "table", {}) is False
    assert include_name("certificate", "table", {}) is True
    assert include_name("apdl_like_column", "column", {}) is True
