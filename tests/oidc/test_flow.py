"""The code flow end to end: authorize with opauth's session, token by mutual TLS, userinfo bound to it."""

from __future__ import annotations

from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import csrf_token
from tests.helpers import statements_of, writes_of
from tests.oidc.conftest import (
    BASE,
    OPERATOR_PASSWORD,
    AuthRequest,
    World,
    exchange,
    get_code,
    redirect_params,
    userinfo,
)


def _verify(world: World, token: str) -> dict[str, object]:
    keys = KeySet.import_key_set(world.app.test_client().get("/oidc/jwks.json").get_json())
    return dict(jwt.decode(token, keys, algorithms=["ES256"]).claims)


def test_code_flow_issues_signed_tokens_with_opauth_claims(world: World) -> None:
    req = AuthRequest("05")
    code = get_code(world.browser, req)
    response = exchange(world.app, req, code, world.certs["05"])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"].lower() == "bearer" and response.headers["Cache-Control"] == "no-store"
    id_token = _verify(world, body["id_token"])
    assert id_token["iss"] == BASE + "/oidc" and id_token["aud"] == ["biz-05"] and id_token["nonce"] == req.nonce
    assert id_token["amr"] == ["pwd"] and id_token["acr"] == "urn:opauth:acr:password"
    assert id_token["https://opauth/in_business_id"] == "U0601"
    assert id_token["https://opauth/permissions"] == ["read", "write"]
    assert id_token["https://opauth/tenant"] == {"code": "minamiedo", "name": "南江戸市"}
    assert id_token["name"] == "山田 太郎" and "OP0601" not in str(id_token)
    access = _verify(world, body["access_token"])
    assert access["cnf"] == {"x5t#S256": world.certs["05"].x5t}
    assert access["sub"] == id_token["sub"] and access["sid"] == id_token["sid"]
    info = userinfo(world.app, body["access_token"], world.certs["05"])
    assert info.status_code == 200, info.get_json()
    assert info.get_json()["sub"] == id_token["sub"]


def test_authorization_request_may_be_posted_by_the_business_systems_page(world: World) -> None:
    req = AuthRequest("05")
    response = world.browser.post("/oidc/authorize", data=req.params())  # no CSRF token: a cross-site form post
    assert response.status_code == 302, response.get_data(as_text=True)
    params = redirect_params(response.headers["Location"])
    assert params["state"] == req.state
    assert exchange(world.app, req, params["code"], world.certs["05"]).status_code == 200


def test_posted_request_without_a_session_resumes_after_the_login(world: World) -> None:
    req = AuthRequest("05")
    browser = world.app.test_client()
    response = browser.post("/oidc/authorize", data=req.params())
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    page = browser.get("/login").get_data(as_text=True)
    response = browser.post("/login", data={"csrf_token": csrf_token(page), "tenant": "minamiedo",
                                            "operator_id": "OP0601", "password": OPERATOR_PASSWORD})
    resumed = browser.get(response.headers["Location"]).headers["Location"]
    assert resumed.startswith("/oidc/authorize?")
    params = redirect_params(browser.get(resumed).headers["Location"])
    assert params["state"] == req.state and "code" in params


def test_ui_locales_chooses_the_language_of_opauths_login_page(world: World) -> None:
    """OIDC ``ui_locales``: the first language opauth has (en) for the login page a business system sends to."""
    browser = world.app.test_client()
    response = browser.get("/oidc/authorize", query_string={**AuthRequest("05").params(), "ui_locales": "fr en-GB"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/login?lang=en")
    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "Log in" in page and "ログイン" not in page.split("<main", 1)[-1]
    plain = world.app.test_client().get("/oidc/authorize", query_string={**AuthRequest("05").params(),
                                                                          "ui_locales": "fr"})
    assert plain.headers["Location"].endswith("/login")  # none of them: the page's own default


def test_one_token_exchange_reads_each_row_once_and_commits_once(world: World) -> None:
    """The hot path stays lean: the certificate's revocation read fresh, the token row and its audit entry
    written in the request's one transaction."""
    req = AuthRequest("05")
    assert exchange(world.app, req, get_code(world.browser, req), world.certs["05"]).status_code == 200  # warm
    req = AuthRequest("05")
    code = get_code(world.browser, req)
    response, statements, commits = statements_of(world.app, lambda: exchange(world.app, req, code,
                                                                              world.certs["05"]))
    assert response.status_code == 200, response.get_data(as_text=True)
    writes = writes_of(statements)
    # the code's claim, the audit entry (head, entry, head) and the token row, in that order
    assert writes == ["UPDATE oidc_authorization_code", "UPDATE audit_head", "INSERT audit_event",
                      "UPDATE audit_head", "INSERT oidc_token"], statements
    # the presented certificate's revocation is read from the database on every request (never cached)
    assert [s for s in statements if s.startswith("SELECT certificate.id") and "certificate.revoked_at" in s
            and "WHERE certificate.fingerprint_sha256 = " in s], statements
    # settings probe, client, certificate, CAs and CRLs, the path's status, code, operator (tenant, login state),
    # joint use, in-business ID: 9 reads, 5 writes
    # (the signing keys are read once per process every few seconds, not counted)
    counted = [s for s in statements if " FROM oidc_signing_key" not in s]
    assert len(counted) <= 14, "\n".join(statements)
    assert commits == 1


def test_machine_endpoints_neither_read_nor_set_the_cookie_session(world: World) -> None:
    """Token and discovery are served by the lean app: an operator's session cookie is ignored, none is set."""
    req = AuthRequest("05")
    code = get_code(world.browser, req)
    response = world.browser.post("/oidc/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": req.redirect_uri,
        "client_id": req.client_id, "code_verifier": req.verifier}, headers=world.certs["05"].header)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    assert response.headers["X-Frame-Options"] == "DENY"  # the security headers still come
    discovery = world.browser.get("/oidc/.well-known/openid-configuration")
    assert discovery.status_code == 200 and "Set-Cookie" not in discovery.headers
    assert world.browser.get(req.url()).status_code == 302  # authorize stays on the main app, with the session
