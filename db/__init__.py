"""Database engine and sessions, the declarative Base, and Alembic hook-up.

Services receive a ``Session`` explicitly and never commit; the request (view,
API handler or CLI command) that owns the unit of work commits once.
"""

from __future__ import annotations

import enum
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import DateTime, Enum, MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
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
    """Create the engine; SQLite gets foreign keys on and a busy timeout so writers wait, not fail."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def close_request_session(exc: BaseException | None) -> None:
    """At the end of a request (or app context): roll back on an error, then close its database session."""
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        if exc is not None:
            session.rollback()
        session.close()


def init_app(app: Flask) -> None:
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions["opauth.engine"] = engine
    app.extensions["opauth.sessionmaker"] = sessionmaker(bind=engine, expire_on_commit=False)

    app.teardown_appcontext(close_request_session)


def get_session() -> Session:
    """The session of the current request or CLI command (one per app context)."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["opauth.sessionmaker"]()
    session: Session = g.db_session
    return session


def new_session() -> Session:
    """A separate session, e.g. to record an audit entry for work that was rolled back."""
    maker: sessionmaker[Session] = current_app.extensions["opauth.sessionmaker"]
    return maker()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the database schema to the newest Alembic revision(s)."""
    from alembic import command

    command.upgrade(alembic_config(url), "heads")


def str_enum(cls: type[enum.Enum]) -> Enum:
    """Store an enum by its value in a VARCHAR column (portable; no native enum types to migrate)."""
    return Enum(cls, native_enum=False, length=40, values_callable=lambda e: [m.value for m in e])


MODEL_MODULES = ("kernel.audit", "ca.models", "operators.models", "operators.login.models", "bio.models",
                 "config.instance", "oidc.models", "operators.login.api_token_models")


# Tables of another application that may share opauth's database (the AP download module keeps its own
# migrations and prefixes every table, its version table included, with ``apdl_``): opauth's migrations and
# their comparison with the models leave them alone.
NEIGHBOUR_TABLE_PREFIXES = ("apdl_",)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name``: opauth's objects only, never a neighbour application's tables."""
    return not (type_ == "table" and name is not None and name.startswith(NEIGHBOUR_TABLE_PREFIXES))


def import_models() -> None:
    """Import every module that defines tables, so Base.metadata is complete (migrations, tests)."""
    import importlib

    for name in MODEL_MODULES:
        importlib.import_module(name)
