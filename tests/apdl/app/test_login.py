"""Operators reach the module only through opauth's business login (code + PKCE + tls_client_auth),
and opauth's back-channel logout ends the module's session."""

from __future__ import annotations

import re
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from apdl import db, oplog
from apdl.app import create_app
from apdl.models import OperationLog
from tests.apdl.app.conftest import Opauth, apdl_config, browser_for, login, served_apdl, submit


def _log(app: Flask) -> list[OperationLog]:
    with app.app_context():
        session = db.get_session()
        assert oplog.verify_chain(session) is None
        return list(session.scalars(select(OperationLog).order_by(OperationLog.id)))


def test_operator_logs_in_through_opauth_and_sees_name_tenant_and_permissions(opauth: Opauth,
                                                                             apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    page = client.get("/").get_data(as_text=True)
    assert re.search(r'id="name">操作者 minami<', page), page
    assert "南江戸市 (minamiedo)" in page and "U-OP0601" in page
    assert re.search(r'id="permissions">ap.delete ap.download ap.manage user.register<', page)
    entries = _log(apdl_app)
    assert [e.action for e in entries] == ["login"] and entries[0].tenant_code == "minamiedo"
    assert entries[0].detail["acr"] == "urn:opauth:acr:password"


def test_a_module_without_its_certificate_gets_no_tokens(opauth: Opauth, tmp_path: Path) -> None:
    config = dict(apdl_config(opauth, tmp_path / "apdl"), CLIENT_CERT="", CLIENT_KEY="")
    app = create_app(config)
    db.upgrade(app.config["DATABASE_URL"])
    client = app.test_client()
    authorize = client.get("/login").headers["Location"]
    status, callback, _ = browser_for(opauth, "minami").go(authorize)
    assert status == 302
    response = client.get(callback.removeprefix(opauth.apdl_base))
    assert response.status_code == 403 and "ログインを完了できませんでした" in response.get_data(as_text=True)
    assert client.get("/residents").headers["Location"] == "/login"
    failed = _log(app)
    assert [e.action for e in failed] == ["login_failed"]
    assert "invalid_client" in failed[0].detail["reason"]


def test_callback_without_the_login_request_or_with_another_state_is_refused(opauth: Opauth,
                                                                            apdl_app: Flask) -> None:
    client = apdl_app.test_client()
    assert client.get("/auth/callback?code=x&state=y").status_code == 400
    authorize = client.get("/login").headers["Location"]
    _status, callback, _ = browser_for(opauth, "minami").go(authorize)
    forged = re.sub(r"state=[^&]+", "state=forged", callback)
    assert client.get(forged.removeprefix(opauth.apdl_base)).status_code == 400
    assert client.get("/residents").status_code == 302


def test_a_code_is_used_once(opauth: Opauth, apdl_app: Flask) -> None:
    client = apdl_app.test_client()
    authorize = client.get("/login").headers["Location"]
    _, callback, _ = browser_for(opauth, "minami").go(authorize)
    path = callback.removeprefix(opauth.apdl_base)
    assert client.get(path).status_code == 302
    other = apdl_app.test_client()
    with other.session_transaction() as cookie:  # a second browser replaying the same callback with its state
        cookie.update({"apdl_login": {"state": re.search(r"state=([^&]+)", path).group(1),  # type: ignore[union-attr]
                                      "nonce": "n", "verifier": "v" * 43}})
    assert other.get(path).status_code == 403


def test_back_channel_logout_from_opauth_ends_the_module_session(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "leaver")
    bystander = login(opauth, apdl_app, "minami")
    assert client.get("/residents").status_code == 200
    browser = browser_for(opauth, "leaver")
    with served_apdl(opauth, apdl_app):
        status, _, top = browser.go(opauth.base + "/top")
        token = re.search(r'name="csrf_token" value="([^"]+)"', top)
        assert status == 200 and token
        browser.go(opauth.base + "/logout", {"csrf_token": token.group(1)})
        delivered = opauth.cli("oidc", "deliver-logouts", "--timeout", "5")
    del opauth.browsers["leaver"]
    assert "1 logout tokens delivered, 0 failed" in delivered, delivered
    response = client.get("/residents")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert bystander.get("/residents").status_code == 200  # another operator's session stays
    assert "backchannel_logout" in [e.action for e in _log(apdl_app)]


def test_revoking_the_operator_at_opauth_ends_the_module_session(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "revoked")
    assert client.get("/residents").status_code == 200
    with served_apdl(opauth, apdl_app):
        opauth.cli("operator", "revoke", "--tenant", "minamiedo", "--yes", "OP0605")
        delivered = opauth.cli("oidc", "deliver-logouts", "--timeout", "5")
    assert "1 logout tokens delivered, 0 failed" in delivered, delivered
    assert client.get("/residents").headers["Location"] == "/login"
    authorize = client.get("/login").headers["Location"]
    status, location, _ = browser_for(opauth, "revoked").go(authorize)
    assert status == 302 and not location.startswith(opauth.apdl_base + "/auth/callback?code"), location


def test_a_forged_or_malformed_logout_token_is_refused(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    key = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
    now = int(time.time())
    forged = jwt.encode({"alg": "ES256", "typ": "logout+jwt"}, {
        "iss": opauth.issuer, "aud": "biz-01", "iat": now, "exp": now + 60, "jti": "x", "sid": "any",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}, key)
    poster = apdl_app.test_client()
    for body in ({"logout_token": forged}, {"logout_token": "not.a.jwt"}, {}, {"logout_token": "x" * 9000}):
        response = poster.post("/backchannel-logout", data=body)
        assert response.status_code == 400 and response.get_json() == {"error": "invalid_request"}, body
    assert client.get("/residents").status_code == 200


def test_local_logout_ends_only_the_module_session(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    response = submit(client, "/", "/logout", {})
    assert response.status_code == 302
    assert client.get("/residents").headers["Location"] == "/login"
