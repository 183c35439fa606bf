"""Every refusal is a standard OAuth/OIDC error, an audit entry and never a 500."""

from __future__ import annotations

import re
import urllib.parse
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from db import get_session, utcnow
from kernel.audit import AuditEvent
from oidc.models import OidcAuthorizationCode
from tests.conftest import csrf_token
from tests.oidc.conftest import (
    REDIRECTS,
    AuthRequest,
    World,
    exchange,
    get_code,
    redirect_params,
    userinfo,
)


def _audited(world: World, action: str) -> list[AuditEvent]:
    with world.app.app_context():
        return list(get_session().scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _redirected_error(world: World, req: AuthRequest, **overrides: str | None) -> dict[str, str]:
    response = world.browser.get(req.url(**overrides))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].startswith(req.redirect_uri + "?")
    params = redirect_params(response.headers["Location"])
    assert params["state"] == req.state
    return params


@pytest.mark.parametrize(("overrides", "error"), [
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"nonce": None}, "invalid_request"),
    ({"scope": "profile"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": "code id_token"}, "unsupported_response_type"),
    ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    ({"max_age": "-1"}, "invalid_request"),
    ({"max_age": "１２"}, "invalid_request"),
    ({"nonce": "n" * 256}, "invalid_request"),
    ({"code_challenge": "短い"}, "invalid_request"),
    ({"prompt": "none login"}, "invalid_request"),
])
def test_bad_authorization_requests_are_sent_back_with_an_error(world: World, overrides: dict[str, str | None],
                                                                  error: str) -> None:
    before = len(_audited(world, "oidc.denied"))
    params = _redirected_error(world, AuthRequest("05"), **overrides)
    assert params["error"] == error and "code" not in params
    assert len(_audited(world, "oidc.denied")) == before + 1


def test_missing_state_is_refused(world: World) -> None:
    response = world.browser.get(AuthRequest("05").url(state=None))
    assert response.status_code == 302
    assert redirect_params(response.headers["Location"])["error"] == "invalid_request"
    assert _audited(world, "oidc.denied")


@pytest.mark.parametrize("redirect_uri", [
    "https://evil.example.jp/oidc/callback",
    REDIRECTS["05"] + "x",
    REDIRECTS["05"][:-1],
    REDIRECTS["05"].replace("https://", "http://"),
    REDIRECTS["05"].replace("https://", "https://rp@"),
    REDIRECTS["07"],  # registered, but for the other client
])
def test_unregistered_redirect_uris_get_an_error_page_not_a_redirect(world: World, redirect_uri: str) -> None:
    response = world.browser.get(AuthRequest("05").url(redirect_uri=redirect_uri))
    assert response.status_code == 400 and "Location" not in response.headers
    assert _audited(world, "oidc.denied")


def test_unknown_client_gets_an_error_page(world: World) -> None:
    response = world.browser.get(AuthRequest("05").url(client_id="biz-99"))
    assert response.status_code == 400 and "Location" not in response.headers
    assert _audited(world, "oidc.denied")


@pytest.mark.parametrize("uri", [
    "http://www1.city.itozaki.nagano.jp/cb", "https://evil.example.jp/cb", "https://rp@www1.city.itozaki.nagano.jp/cb",
    "https://www1.city.itozaki.nagano.jp/cb#frag", "https://www1.city.itozaki.nagano.jp/c b", "javascript:alert(1)",
])
def test_client_settings_refuse_bad_redirect_uris(world: World, uri: str) -> None:
    response = world.admin.put("/api/v1/business-systems/05/oidc-client",
                               json={"enabled": True, "redirect_uris": [uri]})
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_input"
    assert _audited(world, "oidc.client_rejected")


def test_prompt_none_without_a_session_answers_login_required(world: World) -> None:
    req = AuthRequest("05")
    response = world.app.test_client().get(req.url(prompt="none"))
    params = redirect_params(response.headers["Location"])
    assert response.status_code == 302 and params["error"] == "login_required" and params["state"] == req.state
    assert _audited(world, "oidc.denied")


