"""The module's own app factory, settings, migrations and gunicorn configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select

from apdl import db
from apdl.app import create_app
from apdl.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[3]


def test_settings_come_from_apdl_variables_with_an_embedded_default_database(tmp_path: Path) -> None:
    values = load_settings(environ={"APDL_INSTANCE_DIR": str(tmp_path), "APDL_OPAUTH_ISSUER": "https://op.example/oidc/",
                                    "APDL_WORKERS": "3", "OPAUTH_DATABASE_URL": "sqlite:///elsewhere.db"})
    assert values["DATABASE_URL"] == f"sqlite:///{tmp_path.resolve()}/apdl.db"
    assert values["OPAUTH_ISSUER"] == "https://op.example/oidc" and values["WORKERS"] == 3
    assert load_settings(environ={})["INSTANCE_DIR"].endswith("instance/apdl")


@pytest.mark.parametrize(("name", "value"), [("APDL_WORKERS", "many"), ("APDL_OPAUTH_ISSUER", "http://op/oidc"),
                                             ("APDL_SESSION_COOKIE_SECURE", "perhaps"),
                                             ("APDL_PAIRING_CODE_SECONDS", "0")])
def test_a_bad_setting_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(environ={name: value})


def test_migrations_create_the_schema_in_the_modules_own_version_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/apdl.db"
    db.upgrade(url)
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"apdl_alembic_version", "apdl_card_aps", "apdl_residents", "apdl_installations",
            "apdl_operation_log", "apdl_operator_sessions"} <= tables
    assert "alembic_version" not in tables  # opauth's own migrations keep their table
    db.upgrade(url)  # idempotent


def test_migrate_command_and_an_anonymous_visit(tmp_path: Path) -> None:
    env = {"APDL_INSTANCE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(Path(sys.executable).parent / "flask"), "--app", "apdl.app", "apdl", "migrate"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "apdl.db").exists()
    app = create_app({"INSTANCE_DIR": str(tmp_path)})
    client = app.test_client()
    page = client.get("/")
    assert page.status_code == 200 and "opauth でログイン" in page.get_data(as_text=True)
    for path in ("/residents", "/aps", "/residents/1"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/login", path
    assert client.get("/tenants").status_code == 302
    assert client.get("/no-such-page").status_code == 404


def test_gunicorn_config_reads_the_same_settings(tmp_path: Path) -> None:
    script = "import apdl.gunicorn_conf as c; print(c.bind, c.workers, c.wsgi_app, getattr(c, 'certfile', '-'))"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"APDL_BIND": "127.0.0.1:9555", "APDL_WORKERS": "1", "APDL_TLS_CERT": "/x/cert.pem",
                                 "APDL_INSTANCE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["['127.0.0.1:9555']", "1", "apdl.app:create_app()", "/x/cert.pem"]


def test_migrations_match_the_models_and_downgrade_cleanly(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path}/apdl.db"
    db.upgrade(url)
    command.check(db.alembic_config(url))  # raises when the models and migrations differ
    command.downgrade(db.alembic_config(url), "base")
    assert set(inspect(create_engine(url)).get_table_names()) == {"apdl_alembic_version"}


def test_the_operation_log_is_a_hash_chain_that_shows_tampering_and_refuses_secrets(tmp_path: Path) -> None:
    from sqlalchemy import update

    from apdl import oplog
    from apdl.models import OperationLog

    app = create_app({"INSTANCE_DIR": str(tmp_path)})
    db.upgrade(app.config["DATABASE_URL"])
    with app.app_context():
        session = db.get_session()
        for n in range(3):
            oplog.record(session, tenant_code="t", actor="a", action=oplog.Action.LOGIN, detail={"n": n})
        session.commit()
        entries = list(session.scalars(select(OperationLog).order_by(OperationLog.id)))
        assert [e.prev_hash for e in entries[1:]] == [e.entry_hash for e in entries[:-1]]
        assert oplog.verify_chain(session) is None
        with pytest.raises(ValueError, match="secrets"):
            oplog.record(session, tenant_code="t", actor="a", action=oplog.Action.AP_INSTALLED, detail={"PIN": "1"})
        session.rollback()
        session.execute(update(OperationLog).where(OperationLog.id == entries[1].id).values(actor="someone else"))
        session.commit()
        assert oplog.verify_chain(session) == entries[1].id


@pytest.mark.postgres
def test_postgresql_holds_apdl_beside_opauth_in_one_database(pg_database: str, tmp_path: Path) -> None:
    """opauth's fixture has migrated its own schema; apdl's migrations add theirs beside it."""
    from alembic import command
    from sqlalchemy import text

    from apdl import oplog

    db.upgrade(pg_database)
    command.check(db.alembic_config(pg_database))
    tables = set(inspect(create_engine(pg_database)).get_table_names())
    assert {"alembic_version", "apdl_alembic_version", "apdl_residents"} <= tables
    app = create_app({"INSTANCE_DIR": str(tmp_path), "DATABASE_URL": pg_database})
    with app.app_context():
        session = db.get_session()
        oplog.record(session, tenant_code="t", actor="a", action=oplog.Action.LOGIN, detail={"n": 1})
        oplog.record(session, tenant_code="t", actor="a\x00", action=oplog.Action.LOGIN_FAILED,
                     target="x\x00", detail={"error": "sent\x00by a client"})
        session.commit()
        assert oplog.verify_chain(session) is None
        session.execute(text("DELETE FROM apdl_operation_log"))
        session.execute(text("DELETE FROM apdl_operation_log_head"))
        session.commit()
    app.extensions[db.ENGINE_KEY].dispose()
    command.downgrade(db.alembic_config(pg_database), "base")
    assert not {t for t in inspect(create_engine(pg_database)).get_table_names() if t.startswith("apdl_")} - {
        "apdl_alembic_version"}
