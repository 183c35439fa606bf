"""The instance's own settings (環境基本設定), kept in the database and read by every process.

``config.INSTANCE_SETTINGS`` lists which settings live here. ``init`` writes
them (:func:`seed`), 環境基本設定 and ``flask --app app settings set`` change
them, and every process applies them: gunicorn workers and CLI commands at
start, and running workers again whenever the table's version moved (one small
query before each request), so a change is effective without a restart
except for the settings marked ``restart``.

Precedence: default < stored < environment (``OPAUTH_*``, or explicit
overrides given to ``create_app``), except for ``config.PINNED`` settings, whose
stored value always wins; a disagreeing environment value is a *conflict*
that is shown everywhere and makes this process refuse to issue certificates.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Flask, current_app, request
from sqlalchemy import Integer, String, Text, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, Session, mapped_column

from config import INSTANCE_SETTINGS, PINNED, SETTINGS, ConfigError, Setting, load_settings, parse_setting
from db import Base, UtcDateTime, utcnow

log = logging.getLogger(__name__)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
GIVEN = "opauth.settings_given"  # app.extensions: what the environment/overrides said, parsed
VERSION = "opauth.settings_version"  # app.extensions: the table version this process applied
CONFLICTS = "PINNED_CONFLICTS"  # app.config: pinned settings whose environment disagrees with the instance


class InstanceSetting(Base):
    """環境基本設定: one setting kept with the instance. ``value`` None means "back to the default"."""

    __tablename__ = "instance_setting"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    # Every write takes max(version) + 1, so a process sees any change by reading one number.
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(200), nullable=False)


class Source(enum.StrEnum):
    """Where an effective value came from."""

    DEFAULT = "default"
    INSTANCE = "instance"
    ENVIRONMENT = "environment"


@dataclass(frozen=True)
class PinnedConflict:
    """A pinned setting whose environment value differs from the instance's stored one."""

    key: str
    environment: Any
    stored: Any

    def message(self) -> str:
        return (f"{BY_KEY[self.key].env}={self.environment} differs from the instance's {self.key} "
                f"({self.stored}); this process does not issue certificates. Unset the variable, or change "
                f"the instance's value (環境基本設定 or `flask --app app settings set {self.key} ...`).")


def to_text(value: Any) -> str:
    """A value in the form the environment variable would take (and the table stores)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_row(key: str, text: str) -> Any:
    return parse_setting(BY_KEY[key], text)


def stored_values(session: Session | Connection) -> dict[str, Any]:
    """The instance's stored settings, parsed (rows reset to the default are left out)."""
    values: dict[str, Any] = {}
    for key, text in session.execute(select(InstanceSetting.key, InstanceSetting.value)):
        if text is None or key not in INSTANCE_SETTINGS or key not in BY_KEY:
            continue
        try:
            values[key] = _parse_row(key, text)
        except ConfigError:
            log.warning("ignoring the stored value of %s: it no longer parses", key)
    return values


_VERSION_QUERY = select(func.coalesce(func.max(InstanceSetting.version), 0))  # built once: probed per request


def decided_keys(session: Session) -> set[str]:
    """Keys that have a row (set, or explicitly reset to the default)."""
    return set(session.scalars(select(InstanceSetting.key)))


def current_version(conn: Session | Connection) -> int:
    """The table's version: changes whenever any setting is written."""
    return int(conn.execute(_VERSION_QUERY).scalar_one())


def write(session: Session, *, key: str, value: Any | None, actor: str) -> None:
    """Store ``value`` for ``key`` (None: back to the default). Flushed, not committed; no checks here."""
    if key not in INSTANCE_SETTINGS:
        raise ConfigError(f"{key} is not kept with the instance")
    version = current_version(session) + 1
    row = session.get(InstanceSetting, key)
    text = None if value is None else to_text(value)
    if row is None:
        session.add(InstanceSetting(key=key, value=text, version=version, updated_at=utcnow(), updated_by=actor))
    else:
        row.value, row.version, row.updated_at, row.updated_by = text, version, utcnow(), actor
    session.flush()


def seed(session: Session, *, config: dict[str, Any], given: dict[str, Any], actor: str) -> dict[str, Any]:
    """At ``init``: store the settings the instance does not have yet; returns what was written.

    Pinned settings (the URLs and names that go into certificates) are stored with
    this process's effective value, defaults included, so that later processes
    cannot sign with other ones. Other settings are stored only when the
    environment gave them; the rest keep following the code's defaults.
    """
    decided = decided_keys(session)
    written: dict[str, Any] = {}
    for key in INSTANCE_SETTINGS:
        if key in decided:
            continue
        if key in PINNED:
            written[key] = config[key]
        elif key in given:
            written[key] = given[key]
    for key, value in written.items():
        write(session, key=key, value=value, actor=actor)
    return written