def test_without_a_session_the_operator_logs_in_and_comes_back(world: World) -> None:
    req = AuthRequest("05")
    browser = world.app.test_client()
    response = browser.get(req.url())
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    page = browser.get("/login").get_data(as_text=True)
    response = browser.post("/login", data={"csrf_token": csrf_token(page), "tenant": "minamiedo",
                                            "operator_id": "OP0601", "password": "Operator-Secret-2026"})
    assert response.status_code == 302
    response = browser.get(response.headers["Location"])  # the top screen sends the browser back
    assert response.status_code == 302 and response.headers["Location"].startswith("/oidc/authorize?")
    response = browser.get(response.headers["Location"])
    assert redirect_params(response.headers["Location"])["state"] == req.state
    assert "code" in redirect_params(response.headers["Location"])


def test_prompt_login_asks_for_a_new_login_even_with_a_session(world: World) -> None:
    req = AuthRequest("05")
    response = world.browser.get(req.url(prompt="login"))
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    # Going back without logging in again does not count as a login.
    response = world.browser.get(req.url(prompt="login"))
    assert response.headers["Location"].endswith("/login")
    page = world.browser.get("/login").get_data(as_text=True)
    response = world.browser.post("/login", data={"csrf_token": csrf_token(page), "tenant": "minamiedo",
                                                  "operator_id": "OP0601", "password": "Operator-Secret-2026"})
    response = world.browser.get(world.browser.get(response.headers["Location"]).headers["Location"])
    assert "code" in redirect_params(response.headers["Location"])


def test_max_age_zero_needs_a_fresh_login(world: World) -> None:
    response = world.browser.get(AuthRequest("05").url(max_age="0"))
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")


def _deny(world: World, business_id: str = "05") -> dict[str, str]:
    params = _redirected_error(world, AuthRequest(business_id))
    assert params["error"] == "access_denied"
    return params


def test_operator_without_the_permission_is_refused(world: World) -> None:
    response = world.admin.get("/api/v1/tenants/minamiedo/operators/OP0601")
    body = response.get_json()
    body["business_ids"] = ["07"]
    assert world.admin.put("/api/v1/tenants/minamiedo/operators/OP0601", json=body).status_code == 200
    _deny(world, "05")
    assert any(e.detail.get("reason") == "system_not_permitted" for e in _audited(world, "oidc.denied"))


def test_tenant_without_joint_use_is_refused(world: World) -> None:
    assert world.admin.put("/api/v1/business-systems/05/joint-use", json={"tenants": []}).status_code == 200
    _deny(world, "05")
    assert any(e.detail.get("reason") == "system_not_permitted" for e in _audited(world, "oidc.denied"))


def test_disabled_business_login_is_refused(world: World) -> None:
    response = world.admin.put("/api/v1/business-systems/05/oidc-client",
                               json={"enabled": False, "redirect_uris": [REDIRECTS["05"]]})
    assert response.status_code == 200
    _deny(world, "05")
    assert any(e.detail.get("reason") == "business_login_disabled" for e in _audited(world, "oidc.denied"))


def test_revoked_operator_loses_the_session_and_cannot_get_tokens(world: World) -> None:
    req = AuthRequest("05")
    code = get_code(world.browser, req)
    assert world.admin.post("/api/v1/tenants/minamiedo/operators/OP0601/revoke", json={}).status_code == 200
    response = exchange(world.app, req, code, world.certs["05"])
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
    response = world.browser.get(AuthRequest("05").url(prompt="none"))
    assert redirect_params(response.headers["Location"])["error"] == "login_required"


