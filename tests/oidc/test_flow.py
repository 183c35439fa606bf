"""The code flow end to end: authorize with opauth's session, token by mutual TLS, userinfo bound to it."""

from __future__ import annotations

from joserfc import jwt
from joserfc.jwk import KeySet

from tests.oidc.conftest import BASE, AuthRequest, World, exchange, get_code, userinfo


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
