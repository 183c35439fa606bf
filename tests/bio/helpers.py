"""Builders shared by the login, biometric and browser tests: tenants, operators, logins."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

import db
from kernel.audit import AuditEvent
from operators.login.passwords import hash_password
from operators.models import AuthMethod, BusinessSystem, Operator, Role, Tenant, TenantKind
from tests.conftest import csrf_token

OPERATOR_PASSWORD = "Sakura-Momiji-2026"


def add_tenant(app: Flask, code: str = "nakatokyo", name: str = "中東京市") -> None:
    with app.app_context():
        session = db.get_session()
        if session.scalar(select(Tenant).where(Tenant.code == code)) is None:
            session.add(Tenant(code=code, name=name, kind=TenantKind.MUNICIPALITY, display_order=10))
            session.commit()


@dataclass(frozen=True)
class Registered:
    """A biometric operator registered through ``flask operator register`` and what it printed."""

    pk: int
    operator_id: str
    password: str  # the one-time password registration generated (not a login credential in biometric mode)
    p12: Path
    p12_password: str


def register_biometric(app: Flask, operator_id: str, *, tenant: str = "system", business_ids: str = "") -> Registered:
    """A biometric operator registered as a manager would, through the product's CLI (flags and certificate
    exactly as registration sets them)."""
    out = Path(tempfile.mkdtemp(prefix="opauth-p12-")) / f"{operator_id}.p12"
    result = app.test_cli_runner().invoke(args=[
        "operator", "register", "--tenant", tenant, "--operator-id", operator_id, "--name", f"操作者 {operator_id}",
        "--auth-method", "biometric", "--business-ids", business_ids, "--p12-out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    p12_password = re.search(r"its password \(shown once\): (\S+)", result.output)
    password = re.search(r"one-time login password \(shown once\): (\S+)", result.output)
    assert p12_password and password, result.output
    with app.app_context():
        pk = db.get_session().scalar(select(Operator.id).join(Tenant).where(
            Tenant.code == tenant, Operator.operator_id == operator_id))
        assert pk is not None
    return Registered(pk, operator_id, password.group(1), out, p12_password.group(1))


def add_operator(app: Flask, operator_id: str = "OP9999", *, tenant: str = "system",
                 password: str | None = OPERATOR_PASSWORD, role: Role = Role.OPERATOR,
                 auth_method: AuthMethod = AuthMethod.PASSWORD, must_change: bool = False) -> int:
    """A password-mode operator (or manager) written directly to the database, for tests of other features.

    Biometric operators come from ``register_biometric``: a row written here would skip what registration
    does (flags, certificate), which is exactly what biometric login depends on.
    """
    assert auth_method is AuthMethod.PASSWORD, "register biometric operators with register_biometric()"
    with app.app_context():
        session = db.get_session()
        tenant_row = session.scalar(select(Tenant).where(Tenant.code == tenant))
        assert tenant_row is not None
        operator = Operator(tenant_id=tenant_row.id, operator_id=operator_id, name=f"操作者 {operator_id}",
                            role=role, auth_method=auth_method,
                            password_hash=hash_password(password) if password else "",
                            must_change_password=must_change)
        session.add(operator)
        session.commit()
        return operator.id


def add_business_system(app: Flask, business_id: str, name: str, *, enabled: bool = True) -> int:
    with app.app_context():
        session = db.get_session()
        system = BusinessSystem(business_id=business_id, name=name, top_url=f"https://biz{business_id}.example.jp/",
                                operator_admin_url=f"https://biz{business_id}.example.jp/op",
                                personalize_url=f"https://biz{business_id}.example.jp/p", enabled=enabled)
        session.add(system)
        session.commit()
        return system.id


def post_login(client: FlaskClient, *, operator_id: str, password: str, tenant: str = "system") -> Any:
    page = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"csrf_token": csrf_token(page), "tenant": tenant,
                                       "operator_id": operator_id, "password": password})


def audit_actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.get_session().scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def audit_events(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        return list(db.get_session().scalars(select(AuditEvent).where(AuditEvent.action == action)
                                             .order_by(AuditEvent.id)))


def page_csrf(client: FlaskClient, path: str) -> str:
    """The CSRF token from a page (hidden field or the WebAuthn block's data-csrf)."""

    html = client.get(path).get_data(as_text=True)
    match = re.search(r'(?:name="csrf_token" value|data-csrf)="([^"]+)"', html)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def manager_enrols(client: FlaskClient, operator_id: str, authn: Any, *, tenant: str = "system",
                   nickname: str = "窓口端末1") -> Any:
    """A logged-in manager enrols ``authn`` for the operator (the JSON calls webauthn.js makes)."""
    base = f"/bio/manage/{tenant}/{operator_id}"
    token = page_csrf(client, base)
    options = client.post(f"{base}/register/options", json={}, headers={"X-CSRFToken": token})
    assert options.status_code == 200, options.get_data(as_text=True)
    return client.post(f"{base}/register/verify", json={"credential": authn.create(options.get_json()),
                                                        "nickname": nickname},
                       headers={"X-CSRFToken": token})


def bio_login_options(client: FlaskClient, operator_id: str, *, tenant: str = "system") -> tuple[str, Any]:
    token = page_csrf(client, "/bio/login")
    response = client.post("/bio/login/options", json={"tenant": tenant, "operator_id": operator_id},
                           headers={"X-CSRFToken": token})
    assert response.status_code == 200, response.get_data(as_text=True)
    return token, response.get_json()


def bio_login(client: FlaskClient, operator_id: str, authn: Any, *, tenant: str = "system",
              **assertion: Any) -> Any:
    """Biometric login as the browser does it: options, assertion, verify."""
    token, options = bio_login_options(client, operator_id, tenant=tenant)
    return client.post("/bio/login/verify", json={"credential": authn.get(options, **assertion)},
                       headers={"X-CSRFToken": token})


CHEAP_ARGON2 = {"ARGON2_MEMORY_KIB": 8192, "ARGON2_TIME_COST": 1, "ARGON2_PARALLELISM": 1}


def cheapen_argon2(app: Flask) -> None:
    """Tests that log in many times use cheaper argon2 parameters (the policy is the same)."""
    app.config.update(CHEAP_ARGON2)