def test_locked_operator_cannot_exchange_a_code_issued_before_the_lock(world: World) -> None:
    req = AuthRequest("05")
    code = get_code(world.browser, req)
    for _ in range(world.app.config["LOGIN_MAX_FAILURES"]):
        attacker = world.app.test_client()
        page = attacker.get("/login").get_data(as_text=True)
        attacker.post("/login", data={"csrf_token": csrf_token(page), "tenant": "minamiedo",
                                      "operator_id": "OP0601", "password": "wrong-password-123"})
    response = exchange(world.app, req, code, world.certs["05"])
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
    assert any(e.detail.get("reason") == "operator_locked" for e in _audited(world, "oidc.token_refused"))


# --- the token endpoint ------------------------------------------------------------------------------------

def test_code_reuse_is_refused_and_revokes_the_tokens_it_produced(world: World) -> None:
    req = AuthRequest("05")
    code = get_code(world.browser, req)
    first = exchange(world.app, req, code, world.certs["05"])
    assert first.status_code == 200
    token = first.get_json()["access_token"]
    assert userinfo(world.app, token, world.certs["05"]).status_code == 200
    second = exchange(world.app, req, code, world.certs["05"])
    assert second.status_code == 400 and second.get_json()["error"] == "invalid_grant"
    assert _audited(world, "oidc.code_replay")
    refused = userinfo(world.app, token, world.certs["05"])
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_token"


def test_code_of_one_client_cannot_be_used_by_another(world: World) -> None:
    req = AuthRequest("05")
    code = get_code(world.browser, req)
    other = AuthRequest("07")
    other.verifier = req.verifier
    response = exchange(world.app, other, code, world.certs["07"])
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
    assert any(e.detail.get("reason") == "code issued to another client" for e in _audited(world, "oidc.token_refused"))
    assert exchange(world.app, req, code, world.certs["05"]).status_code == 200, "still the rightful client's"


def test_expired_code_is_refused(world: World) -> None:
    req = AuthRequest("05")
    code = get_code(world.browser, req)
    with world.app.app_context():
        session = get_session()
        session.execute(update(OidcAuthorizationCode).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    response = exchange(world.app, req, code, world.certs["05"])
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
    assert any(e.detail.get("reason") == "code expired" for e in _audited(world, "oidc.token_refused"))


@pytest.mark.parametrize(("overrides", "error"), [
    ({"code_verifier": None}, "invalid_request"),
    ({"code_verifier": "short"}, "invalid_request"),
    ({"code_verifier": "x" * 64}, "invalid_grant"),
    ({"redirect_uri": REDIRECTS["05"] + "/other"}, "invalid_grant"),
    ({"redirect_uri": None}, "invalid_grant"),
    ({"grant_type": "password"}, "unsupported_grant_type"),
])
def test_bad_token_requests_are_refused(world: World, overrides: dict[str, str | None], error: str) -> None:
    req = AuthRequest("05")
    response = exchange(world.app, req, get_code(world.browser, req), world.certs["05"], **overrides)
    assert response.status_code == 400 and response.get_json()["error"] == error, response.get_json()
    assert _audited(world, "oidc.token_refused")


def test_token_request_without_a_certificate_is_refused(world: World) -> None:
    req = AuthRequest("05")
    response = exchange(world.app, req, get_code(world.browser, req), None)
    assert response.status_code in (400, 401) and response.get_json()["error"] == "invalid_client"
    assert _audited(world, "oidc.client_auth_failed")


def test_certificate_of_another_business_system_is_refused(world: World) -> None:
    req = AuthRequest("05")
    response = exchange(world.app, req, get_code(world.browser, req), world.certs["07"])
    assert response.get_json()["error"] == "invalid_client"
    assert any("another business system" in e.detail.get("reason", "")
               for e in _audited(world, "oidc.client_auth_failed"))


def test_client_id_must_name_the_certificates_system(world: World) -> None:
    req = AuthRequest("05")
    response = exchange(world.app, req, get_code(world.browser, req), world.certs["05"], client_id="biz-07")
    assert response.get_json()["error"] == "invalid_client"


def test_revoked_ssl_certificate_is_refused_on_the_next_request(world: World) -> None:
    req = AuthRequest("05")
    code = get_code(world.browser, req)
    response = world.admin.post(f"/api/v1/certificates/{world.certs['05'].serial}/revoke",
                                json={"reason": "keyCompromise"})
    assert response.status_code == 200, response.get_json()
    response = exchange(world.app, req, code, world.certs["05"])
    assert response.get_json()["error"] == "invalid_client"
    assert any("失効" in e.detail.get("reason", "") for e in _audited(world, "oidc.client_auth_failed"))


def test_terminal_certificate_is_not_a_client_certificate(world: World) -> None:
    terminal = world.issue_ssl_cert(None, terminal="terminal01")
    req = AuthRequest("05")
    response = exchange(world.app, req, get_code(world.browser, req), terminal)
    assert response.get_json()["error"] == "invalid_client"
    assert _audited(world, "oidc.client_auth_failed")


def test_operator_certificate_is_not_a_client_certificate(world: World) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.oidc.conftest import Cert

    body = world.admin.post("/api/v1/tenants/minamiedo/operators/OP0601/certificates", json={}).get_json()
    serial = body["certificate"]["serial"]
    pem = world.admin.get(f"/api/v1/certificates/{serial}/pem").get_data(as_text=True)
    cert = x509.load_pem_x509_certificate(pem.encode())
    operator_cert = Cert(pem=cert.public_bytes(Encoding.PEM).decode(), der=cert.public_bytes(Encoding.DER),
                         serial=serial)
    req = AuthRequest("05")
    response = exchange(world.app, req, get_code(world.browser, req), operator_cert)
    assert response.get_json()["error"] == "invalid_client"
    assert _audited(world, "oidc.client_auth_failed")


def test_spoofed_certificate_header_from_an_untrusted_peer_is_ignored(world: World) -> None:
    req = AuthRequest("05")
    code = get_code(world.browser, req)
    client = world.app.test_client()
    client.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    response = client.post("/oidc/token", headers=world.certs["05"].header, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": req.redirect_uri,
        "client_id": req.client_id, "code_verifier": req.verifier})
    assert response.get_json()["error"] == "invalid_client"


