"""Fixtures: every test gets its own instance (CA keys, database) on SQLite and on PostgreSQL.

PostgreSQL: a throw-away database is created once per run and emptied before
each test. Under CI=true an unreachable server fails the run instead of
skipping it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

import db
from app import create_app
from bootstrap import init_instance
from ca.authority import CaSettings

PG_ADMIN_URL = os.environ.get("OPAUTH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# pkilint rejects "localhost" in URIs; certificates in tests carry a realistic PKI host.
TEST_PKI_BASE = "http://pki.opauth.example.jp"
ADMIN_PASSWORD = "Correct-Horse-Battery-42"


@pytest.fixture(scope="session", autouse=True)
def _compiled_translations() -> None:
    """The .mo catalogues are build output (not in git): compile them as `make` does, for a bare pytest."""
    for po in Path(__file__).resolve().parent.parent.glob("translations/*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as fh:
            catalog = read_po(fh)
        tmp = mo.with_name(f".{mo.name}.{os.getpid()}")
        with tmp.open("wb") as fh:
            write_mo(fh, catalog)
        tmp.replace(mo)  # atomic: parallel runs never read half a catalogue


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    reason = _pg_reachable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true but unreachable: {reason}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {reason}")
    name = f"opauth_test_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = re.sub(r"/[^/]*$", f"/{name}", PG_ADMIN_URL)
    db.upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_all(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        tables = [r[0] for r in conn.execute(text(
            "select tablename from pg_tables where schemaname='public' and tablename <> 'alembic_version'"))]
        if tables:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "opauth.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    _truncate_all(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """For tests that exercise something database-independent (run once, on SQLite)."""
    path = tmp_path / "opauth.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def make_app(instance: Path, url: str, **overrides: Any) -> Flask:
    config = {
        "INSTANCE_DIR": str(instance),
        "DATABASE_URL": url,
        "SESSION_COOKIE_SECURE": False,
        "PKI_BASE_URL": TEST_PKI_BASE,
        "KEY_PASSPHRASE": "test-passphrase",
        # The WebAuthn tests drive the Flask test client or plain-HTTP browsers, which present no TLS client
        # certificate. The certificate-bound biometric login (the default) is tested over real TLS in
        # tests/browser/test_mtls_browser.py and tests/ca/test_mtls.py.
        "BIOMETRIC_CLIENT_CERT_REQUIRED": False,
        "TESTING": True,
    }
    config.update(overrides)
    return create_app(config)


def initialise(app: Flask) -> str:
    """Run the real instance initialisation; returns the printed one-time admin password."""
    with app.app_context():
        report = init_instance(db.get_session(), CaSettings.from_config(app.config))
    assert report.admin_password is not None
    return report.admin_password


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Iterator[Flask]:
    application = make_app(tmp_path / "instance", database_url)
    application.config["BOOTSTRAP_PASSWORD"] = initialise(application)
    yield application
    application.extensions["opauth.engine"].dispose()


@pytest.fixture
def sqlite_app(tmp_path: Path, sqlite_url: str) -> Iterator[Flask]:
    application = make_app(tmp_path / "instance", sqlite_url)
    application.config["BOOTSTRAP_PASSWORD"] = initialise(application)
    yield application
    application.extensions["opauth.engine"].dispose()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


def login_admin(client: FlaskClient, app: Flask) -> None:
    """Log in with the one-time password, change it to ADMIN_PASSWORD (the forced first step)."""
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"csrf_token": csrf_token(page), "tenant": "system",
                                           "operator_id": "admin", "password": app.config["BOOTSTRAP_PASSWORD"]})
    assert response.status_code == 302 and response.headers["Location"].endswith("/password")
    page = client.get("/password").get_data(as_text=True)
    response = client.post("/password", data={"csrf_token": csrf_token(page),
                                              "current_password": app.config["BOOTSTRAP_PASSWORD"],
                                              "new_password": ADMIN_PASSWORD, "confirm_password": ADMIN_PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)


@pytest.fixture
def admin_client(app: Flask) -> FlaskClient:
    client = app.test_client()
    login_admin(client, app)
    return client


@pytest.fixture
def api(admin_client: FlaskClient) -> FlaskClient:
    """A client for /api/v1 that sends the administrator's HTTP Basic credentials on every call."""
    import base64

    token = base64.b64encode(f"admin@system:{ADMIN_PASSWORD}".encode()).decode()
    client = admin_client.application.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Basic {token}"
    return client
