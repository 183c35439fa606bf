"""The module's own database: engine, per-request session, declarative base, Alembic upgrade."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ENGINE_KEY = "apdl.engine"
SESSIONMAKER_KEY = "apdl.sessionmaker"


class Base(DeclarativeBase):
    """Declarative base of apdl's models (its own metadata, never opauth's)."""


def utcnow() -> datetime:
    """Aware UTC now."""
    return datetime.now(UTC)


def _private_sqlite_file(url: str) -> None:
    """A SQLite database holds personal data: its file (and so SQLite's journals) readable by the owner only.
    A new file is created 0600; an existing one loses any access for other users."""
    path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
    if not path or path == ":memory:":
        return
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    if not file.exists():
        os.close(os.open(file, os.O_CREAT | os.O_WRONLY, 0o600))
    elif file.stat().st_mode & 0o007:
        file.chmod(file.stat().st_mode & 0o770)


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    """Alembic configuration of apdl's migrations for ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def init_app(app: Flask) -> None:
    """Engine and session factory on the app; the request's session is closed at teardown."""
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions[ENGINE_KEY] = engine
    app.extensions[SESSIONMAKER_KEY] = sessionmaker(engine, expire_on_commit=False)

    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        session = g.pop("apdl_db", None)
        if session is not None:
            session.close()


def get_session() -> Session:
    """The request's (or CLI command's) database session."""
    if "apdl_db" not in g:
        g.apdl_db = current_app.extensions[SESSIONMAKER_KEY]()
    session: Session = g.apdl_db
    return session