# --- userinfo: certificate-bound tokens ---------------------------------------------------------------------

def _token(world: World) -> str:
    req = AuthRequest("05")
    response = exchange(world.app, req, get_code(world.browser, req), world.certs["05"])
    token: str = response.get_json()["access_token"]
    return token


def test_bound_token_without_the_certificate_is_refused(world: World) -> None:
    response = userinfo(world.app, _token(world), None)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer error=\"invalid_token\"")
    # RFC 6750 §3: the description is printable ASCII without quote or backslash (gunicorn answered 500 for the
    # Japanese refusal reason); the full reason stays in the JSON body.
    assert re.fullmatch(r'Bearer error="invalid_token", error_description="[\x20\x21\x23-\x5b\x5d-\x7e]*"', challenge)
    assert _audited(world, "oidc.userinfo_refused")


def test_bound_token_over_another_certificate_is_refused(world: World) -> None:
    response = userinfo(world.app, _token(world), world.certs["07"])
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
    assert any("another certificate" in e.detail.get("reason", "") for e in _audited(world, "oidc.userinfo_refused"))


def test_forged_or_garbage_tokens_are_refused(world: World) -> None:
    token = _token(world)
    header, payload, _sig = token.split(".")
    for forged in ("garbage", f"{header}.{payload}.", "eyJhbGciOiJub25lIn0.e30.", token[:-4] + "AAAA"):
        response = userinfo(world.app, forged, world.certs["05"])
        assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
    assert len(_audited(world, "oidc.userinfo_refused")) == 4


def test_control_characters_in_an_authorization_request_are_refused_where_input_enters(world: World) -> None:
    # The application-wide input guard answers before any redirect: nothing with a NUL reaches a client.
    response = world.browser.get(AuthRequest("05").url(nonce="a\x00b"))
    assert response.status_code == 400 and "Location" not in response.headers


JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def test_client_settings_refusals_speak_the_request_language(world: World) -> None:
    refusals = [("05", {"enabled": True, "redirect_uris": ["http://www1.city.itozaki.nagano.jp/cb"]}, 400),
                ("05", {"enabled": 5, "redirect_uris": []}, 400),
                ("05", {"enabled": True, "redirect_uris": []}, 400),
                ("05", {"redirect_uris": "https://evil.example.jp/cb"}, 400),
                ("99", {"enabled": False}, 404)]
    for business_id, body, status in refusals:
        url = f"/api/v1/business-systems/{business_id}/oidc-client"
        japanese = world.admin.put(url, json=body, headers={"Accept-Language": "ja"})
        english = world.admin.put(url, json=body, headers={"Accept-Language": "en"})
        assert japanese.status_code == english.status_code == status, body
        assert JAPANESE.search(japanese.get_json()["message"]), japanese.get_json()
        assert not JAPANESE.search(english.get_json()["message"].replace("業務ID", "")), english.get_json()
    message = world.admin.put("/api/v1/business-systems/05/oidc-client", headers={"Accept-Language": "ja"},
                              json={"redirect_uris": ["http://www1.city.itozaki.nagano.jp/cb"]}).get_json()["message"]
    assert message == ("redirect_uris: URI 'http://www1.city.itozaki.nagano.jp/cb' は https:// で始まる URI で"
                       "指定してください。")


def test_client_settings_cli_refusals_follow_the_shell_language(world: World) -> None:
    unset = {"LC_ALL": None, "LC_MESSAGES": None}
    runner = world.app.test_cli_runner()
    for args in (["oidc", "client", "set", "99", "--disable"],
                 ["oidc", "client", "set", "05", "--redirect-uri", "http://www1.city.itozaki.nagano.jp/"]):
        japanese = runner.invoke(args=args, env={"LANG": "ja_JP.UTF-8", **unset})
        english = runner.invoke(args=args, env={"LANG": "en_US.UTF-8", **unset})
        assert japanese.exit_code == english.exit_code == 2, japanese.output
        assert JAPANESE.search(japanese.output) and not JAPANESE.search(english.output), (japanese.output,
                                                                                           english.output)


def test_an_unknown_client_gets_our_message_with_the_oauth_error_code(world: World) -> None:
    url = AuthRequest("05").url(client_id="biz-99")
    page = world.browser.get(url).get_data(as_text=True)
    assert "invalid_client: この業務システム (client_id) はこのサーバに登録されていない" in page
    assert "does not exist" not in page
    english = world.browser.get(url + "&lang=en").get_data(as_text=True)
    assert "invalid_client: This business system (client_id) is not registered" in english
    assert _audited(world, "oidc.denied")[-1].detail["error"] == "invalid_client"


def test_an_operator_certificate_at_the_machine_api_is_refused_by_its_label(world: World) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.helpers import make_csr

    response = world.admin.post("/api/v1/tenants/minamiedo/operators", json={
        "operator_id": "OP0603", "name": "証明 次郎", "auth_method": "password", "password": "Kakunin-2026-pass",
        "business_ids": ["05"], "csr": make_csr(ec.generate_private_key(ec.SECP256R1())).decode()})
    assert response.status_code == 201, response.get_json()
    serial = response.get_json()["certificate"]["serial"]
    pem = world.admin.get(f"/api/v1/certificates/{serial}/pem").get_data(as_text=True)
    header = {"X-SSL-Client-Cert": urllib.parse.quote(pem)}
    japanese = world.app.test_client().get("/api/v1/business/self", headers={**header, "Accept-Language": "ja"})
    assert japanese.status_code == 403 and japanese.get_json()["message"] == "オペレータ証明書はここでは使えません。"
    english = world.app.test_client().get("/api/v1/business/self", headers={**header, "Accept-Language": "en"})
    assert english.status_code == 403 and english.get_json()["message"] == "Operator certificates cannot be used here."
