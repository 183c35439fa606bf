"""API tokens: made once by an operator, sent as ``Authorization: Bearer opa_...`` by scripts and servers."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from db import get_session
from kernel.audit import AuditEvent
from operators.login.api_token_models import ApiToken
from operators.login.api_tokens import check_bearer
from tests.conftest import csrf_token
from tests.helpers import BUSINESS, business_payload, make_csr

ISSUE = "business_server_certificates.issue"
EVIL_CN = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                     x509.NameAttribute(NameOID.COMMON_NAME, "evil.example.com")])
MANAGER_PASSWORD = "Manager-Password-2026"


def basic(app: Flask, user: str, password: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return client


def bearer(app: Flask, secret: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return client


def new_token(client: FlaskClient, *scopes: str, name: str = "renewal script", **extra: Any) -> dict[str, Any]:
    response = client.post("/api/v1/api-tokens", json={"name": name, "scopes": list(scopes), **extra})
    assert response.status_code == 201, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.get_json()
    return body


def register_system(admin_api: FlaskClient) -> None:
    """Business system 05, registered by the administrator (a token that may only issue cannot)."""
    assert admin_api.put("/api/v1/business-systems/05", json=dict(BUSINESS)).status_code == 201


def audit_actions(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        return list(get_session().scalars(select(AuditEvent).where(AuditEvent.action == action)
                                          .order_by(AuditEvent.id)))


@pytest.fixture
def admin_api(api: FlaskClient) -> FlaskClient:
    app = api.application
    # Cheap argon2 for the accounts made here: HTTP Basic verifies a password on every request.
    app.config.update(ARGON2_TIME_COST=1, ARGON2_MEMORY_KIB=8192, ARGON2_PARALLELISM=1)
    return api


def add_manager(admin_api: FlaskClient, tenant: str, operator_id: str) -> FlaskClient:
    """A tenant (if new) and its 運用管理部門 operator, made over the API; returns their HTTP Basic client."""
    app = admin_api.application
    created = admin_api.post("/api/v1/tenants", json={"code": tenant, "name": f"{tenant} 市", "kind": "municipality"})
    assert created.status_code in (201, 409), created.get_json()
    response = admin_api.post(f"/api/v1/tenants/{tenant}/operators", json={
        "operator_id": operator_id, "name": "管理 担当", "role": "tenant_manager", "auth_method": "password",
        "password": "One-Time-Password-2026"})
    assert response.status_code == 201, response.get_json()
    changed = basic(app, f"{operator_id}@{tenant}", "One-Time-Password-2026").post(
        "/api/v1/me/password", json={"new_password": MANAGER_PASSWORD})
    assert changed.status_code == 200, changed.get_json()
    return basic(app, f"{operator_id}@{tenant}", MANAGER_PASSWORD)


def test_token_issues_business_server_certificates_and_is_kept_only_as_a_hash(admin_api: FlaskClient,
                                                                             database_url: str) -> None:
    app = admin_api.application
    created = new_token(admin_api, ISSUE, days=7)
    secret = created["token"]
    assert secret.startswith("opa_") and len(secret) == 47
    assert created["scopes"] == [ISSUE] and created["status"] == "active" and created["prefix"] == secret[:12]
    machine = bearer(app, secret)
    register_system(admin_api)  # by the administrator; the token renews the system's certificate

    first = machine.post("/api/v1/business-server-certificates", json=business_payload(make_csr()))
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["issued_by"] == "admin"
    # A renewal names the system and sends the CSR: the certificate is for the system as registered.
    again = machine.post("/api/v1/business-server-certificates",
                         json={"business_id": "05", "csr": make_csr().decode()})
    assert again.status_code == 201 and again.get_json()["replaces_id"] == first.get_json()["id"]
    assert again.get_json()["sans"] == first.get_json()["sans"]
    # The answer carries the certificate: the token needs no scope to fetch it.
    issued_cert = x509.load_pem_x509_certificate(again.get_json()["pem"].encode())
    assert format(issued_cert.serial_number, "x") == again.get_json()["serial"]

    # Out of scope: the token may issue, nothing else, although its owner may do everything.
    denied = machine.get("/api/v1/business-systems")
    assert denied.status_code == 403 and denied.get_json()["error"] == "forbidden"
    # A token never makes tokens.
    assert machine.post("/api/v1/api-tokens", json={"name": "x", "scopes": [ISSUE]}).status_code == 403

    listed = admin_api.get("/api/v1/api-tokens").get_json()["items"]
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0] and listed[0]["last_used_at"] is not None
    issued = [e for e in audit_actions(app, "certificate.issued") if e.detail.get("business_id") == "05"]
    assert len(issued) == 2 and all(f"api_token:{created['id']}" in e.source for e in issued)

    with app.app_context():
        row = get_session().scalars(select(ApiToken)).one()
        stored = [str(getattr(row, c.key)) for c in ApiToken.__table__.columns]
        assert all(secret[4:] not in value for value in stored)
    if database_url.startswith("sqlite:///"):
        assert secret[4:].encode() not in Path(database_url.removeprefix("sqlite:///")).read_bytes()


def test_revoked_token_is_refused_with_a_clear_401_and_audited(admin_api: FlaskClient) -> None:
    app = admin_api.application
    created = new_token(admin_api, ISSUE)
    machine = bearer(app, created["token"])
    revoked = admin_api.post(f"/api/v1/api-tokens/{created['id']}/revoke")
    assert revoked.status_code == 200 and revoked.get_json()["status"] == "revoked"
    assert admin_api.post(f"/api/v1/api-tokens/{created['id']}/revoke").get_json()["changed"] is False

    refused = machine.post("/api/v1/business-server-certificates", json=business_payload(make_csr()))
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_token" and refused.get_json()["reason"] == "revoked"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer ")
    assert [e.action for e in audit_actions(app, "api_token.revoked")] == ["api_token.revoked"]
    refusals = audit_actions(app, "api_token.refused")
    assert refusals[-1].detail == {"reason": "revoked"} and refusals[-1].actor == "admin"


@pytest.mark.parametrize("secret", [
    "", "opa_", "opa_" + "A" * 43, "opa_" + "A" * 42 + "\x00", "opa_" + "A" * 5000, "トークン", "Basic x",
    "opa_" + "é" * 43, "../../etc/passwd", "opa_" + "A" * 42 + "%",
])
def test_unknown_or_malformed_tokens_are_401_never_500(sqlite_app: Flask, secret: str) -> None:
    response = sqlite_app.test_client().get("/api/v1/certificates",
                                            headers={"Authorization": f"Bearer {secret}".encode()})
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] in ("invalid_token", "unauthorized")
    if body["error"] == "invalid_token":
        assert body["reason"] in ("unknown", "malformed") and body["message"]
        events = audit_actions(sqlite_app, "api_token.refused")
        assert events and events[-1].actor == "anonymous"


def test_expired_token_is_refused(admin_api: FlaskClient) -> None:
    app = admin_api.application
    created = new_token(admin_api, ISSUE, days=1)
    with app.app_context():
        session = get_session()
        token = session.get(ApiToken, created["id"])
        assert token is not None
        check = check_bearer(session, secret=created["token"], source="127.0.0.1",
                             now=token.expires_at)
        assert not check.ok and str(check.refusal) == "expired"
        session.rollback()


@pytest.mark.parametrize(("body", "needle"), [
    ({"name": "x", "scopes": []}, "scopes"),
    ({"name": "x", "scopes": "certificates.view"}, "scopes"),
    ({"name": "x", "scopes": ["api_tokens.manage"]}, "api_tokens.manage"),
    ({"name": "x", "scopes": ["no.such.permission"]}, "no.such.permission"),
    ({"name": "x", "scopes": [{"a": 1}]}, "dict"),
    ({"name": "", "scopes": [ISSUE]}, "name"),
    ({"name": "x" * 101, "scopes": [ISSUE]}, "name"),
    ({"name": "x", "scopes": [ISSUE], "days": 0}, "days"),
    ({"name": "x", "scopes": [ISSUE], "days": 91}, "days"),
    ({"name": "x", "scopes": [ISSUE], "days": "9" * 5000}, "days"),
    ({"name": "x", "scopes": [ISSUE], "days": True}, "days"),
    ({"name": "x", "scopes": [ISSUE], "days": 1.5}, "days"),
    ({"name": ["x"], "scopes": [ISSUE]}, "name"),
])
def test_bad_token_requests_are_clear_400s_and_audited(admin_api: FlaskClient, body: dict[str, Any],
                                                       needle: str) -> None:
    response = admin_api.post("/api/v1/api-tokens", json=body)
    assert response.status_code == 400, response.get_json()
    assert needle in response.get_json()["message"]
    assert audit_actions(admin_api.application, "api_token.rejected")


def test_token_never_carries_more_than_its_owner_and_never_reaches_another_tenant(admin_api: FlaskClient) -> None:
    app = admin_api.application
    manager_a = add_manager(admin_api, "minamiedo", "MGRA")
    add_manager(admin_api, "musashino", "MGRB")
    admin_token = new_token(admin_api, ISSUE)

    # More than the owner holds is refused.
    over = manager_a.post("/api/v1/api-tokens", json={"name": "x", "scopes": ["certificates.view"]})
    assert over.status_code == 400 and "certificates.view" in over.get_json()["message"]
    token_a = new_token(manager_a, "operators.manage")
    machine_a = bearer(app, token_a["token"])

    assert machine_a.get("/api/v1/tenants/minamiedo/operators").status_code == 200
    for path in ("/api/v1/tenants/musashino/operators", "/api/v1/tenants/musashino/operators/MGRB",
                 "/api/v1/tenants/system/operators/admin"):
        refused = machine_a.get(path)
        assert refused.status_code == 404, (path, refused.get_json())
    assert machine_a.get("/api/v1/certificates").status_code == 403
    # Another operator's tokens are neither listed nor revocable by the manager.
    assert [t["id"] for t in manager_a.get("/api/v1/api-tokens").get_json()["items"]] == [token_a["id"]]
    assert manager_a.post(f"/api/v1/api-tokens/{admin_token['id']}/revoke").status_code == 404
    assert manager_a.get(f"/api/v1/api-tokens/{admin_token['id']}").status_code == 404
    register_system(admin_api)
    assert bearer(app, admin_token["token"]).post(
        "/api/v1/business-server-certificates", json=business_payload(make_csr())).status_code == 201
    # The system administrator sees every tenant's tokens.
    assert {t["operator_id"] for t in admin_api.get("/api/v1/api-tokens").get_json()["items"]} == {"admin", "MGRA"}


def test_revoked_or_locked_owner_disables_their_tokens(admin_api: FlaskClient) -> None:
    app = admin_api.application
    manager_a = add_manager(admin_api, "minamiedo", "MGRA")
    manager_b = add_manager(admin_api, "minamiedo", "MGRC")
    token_a = bearer(app, new_token(manager_a, "operators.manage")["token"])
    token_b = bearer(app, new_token(manager_b, "operators.manage")["token"])
    assert token_a.get("/api/v1/tenants/minamiedo/operators").status_code == 200

    # Locked by failed logins: the token stops with the operator.
    for _attempt in range(app.config["LOGIN_MAX_FAILURES"]):
        assert basic(app, "MGRA@minamiedo", "wrong-password").get("/api/v1/api-tokens").status_code == 401
    refused = token_a.get("/api/v1/tenants/minamiedo/operators")
    assert refused.status_code == 401 and refused.get_json()["reason"] == "owner_disabled"
    assert admin_api.post("/api/v1/operators/minamiedo/MGRA/unlock").status_code == 200
    assert token_a.get("/api/v1/tenants/minamiedo/operators").status_code == 200

    # Revoked (操作者失効): every token of the operator is refused.
    assert admin_api.post("/api/v1/tenants/minamiedo/operators/MGRC/revoke", json={}).status_code == 200
    refused = token_b.get("/api/v1/tenants/minamiedo/operators")
    assert refused.status_code == 401 and refused.get_json()["reason"] == "owner_disabled"


def test_cli_creates_lists_and_revokes_tokens(admin_api: FlaskClient) -> None:
    app = admin_api.application
    runner = app.test_cli_runner()
    made = runner.invoke(args=["tokens", "create", "system", "admin", "--name", "web01 renewal",
                               "--scope", ISSUE, "--days", "10"])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("opa_")
    register_system(admin_api)
    assert bearer(app, secret).post("/api/v1/business-server-certificates",
                                    json=business_payload(make_csr())).status_code == 201
    listed = runner.invoke(args=["tokens", "list"])
    assert "web01 renewal" in listed.output and secret not in listed.output
    token_id = listed.output.split("\t", 1)[0]
    bad = runner.invoke(args=["tokens", "create", "system", "admin", "--name", "x", "--scope", "api_tokens.manage"])
    assert bad.exit_code != 0 and "api_tokens.manage" in bad.output
    assert runner.invoke(args=["tokens", "create", "system", "nobody", "--name", "x", "--scope", ISSUE]).exit_code != 0
    revoked = runner.invoke(args=["tokens", "revoke", token_id])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert bearer(app, secret).get("/api/v1/certificates").status_code == 401
    assert runner.invoke(args=["tokens", "revoke", "999999"]).exit_code != 0
    assert token_id in runner.invoke(args=["tokens", "list", "--all"]).output


def test_web_screen_creates_shows_once_and_revokes(admin_client: FlaskClient) -> None:
    app = admin_client.application
    page = admin_client.get("/admin/api-tokens")
    assert page.status_code == 200 and ISSUE in page.get_data(as_text=True)
    token = csrf_token(page.get_data(as_text=True))
    refused = admin_client.post("/admin/api-tokens", data={"csrf_token": token, "name": "", "scopes": [ISSUE]})
    assert refused.status_code == 400 and 'role="alert"' in refused.get_data(as_text=True)
    created = admin_client.post("/admin/api-tokens", data={"csrf_token": token, "name": "夜間更新",
                                                           "scopes": [ISSUE], "days": "30"})
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"
    html = created.get_data(as_text=True)
    start = html.index('id="token-secret">') + len('id="token-secret">')
    secret = html[start:html.index("<", start)]
    assert secret.startswith("opa_") and len(secret) == 47
    listing = admin_client.get("/admin/api-tokens").get_data(as_text=True)
    assert "夜間更新" in listing and secret not in listing
    assert bearer(app, secret).get("/api/v1/certificates").status_code == 403  # scope: issue only
    with app.app_context():
        token_id = get_session().scalars(select(ApiToken.id)).one()
    # Revoking asks first: the list links to a confirmation naming the token; nothing changes on the GET.
    assert f"/admin/api-tokens/{token_id}/revoke" in listing
    confirm = admin_client.get(f"/admin/api-tokens/{token_id}/revoke").get_data(as_text=True)
    assert "夜間更新" in confirm and "失効は取り消せません" in confirm
    assert bearer(app, secret).get("/api/v1/certificates").get_json()["error"] == "forbidden"  # still valid
    english = admin_client.get("/admin/api-tokens?lang=en").get_data(as_text=True)
    assert ">Revoke<" in english and ">Revoked<" not in english
    # The scopes are offered in words beside their names.
    assert "Issue business server certificate <code>business_server_certificates.issue</code>" in english
    assert "業務サーバ証明書発行 <code>business_server_certificates.issue</code>" in listing
    done = admin_client.post(f"/admin/api-tokens/{token_id}/revoke", data={"csrf_token": token})
    assert done.status_code == 303
    assert bearer(app, secret).post("/api/v1/business-server-certificates",
                                    json=business_payload(make_csr())).get_json()["reason"] == "revoked"
    assert admin_client.get("/admin/api-tokens?lang=en").status_code == 200


def test_guessing_tokens_is_throttled_like_failed_logins_and_the_audit_chain_holds(admin_api: FlaskClient) -> None:
    app = admin_api.application
    app.config["LOGIN_THROTTLE_FAILURES"] = 3
    valid = new_token(admin_api, ISSUE)["token"]
    register_system(admin_api)  # before the guesses: then the administrator's address is throttled too
    guesser = bearer(app, "opa_" + "B" * 43)
    for _attempt in range(3):
        assert guesser.get("/api/v1/certificates").status_code == 401
    throttled = guesser.get("/api/v1/certificates")
    assert throttled.status_code == 429 and throttled.get_json()["error"] == "throttled"
    assert len(audit_actions(app, "api_token.refused")) == 3  # no entry per throttled guess
    # A real token is not a guess: it still works from the same address.
    assert bearer(app, valid).post("/api/v1/business-server-certificates",
                                   json=business_payload(make_csr())).status_code == 201
    verified = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert verified.exit_code == 0, verified.output


def test_a_token_that_may_only_issue_cannot_register_or_change_the_business_system(admin_api: FlaskClient) -> None:
    """The certificate's names come from the business system's URLs: a renewal token (scope: issue) must not
    choose them. Registering a system or changing it through issuance needs business_systems.manage."""
    app = admin_api.application
    register_system(admin_api)
    machine = bearer(app, new_token(admin_api, ISSUE)["token"])
    evil = "https://evil.example.com/BizSys/"
    attempts = [
        business_payload(make_csr(subject=EVIL_CN), top_url=evil, operator_admin_url=evil,
                         personalize_url=evil),  # re-pointed at another host, with a CSR for it
        business_payload(make_csr(), admin_org=""),  # any other field changed
        business_payload(make_csr(), business_id="42"),  # a new system
    ]
    for body in attempts:
        before = admin_api.get("/api/v1/certificates").get_json()["total"]
        refused = machine.post("/api/v1/business-server-certificates", json=body)
        assert refused.status_code == 403, refused.get_json()
        assert "business_systems.manage" in refused.get_json()["message"]
        assert admin_api.get("/api/v1/certificates").get_json()["total"] == before
    assert admin_api.get("/api/v1/business-systems/05").get_json()["top_url"] == BUSINESS["top_url"]
    assert admin_api.get("/api/v1/business-systems/42").status_code == 404
    refusals = [e for e in audit_actions(app, "certificate.csr_rejected") if e.detail.get("error") == "forbidden"]
    assert len(refusals) == 3

    # With both scopes the same token owner's script may change the system while issuing.
    both = bearer(app, new_token(admin_api, ISSUE, "business_systems.manage", name="both")["token"])
    changed = both.post("/api/v1/business-server-certificates",
                        json=business_payload(make_csr(), admin_org="情報政策課"))
    assert changed.status_code == 201, changed.get_json()
    assert admin_api.get("/api/v1/business-systems/05").get_json()["admin_org"] == "情報政策課"


def test_fields_an_issuance_leaves_out_keep_their_registered_values(admin_api: FlaskClient) -> None:
    register_system(admin_api)
    issued = admin_api.post("/api/v1/business-server-certificates",
                            json={"business_id": "05", "name": "利用環境設定(新)", "csr": make_csr().decode()})
    assert issued.status_code == 201, issued.get_json()
    system = admin_api.get("/api/v1/business-systems/05").get_json()
    assert system["name"] == "利用環境設定(新)"
    assert {k: system[k] for k in ("admin_org", "phone", "email", "top_url")} == \
        {k: BUSINESS[k] for k in ("admin_org", "phone", "email", "top_url")}
