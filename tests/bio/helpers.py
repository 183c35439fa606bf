"""Builders shared by the login, biometric and browser tests: tenants, operators, logins."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

import db
from operators.models import AuditEvent, AuthMethod, BusinessSystem, Operator, Role, Tenant, TenantKind
from operators.passwords import hash_password
from tests.conftest import csrf_token

OPERATOR_PASSWORD = "Sakura-Momiji-2026"


def add_tenant(app: Flask, code: str = "nakatokyo", name: str = "中東京市") -> None:
    with app.app_context():
        session = db.get_session()
        if session.scalar(select(Tenant).where(Tenant.code == code)) is None:
            session.add(Tenant(code=code, name=name, kind=TenantKind.MUNICIPALITY, display_order=10))
            session.commit()


def add_operator(app: Flask, operator_id: str = "OP9999", *, tenant: str = "system",
                 password: str | None = OPERATOR_PASSWORD, role: Role = Role.OPERATOR,
                 auth_method: AuthMethod = AuthMethod.PASSWORD, must_change: bool = False) -> int:
    """An operator created directly in the database (registration itself is another feature's job)."""
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