def pinned_conflicts(given: dict[str, Any], stored: dict[str, Any]) -> list[PinnedConflict]:
    """Pinned settings whose environment value differs from the stored one."""
    out = []
    for key in sorted(PINNED):
        if key in given and key in stored and normalised(key, given[key]) != normalised(key, stored[key]):
            out.append(PinnedConflict(key, given[key], stored[key]))
    return out


def normalised(key: str, value: Any) -> Any:
    """URLs compare without a trailing slash."""
    return value.rstrip("/") if key.endswith("_URL") and isinstance(value, str) else value


@dataclass(frozen=True)
class Effective:
    """One setting as this process sees it."""

    key: str
    value: Any  # in effect in this process now
    source: Source
    stored: Any | None  # the instance's value (None: not stored)
    environment: Any | None  # what OPAUTH_* or an override said (None: nothing)
    instance: bool  # kept with the instance (else bootstrap: environment or default only)
    pinned: bool
    restart: bool  # a change takes effect at the next start
    pending: Any | None  # restart settings: the value the next start will use, when it differs
    conflict: bool


def effective(config: dict[str, Any], given: dict[str, Any], stored: dict[str, Any]) -> list[Effective]:
    """Every setting with its value in ``config``, source, stored and environment values."""
    fresh = load_settings(given, environ={}, stored=stored)
    conflicts = {c.key for c in pinned_conflicts(given, stored)}
    rows = []
    for setting in SETTINGS:
        key = setting.key
        rule = INSTANCE_SETTINGS.get(key)
        if key in stored and (key in PINNED or key not in given):
            source = Source.INSTANCE
        elif key in given:
            source = Source.ENVIRONMENT
        else:
            source = Source.DEFAULT
        value = config.get(key, fresh[key])
        rows.append(Effective(
            key=key, value=value, source=source, stored=stored.get(key), environment=given.get(key),
            instance=rule is not None, pinned=key in PINNED, restart=bool(rule and rule.restart),
            pending=fresh[key] if rule is not None and rule.restart and fresh[key] != value else None,
            conflict=key in conflicts))
    return rows


# --- applying the store to a Flask app -------------------------------------------------------------

def _read(engine: Engine) -> tuple[int, dict[str, Any]] | None:
    # Its own short connection: a read transaction left open in the request's session would make
    # SQLite refuse that session's later write (WAL snapshot).
    try:
        with engine.connect() as conn:
            return current_version(conn), stored_values(conn)
    except DBAPIError:  # not migrated yet (before `init`): defaults and environment only
        return None


def _apply(app: Flask, stored: dict[str, Any], *, at_start: bool) -> None:
    given: dict[str, Any] = app.extensions[GIVEN]
    fresh = load_settings(given, environ={}, stored=stored)
    for key, rule in INSTANCE_SETTINGS.items():
        if at_start or not rule.restart:
            app.config[key] = fresh[key]
    if at_start:
        for key in ("WEBAUTHN_RP_ID", "WEBAUTHN_ORIGIN"):  # derived from PUBLIC_BASE_URL
            app.config[key] = fresh[key]
    app.config["MAX_CONTENT_LENGTH"] = fresh["MAX_UPLOAD_BYTES"]
    conflicts = pinned_conflicts(given, stored)
    app.config[CONFLICTS] = tuple(c.message() for c in conflicts)
    if at_start:
        for conflict in conflicts:
            log.warning("%s", conflict.message())


def init_app(app: Flask, given: dict[str, Any]) -> None:
    """Apply the instance's settings now, and again before a request whenever they changed."""
    app.extensions[GIVEN] = dict(given)
    engine: Engine = app.extensions["opauth.engine"]
    read = _read(engine)
    app.extensions[VERSION] = read[0] if read else 0
    _apply(app, read[1] if read else {}, at_start=True)

    @app.before_request
    def _refresh() -> None:
        if request.endpoint == "static":
            return
        refresh(current_app._get_current_object())  # type: ignore[attr-defined]


def refresh(app: Flask) -> bool:
    """Re-apply the stored settings if another process (or request) changed them; True if it did."""
    # The version alone on every request; the settings themselves only when it moved.
    try:
        with app.extensions["opauth.engine"].connect() as conn:
            version = current_version(conn)
            if version == app.extensions.get(VERSION):
                return False
            values = stored_values(conn)
    except DBAPIError:  # not migrated yet (before `init`)
        return False
    app.extensions[VERSION] = version
    _apply(app, values, at_start=False)
    return True
