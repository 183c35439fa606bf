"""Fixtures for tenancy and operator registration: two municipalities sharing one installation.

- 南江戸市 (``minamiedo``): joint use of 05 and 07; manager ``mgrA``.
- 南武蔵野市 (``musashino``): joint use of 05 only; manager ``mgrB``.
- ``badmin07``: business system administrator of 07 (system tenant).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from db import get_session
from kernel.audit import AuditEvent
from operators.business_systems import BusinessSystemData, save_business_system
from operators.login.passwords import hash_password
from operators.models import (
    InBusinessId,
    JointUse,
    Operator,
    OperatorCertificate,
    Role,
    StagedOperator,
    Tenant,
    TenantKind,
    operator_business_system,
)
from tests.conftest import csrf_token
from tests.helpers import BUSINESS, run

MANAGER_PASSWORD = "Manager-Secret-2026"


@dataclass(frozen=True)
class World:
    app: Flask
    tenant_a: str = "minamiedo"
    tenant_b: str = "musashino"


def _business(business_id: str, name: str) -> BusinessSystemData:
    data = dict(BUSINESS, business_id=business_id, name=name)
    return BusinessSystemData.from_mapping(data)


def add_manager(session: Any, tenant: Tenant, operator_id: str, role: Role = Role.TENANT_MANAGER,
                administers: int | None = None) -> Operator:
    operator = Operator(tenant_id=tenant.id, operator_id=operator_id, name=f"{operator_id} 管理者", role=role,
                        password_hash=hash_password(MANAGER_PASSWORD), must_change_password=False,
                        administers_business_system_id=administers)
    session.add(operator)
    session.flush()
    return operator


@pytest.fixture
def world(app: Flask) -> World:
    # Cheap argon2 for the accounts made here: API calls verify a password on every request.
    app.config.update(ARGON2_TIME_COST=1, ARGON2_MEMORY_KIB=8192, ARGON2_PARALLELISM=1)
    with app.app_context():
        session = get_session()
        s05, _ = save_business_system(session, _business("05", "利用環境設定"))
        s07, _ = save_business_system(session, _business("07", "窓口交付機能"))
        a = Tenant(code="minamiedo", name="南江戸市", kind=TenantKind.MUNICIPALITY, display_order=1)
        b = Tenant(code="musashino", name="南武蔵野市", kind=TenantKind.MUNICIPALITY, display_order=2)
        session.add_all([a, b])
        session.flush()
        session.add_all([JointUse(tenant_id=a.id, business_system_id=s05.id),
                         JointUse(tenant_id=a.id, business_system_id=s07.id),
                         JointUse(tenant_id=b.id, business_system_id=s05.id)])
        add_manager(session, a, "mgrA")
        add_manager(session, b, "mgrB")
        system = session.scalar(select(Tenant).where(Tenant.code == "system"))
        assert system is not None
        add_manager(session, system, "badmin07", Role.BUSINESS_ADMIN, administers=s07.id)
        add_manager(session, system, "sysadm", Role.SYSTEM_ADMIN)
        session.commit()
    return World(app=app)


def basic_client(app: Flask, operator_id: str, tenant: str, password: str = MANAGER_PASSWORD) -> FlaskClient:
    """An API client sending HTTP Basic ``operator_id@tenant`` on every request."""
    client = app.test_client()
    token = base64.b64encode(f"{operator_id}@{tenant}:{password}".encode()).decode()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Basic {token}"
    return client


def web_client(app: Flask, operator_id: str, tenant: str, password: str = MANAGER_PASSWORD) -> FlaskClient:
    """A browser-like client logged in through the login form."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"csrf_token": csrf_token(page), "tenant": tenant,
                                           "operator_id": operator_id, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client


@pytest.fixture
def sys_api(world: World) -> FlaskClient:
    """A system administrator (システム管理者) on the API."""
    return basic_client(world.app, "sysadm", "system")


@pytest.fixture
def sys_web(world: World) -> FlaskClient:
    return web_client(world.app, "sysadm", "system")


@pytest.fixture
def api_a(world: World) -> FlaskClient:
    return basic_client(world.app, "mgrA", world.tenant_a)


@pytest.fixture
def api_b(world: World) -> FlaskClient:
    return basic_client(world.app, "mgrB", world.tenant_b)


@pytest.fixture
def web_a(world: World) -> FlaskClient:
    return web_client(world.app, "mgrA", world.tenant_a)


@pytest.fixture
def web_b(world: World) -> FlaskClient:
    return web_client(world.app, "mgrB", world.tenant_b)


def operator_payload(operator_id: str = "OP0601", **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "operator_id": operator_id, "name": "山田 太郎", "department": "市民課", "gender": "male",
        "phone": "03-1234-5678", "extension": "1234", "email": "yamada@city.example.jp",
        "info": "窓口担当", "extra_info": "本庁舎2階", "auth_method": "password", "business_ids": ["05", "07"],
    }
    payload.update(overrides)
    return payload


def register(api: FlaskClient, tenant: str = "minamiedo", **overrides: Any) -> dict[str, Any]:
    response = api.post(f"/api/v1/tenants/{tenant}/operators", json=operator_payload(**overrides))
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def snapshot(app: Flask) -> dict[str, Any]:
    """Row counts and content fingerprints of every table the tenancy test must not see change."""
    with app.app_context():
        session = get_session()
        state: dict[str, Any] = {}
        for model in (Tenant, Operator, JointUse, InBusinessId, OperatorCertificate, StagedOperator):
            state[model.__name__] = session.scalar(select(func.count()).select_from(model))
        state["operator_business_system"] = session.scalar(
            select(func.count()).select_from(operator_business_system))
        state["operators"] = sorted(
            (o.operator_id, o.name, o.password_hash, o.session_version, o.revoked_at is None,
             o.tenant_id, tuple(sorted(s.business_id for s in o.permitted_systems)))
            for o in session.scalars(select(Operator)))
        state["in_business"] = sorted((m.operator_id, m.in_business_id, tuple(m.permissions))
                                      for m in session.scalars(select(InBusinessId)))
        state["tenants"] = sorted((t.code, t.name, t.display_order) for t in session.scalars(select(Tenant)))
        from ca.models import Certificate

        state["certificates"] = sorted((c.serial, c.revoked_at is None)
                                       for c in session.scalars(select(Certificate)))
        # Successful actions other than logins (API calls log in with HTTP Basic each time).
        state["audit_success"] = session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.result == "success", AuditEvent.action.not_like("auth.%")))
        session.rollback()
        return state


def write_p12(tmp_path: Path, body: dict[str, Any], name: str = "op.p12") -> Path:
    path = tmp_path / name
    path.write_bytes(base64.b64decode(body["pkcs12"]))
    return path


def ca_bundle(client: FlaskClient, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(client.get("/pki/ca-bundle.pem").data)
    return path


def openssl_p12_cert(p12: Path, password: str, out: Path) -> Path:
    """Extract the client certificate with openssl (as an installer would open the file)."""
    result = run("openssl", "pkcs12", "-in", p12, "-clcerts", "-nokeys", "-passin", f"pass:{password}",
                 "-out", out)
    assert result.returncode == 0, result.stderr
    return out


def load_pem(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def pem_of(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


Snapshot = Callable[[Flask], dict[str, Any]]
