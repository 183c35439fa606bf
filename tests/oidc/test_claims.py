"""Claims: pairwise subjects, login method (amr/acr) and the operator certificate of a biometric login."""

from __future__ import annotations

import base64
import hashlib
import random
import urllib.parse
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from joserfc import jwt
from joserfc.jwk import KeySet

from oidc.pairwise import pairwise_sub, sector_for
from tests.bio.helpers import bio_login, manager_enrols
from tests.bio.softauthn import SoftAuthenticator
from tests.conftest import ADMIN_PASSWORD, csrf_token
from tests.helpers import make_csr
from tests.oidc.conftest import (
    OPERATOR_PASSWORD,
    AuthRequest,
    World,
    exchange,
    get_code,
    userinfo,
    web_login,
)


def _login_everywhere(world: World, business_id: str, browser: Any = None) -> dict[str, str]:
    """sub as the ID token, the access token and userinfo tell it."""
    req = AuthRequest(business_id)
    response = exchange(world.app, req, get_code(browser or world.browser, req), world.certs[business_id])
    body = response.get_json()
    keys = KeySet.import_key_set(world.app.test_client().get("/oidc/jwks.json").get_json())
    id_token = jwt.decode(body["id_token"], keys, algorithms=["ES256"]).claims
    access = jwt.decode(body["access_token"], keys, algorithms=["ES256"]).claims
    info = userinfo(world.app, body["access_token"], world.certs[business_id]).get_json()
    return {"id_token": id_token["sub"], "access_token": access["sub"], "userinfo": info["sub"]}


def test_pairwise_sub_differs_per_system_and_is_stable(world: World) -> None:
    first = _login_everywhere(world, "05")
    assert len(set(first.values())) == 1, "sub must be the same in ID token, access token and userinfo"
    sub05 = first["id_token"]
    assert len(sub05) == 43
    sub07 = _login_everywhere(world, "07")["id_token"]
    assert sub07 != sub05
    # a new login, a password change and a new operator certificate change nothing
    again = web_login(world.app, "minamiedo", "OP0601", OPERATOR_PASSWORD)
    assert set(_login_everywhere(world, "05", again).values()) == {sub05}
    page = again.get("/password").get_data(as_text=True)
    new_password = "Changed-Secret-2027"
    assert again.post("/password", data={"csrf_token": csrf_token(page), "current_password": OPERATOR_PASSWORD,
                                         "new_password": new_password, "confirm_password": new_password}
                      ).status_code == 302
    assert world.admin.post("/api/v1/tenants/minamiedo/operators/OP0601/certificates", json={}).status_code == 201
    assert set(_login_everywhere(world, "05", again).values()) == {sub05}
    assert set(_login_everywhere(world, "07", again).values()) == {sub07}


def test_pairwise_sub_never_collides_in_ten_thousand_samples() -> None:
    key = b"k" * 32
    rng = random.Random(7)
    samples = {(f"{rng.randrange(100):02d}", rng.randrange(1, 10**6)) for _ in range(10_000)}
    subs = {pairwise_sub(key, sector=sector_for(b), operator_pk=pk) for b, pk in samples}
    assert len(subs) == len(samples)
    # the separator keeps "biz:1" + "23" apart from "biz:12" + "3"
    assert pairwise_sub(key, sector="biz:1", operator_pk=23) != pairwise_sub(key, sector="biz:12", operator_pk=3)


def test_biometric_login_gives_hwk_amr_and_the_operator_certificate_thumbprint(world: World) -> None:
    app = world.app
    op_key = ec.generate_private_key(ec.SECP256R1())
    response = world.admin.post("/api/v1/tenants/minamiedo/operators", json={
        "operator_id": "OP0602", "name": "生体 花子", "auth_method": "biometric", "business_ids": ["05"],
        "csr": make_csr(op_key).decode()})
    assert response.status_code == 201, response.get_json()
    serial = response.get_json()["certificate"]["serial"]
    pem = world.admin.get(f"/api/v1/certificates/{serial}/pem").get_data(as_text=True)
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
    leaf = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
    authn = SoftAuthenticator(rp_id="opauth.example.jp", origin="https://opauth.example.jp")
    manager = web_login(app, "system", "admin", ADMIN_PASSWORD)
    assert manager_enrols(manager, "OP0602", authn, tenant="minamiedo").status_code == 200
    app.config["BIOMETRIC_CLIENT_CERT_REQUIRED"] = True
    browser = app.test_client()
    browser.environ_base["HTTP_X_SSL_CLIENT_CERT"] = urllib.parse.quote(leaf)
    response = bio_login(browser, "OP0602", authn, tenant="minamiedo")
    assert response.status_code == 200, response.get_data(as_text=True)
    req = AuthRequest("05")
    body = exchange(app, req, get_code(browser, req), world.certs["05"]).get_json()
    keys = KeySet.import_key_set(app.test_client().get("/oidc/jwks.json").get_json())
    claims = jwt.decode(body["id_token"], keys, algorithms=["ES256"]).claims
    assert claims["amr"] == ["hwk", "user"] and claims["acr"] == "urn:opauth:acr:biometric"
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert claims["https://opauth/op_cert#S256"] == thumbprint
    assert "https://opauth/in_business_id" not in claims and claims["https://opauth/permissions"] == []
