"""Revocation (RFC 7009) and introspection (RFC 7662): the business system's own tokens, over its certificate."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from db import get_session
from kernel.audit import AuditEvent
from tests.oidc.conftest import AuthRequest, Cert, World, exchange, get_code, userinfo


def _token(world: World, business_id: str = "05") -> str:
    req = AuthRequest(business_id)
    response = exchange(world.app, req, get_code(world.browser, req), world.certs[business_id])
    token: str = response.get_json()["access_token"]
    return token


def _post(world: World, path: str, token: str, cert: Cert | None, client_id: str = "biz-05") -> Any:
    return world.app.test_client().post(path, data={"token": token, "client_id": client_id},
                                        headers=cert.header if cert else {})


def test_introspection_reports_an_active_bound_token(world: World) -> None:
    token = _token(world)
    body = _post(world, "/oidc/introspect", token, world.certs["05"]).get_json()
    assert body["active"] is True and body["client_id"] == "biz-05"
    assert body["cnf"] == {"x5t#S256": world.certs["05"].x5t}


def test_introspection_by_another_system_or_another_certificate_says_inactive(world: World) -> None:
    token = _token(world)
    assert _post(world, "/oidc/introspect", token, world.certs["07"], "biz-07").get_json() == {"active": False}
    second = world.issue_ssl_cert("05")  # the same system's other certificate: not the one the token is bound to
    assert _post(world, "/oidc/introspect", token, second).get_json() == {"active": False}
    assert _post(world, "/oidc/introspect", "garbage", world.certs["05"]).get_json() == {"active": False}


def test_introspection_without_a_certificate_is_refused(world: World) -> None:
    response = _post(world, "/oidc/introspect", _token(world), None)
    assert response.status_code in (400, 401) and response.get_json()["error"] == "invalid_client"


def test_revocation_ends_the_token_at_userinfo_and_introspection(world: World) -> None:
    token = _token(world)
    response = _post(world, "/oidc/revoke", token, world.certs["05"])
    assert response.status_code == 200
    assert userinfo(world.app, token, world.certs["05"]).status_code == 401
    assert _post(world, "/oidc/introspect", token, world.certs["05"]).get_json() == {"active": False}
    assert _post(world, "/oidc/revoke", "unknown-token", world.certs["05"]).status_code == 200  # RFC 7009 §2.2


def test_a_system_cannot_revoke_another_systems_token(world: World) -> None:
    token = _token(world, "05")
    response = _post(world, "/oidc/revoke", token, world.certs["07"], "biz-07")
    assert response.status_code == 400
    assert userinfo(world.app, token, world.certs["05"]).status_code == 200


def test_the_request_guards_refusals_are_oauth_json_without_a_logged_traceback(world: World, caplog: Any) -> None:
    """A NUL, a body over the limit or a wrong method at the machine endpoints: RFC 6749 5.2 JSON, not a page
    (the page needs the main app's static files: each refusal used to log an "error page failed" traceback)."""
    client, cert = world.app.test_client(), world.certs["05"]
    nul = client.post("/oidc/token", data="grant_type=authorization_code&code=%00",
                      content_type="application/x-www-form-urlencoded", headers=cert.header)
    assert nul.status_code == 400 and nul.get_json()["error"] == "invalid_request"
    assert "制御文字" in nul.get_json()["error_description"]
    english = client.post("/oidc/introspect", data={"token": "a\x00b"}, headers=dict(cert.header,
                                                                                    **{"Accept-Language": "en"}))
    assert english.status_code == 400 and "control" in english.get_json()["error_description"]
    big = client.post("/oidc/revoke", data={"token": "a" * (world.app.config["MAX_CONTENT_LENGTH"] + 1)},
                      headers=cert.header)
    assert big.status_code == 413 and big.get_json()["error"] == "invalid_request"
    wrong = client.get("/oidc/token", headers=cert.header)
    assert wrong.status_code == 405 and wrong.get_json()["error"] == "invalid_request"
    assert wrong.headers["Allow"] == "POST" or "POST" in wrong.headers["Allow"]
    assert "error page failed" not in caplog.text


def test_protocol_refusals_are_described_in_the_callers_language(world: World) -> None:
    """Authlib's English descriptions (one named the allowed methods as a Python list) are replaced by ours."""
    client = world.app.test_client()
    form = {"grant_type": "authorization_code", "code": "abc", "client_id": "biz-05",
            "redirect_uri": "https://biz05.example.jp/cb"}
    anonymous = client.post("/oidc/token", data=form)
    assert anonymous.get_json()["error"] == "invalid_client"
    assert "クライアント認証に失敗しました" in anonymous.get_json()["error_description"]
    english = client.post("/oidc/token", data=form, headers={"Accept-Language": "en"}).get_json()
    assert english["error_description"].startswith("Client authentication failed") and "[" not in english[
        "error_description"]
    wrong_code = client.post("/oidc/token", data=form, headers=world.certs["05"].header).get_json()
    assert wrong_code["error"] == "invalid_grant" and "認可コードが正しくないか" in wrong_code["error_description"]
    with world.app.app_context():  # the audit entry keeps Authlib's specific reason
        refused = get_session().scalars(select(AuditEvent).where(AuditEvent.action == "oidc.token_refused")
                                        .order_by(AuditEvent.id.desc())).first()
        assert refused is not None and "code" in refused.detail["description"].lower()
    no_token = client.get("/oidc/userinfo", headers={"Accept-Language": "en"})
    assert no_token.status_code == 401
    assert no_token.get_json()["error_description"] == "A bearer access token is required."
    assert "Bearer のアクセストークンが必要です" in client.get("/oidc/userinfo").get_json()["error_description"]
