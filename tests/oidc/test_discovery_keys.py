"""Discovery, JWKS and key rotation (the next key is published before it signs; the old one stays)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from tests.oidc.conftest import BASE, AuthRequest, World, exchange, get_code, userinfo


def test_discovery_document_is_valid_and_says_what_the_provider_does(world: World) -> None:
    response = world.app.test_client().get("/oidc/.well-known/openid-configuration")
    assert response.status_code == 200
    meta = response.get_json()
    checked = OpenIDProviderMetadata(meta)
    for name in dir(checked):
        # Discovery asks every provider to offer RS256; opauth signs with ES256 only, by design.
        if name.startswith("validate_") and name != "validate_id_token_signing_alg_values_supported":
            getattr(checked, name)()
    assert meta["issuer"] == BASE + "/oidc" and meta["jwks_uri"] == BASE + "/oidc/jwks.json"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["token_endpoint_auth_methods_supported"] == ["tls_client_auth"]
    assert meta["tls_client_certificate_bound_access_tokens"] is True
    assert meta["subject_types_supported"] == ["pairwise"]
    assert meta["response_types_supported"] == ["code"] and meta["grant_types_supported"] == ["authorization_code"]
    assert meta["mtls_endpoint_aliases"]["token_endpoint"] == BASE + "/oidc/token"


def _jwks(world: World) -> dict[str, list[dict[str, str]]]:
    body: dict[str, list[dict[str, str]]] = world.app.test_client().get("/oidc/jwks.json").get_json()
    return body


def test_jwks_publishes_public_es256_keys_named_by_their_thumbprint(world: World) -> None:
    keys = _jwks(world)["keys"]
    assert len(keys) == 2  # the active key and the next one, published before it is used
    for key in keys:
        assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256" and "d" not in key
        assert key["kid"] == ECKey.import_key(key).thumbprint()
    key_files = list((Path(world.app.config["INSTANCE_DIR"]) / "keys").glob("oidc-signing-*.pem"))
    assert len(key_files) == 2
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 and b"ENCRYPTED" in f.read_bytes() for f in key_files)


def _tokens(world: World) -> dict[str, str]:
    req = AuthRequest("05")
    body: dict[str, str] = exchange(world.app, req, get_code(world.browser, req), world.certs["05"]).get_json()
    return body




def test_rotation_switches_to_the_published_key_and_keeps_the_old_one(world: World) -> None:
    before = _tokens(world)
    pairwise = Path(world.app.config["INSTANCE_DIR"]) / "keys" / "pairwise"
    assert stat.S_IMODE(pairwise.stat().st_mode) == 0o600, "the pairwise secret is an instance file, 0600"
    published = {k["kid"] for k in _jwks(world)["keys"]}
    runner = world.app.test_cli_runner()
    unset = {"LC_ALL": None, "LC_MESSAGES": None}
    refused = runner.invoke(args=["oidc", "keys", "rotate"], env={"LANG": "ja_JP.UTF-8", **unset})
    assert refused.exit_code == 2 and "公開されてから" in refused.output and "時間しか経っていません" in refused.output
    english = runner.invoke(args=["oidc", "keys", "rotate"], env={"LANG": "en_US.UTF-8", **unset})
    assert english.exit_code == 2 and "published for only" in english.output
    result = runner.invoke(args=["oidc", "keys", "rotate", "--force"])
    assert result.exit_code == 0, result.output
    after = _tokens(world)
    keys = KeySet.import_key_set(_jwks(world))
    old_kid = jwt.decode(before["id_token"], keys, algorithms=["ES256"]).header["kid"]
    new_kid = jwt.decode(after["id_token"], keys, algorithms=["ES256"]).header["kid"]
    assert old_kid != new_kid and new_kid in published, "the new signing key was published before it was used"
    assert old_kid in {k["kid"] for k in _jwks(world)["keys"]}, "the old key stays published"
    assert len(_jwks(world)["keys"]) == 3
    assert userinfo(world.app, before["access_token"], world.certs["05"]).status_code == 200
    listing = runner.invoke(args=["oidc", "keys", "list"]).output
    assert "retired" in listing and "active" in listing and "next" in listing


def test_client_settings_cli_shows_and_changes_a_client(world: World) -> None:
    runner = world.app.test_cli_runner()
    shown = runner.invoke(args=["oidc", "client", "show", "05"])
    assert shown.exit_code == 0 and json.loads(shown.output)["client_id"] == "biz-05"
    bad = runner.invoke(args=["oidc", "client", "set", "05", "--redirect-uri", "http://www1.city.itozaki.nagano.jp/"])
    assert bad.exit_code == 2 and "https" in bad.output
    uri = "https://perso.city.itozaki.nagano.jp/cb"
    ok = runner.invoke(args=["oidc", "client", "set", "05", "--disable", "--redirect-uri", uri,
                             "--backchannel-logout-uri", "https://www1.city.itozaki.nagano.jp/bcl"])
    assert ok.exit_code == 0, ok.output
    body = json.loads(ok.output)
    assert body["enabled"] is False and body["redirect_uris"] == [uri]
    assert "05\tbiz-05\tdisabled" in runner.invoke(args=["oidc", "client", "list"]).output
    assert world.admin.get("/api/v1/business-systems/05/oidc-client").get_json()["redirect_uris"] == [uri]
