"""The tenancy guard: every route of the tenancy blueprints, called by a user of another tenant.

Each route is walked with every method it accepts, with tenant A's code,
operator, certificate serial, staged entry and business system in the URL,
as tenant B's manager (and as a business administrator whose business system
tenant B does not use). Every answer must be 403 or 404 — or, for the few
routes that list only the caller's own scope, a 200 that mentions nothing of
tenant A — and the database must not change.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from db import get_session
from operators.models import StagedOperator
from tests.conftest import csrf_token
from tests.helpers import make_csr
from tests.operators.conftest import World, basic_client, register, snapshot, web_client

BLUEPRINTS = ("operators_admin", "tenants_admin", "operators_api")
# Routes that list only what the caller's own scope reaches (checked for leaks instead of 403/404).
SCOPED_LISTS = {"operators_admin.home", "operators_admin.certificates_home", "tenants_admin.in_business_home",
                "operators_api.tenants"}
# Routes that act on the caller's own account only (nothing of another tenant in the URL or the body).
OWN_ACCOUNT = {"operators_api.change_own_password"}
A_MARKERS = ("minamiedo", "南江戸市", "OP0601", "山田")


def _tenant_a_objects(world: World, api_a: FlaskClient, web_a: FlaskClient) -> dict[str, str]:
    body = register(api_a, business_ids=["05", "07"])
    assert api_a.put("/api/v1/tenants/minamiedo/business-systems/07/in-business-ids/OP0601",
                     json={"in_business_id": "U0601", "permissions": ["read"]}).status_code == 200
    token = csrf_token(web_a.get("/admin/t/minamiedo/register").get_data(as_text=True))
    assert web_a.post("/admin/t/minamiedo/register", data={
        "csrf_token": token, "action": "stage", "operator_id": "OP0700", "password": "Staged-Password-2026",
        "name": "山田 次郎", "business_ids": ["05"]}).status_code == 302
    with world.app.app_context():
        staged_id = get_session().scalars(select(StagedOperator.id)).one()
    return {"code": "minamiedo", "operator_id": "OP0601", "serial": body["certificate"]["serial"],
            "staged_id": str(staged_id), "business_id": "07", "fmt": "pem"}


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] not in BLUEPRINTS:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((rule.endpoint, rule.rule, method))
    return routes


def _url(rule: str, values: dict[str, str]) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: values[m.group(1)], rule)


FORM = {"action": "stage", "operator_id": "OP0601", "name": "乗っ取り", "password": "Takeover-Password-1",
        "business_ids": ["05", "07"], "in_business_id": "EVIL", "permissions": "all", "delivery": "pkcs12",
        "operator_ids": ["OP0601"], "code": "minamiedo", "kind": "municipality", "permitted": ["musashino"],
        "order-minamiedo": "9", "reason": "unspecified"}
JSON = {"operator_id": "OP0601", "name": "乗っ取り", "business_ids": ["05"], "in_business_id": "EVIL",
        "permissions": ["all"], "operator_ids": ["OP0601"], "tenants": ["musashino"], "code": "evil",
        "kind": "municipality", "codes": ["musashino"], "csr": ""}


def _call(client: FlaskClient, method: str, url: str, *, api: bool, token: str) -> Any:
    if api:
        if url.endswith("/import"):
            return client.open(url, method=method, data="オペレータID,氏名・組織名\r\nOP0601,乗っ取り\r\n",
                               content_type="text/csv")
        return client.open(url, method=method, json=dict(JSON, csr=make_csr().decode()))
    if method == "GET":
        return client.get(url + ("?download=1" if url.endswith("/export") else ""))
    return client.open(url, method=method, data=dict(FORM, csrf_token=token))


def _walk(app: Flask, web: FlaskClient, api: FlaskClient, values: dict[str, str], token: str,
          allowed: frozenset[str] = frozenset()) -> list[str]:
    problems = []
    for endpoint, rule, method in _routes(app):
        if endpoint in allowed or endpoint in OWN_ACCOUNT:
            continue
        is_api = rule.startswith("/api/")
        response = _call(api if is_api else web, method, _url(rule, values), api=is_api, token=token)
        body = response.get_data(as_text=True)
        if endpoint in SCOPED_LISTS and method == "GET":
            if response.status_code not in (200, 403, 404) or any(m in body for m in A_MARKERS):
                problems.append(f"{method} {rule}: {response.status_code} leaks tenant A")
        elif response.status_code not in (403, 404):
            problems.append(f"{method} {rule}: {response.status_code} {body[:200]!r}")
    return problems


def test_manager_of_another_tenant_reaches_nothing_of_tenant_a(world: World, api_a: FlaskClient,
                                                                web_a: FlaskClient) -> None:
    values = _tenant_a_objects(world, api_a, web_a)
    web_b = web_client(world.app, "mgrB", world.tenant_b)
    token = csrf_token(web_b.get("/admin/t/musashino/register").get_data(as_text=True))
    api_b = basic_client(world.app, "mgrB", world.tenant_b)
    before = snapshot(world.app)
    problems = _walk(world.app, web_b, api_b, values, token)
    assert problems == []
    assert snapshot(world.app) == before


def test_business_admin_reaches_only_tenants_that_use_their_system(world: World, api_a: FlaskClient,
                                                                    web_a: FlaskClient) -> None:
    """badmin07 administers 07; tenant B does not use 07, and 05 is not theirs."""
    values = _tenant_a_objects(world, api_a, web_a)
    api_b = basic_client(world.app, "mgrB", world.tenant_b)
    register(api_b, tenant="musashino", business_ids=["05"])
    web = web_client(world.app, "badmin07", "system")
    api = basic_client(world.app, "badmin07", "system")
    token = csrf_token(web.get("/admin/in-business-ids").get_data(as_text=True))
    before = snapshot(world.app)
    # Their own lists legitimately show tenant A (it uses 07): those are not walked here.
    assert _walk(world.app, web, api, dict(values, code="musashino", business_id="05"), token,
                 allowed=SCOPED_LISTS) == []
    # Tenant A uses 07, so its name and code are visible to them (GET /tenants/minamiedo), nothing else.
    problems = _walk(world.app, web, api, dict(values, business_id="05"), token,
                     allowed=frozenset({"operators_api.tenant", *SCOPED_LISTS}))
    assert problems == []
    assert snapshot(world.app) == before
    # ...while the in-business IDs of 07 in tenant A are theirs to manage
    listed = api.get("/api/v1/tenants/minamiedo/business-systems/07/in-business-ids").get_json()
    assert [i["in_business_id"] for i in listed["items"]] == ["U0601"]
    assert api.get("/api/v1/tenants/minamiedo/operators").status_code == 403


@pytest.mark.parametrize("code", ["minamiedo", "nosuch", "MINAMIEDO", "minamiedo%00", "..%2F..", "a" * 300])
def test_tampered_tenant_codes_are_404_not_500(world: World, code: str) -> None:
    api_b = basic_client(world.app, "mgrB", world.tenant_b)
    for url in (f"/api/v1/tenants/{code}/operators", f"/api/v1/tenants/{code}/operators/OP0601",
                f"/api/v1/tenants/{code}/business-systems/99/in-business-ids"):
        assert api_b.get(url).status_code in (403, 404), url


def test_a_manager_of_the_system_tenant_cannot_touch_system_administrators(world: World) -> None:
    from operators.models import Role, Tenant
    from tests.operators.conftest import add_manager

    with world.app.app_context():
        session = get_session()
        system = session.scalars(select(Tenant).where(Tenant.code == "system")).one()
        add_manager(session, system, "sysmgr", Role.TENANT_MANAGER)
        session.commit()
    api = basic_client(world.app, "sysmgr", "system")
    before = snapshot(world.app)
    assert api.post("/api/v1/tenants/system/passwords", json={"operator_ids": ["sysadm"]}).status_code == 404
    assert api.post("/api/v1/tenants/system/operators/sysadm/certificates", json={}).status_code == 404
    assert api.post("/api/v1/tenants/system/operators/sysadm/revoke").status_code == 404
    listed = api.get("/api/v1/tenants/system/operators").get_json()
    assert "sysadm" not in [o["operator_id"] for o in listed["items"]]
    assert snapshot(world.app) == before
