"""A business login world built through the product's own API and web forms.

- Business systems 05 and 07 (PUT /api/v1/business-systems), both used jointly by 南江戸市.
- Operator OP0601 of 南江戸市, permitted 05 and 07, with 業務内ID U0601 in 05; logged in on the web.
- An SSL通信証明書 for each business system (POST /api/v1/ssl-certificates from our own CSR).
- Business login enabled for both, with one redirect URI each (PUT .../oidc-client).

The Flask test client stands in for the nginx proxy: the app trusts 127.0.0.1 and the client certificate
travels in X-SSL-Client-Cert, the way operators/login/mtls.py reads it behind nginx.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ADMIN_PASSWORD, csrf_token, initialise, make_app
from tests.helpers import BUSINESS, make_csr

BASE = "https://opauth.example.jp"
OPERATOR_PASSWORD = "Operator-Secret-2026"
SYSTEMS = {
    "05": dict(BUSINESS),
    "07": dict(BUSINESS, business_id="07", name="窓口交付機能", top_url="https://madoguchi.city.example.jp/top",
               operator_admin_url="https://madoguchi.city.example.jp/admin",
               personalize_url="https://madoguchi.city.example.jp/perso"),
}
REDIRECTS = {"05": "https://www1.city.itozaki.nagano.jp/BizSys/oidc/callback",
             "07": "https://madoguchi.city.example.jp/oidc/callback"}


def basic(app: Flask, user: str, password: str) -> FlaskClient:
    client = app.test_client()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Basic {token}"
    return client


def web_login(app: Flask, tenant: str, operator_id: str, password: str, new_password: str | None = None) -> FlaskClient:
    """A browser logged in with ID and password (changing a one-time password when asked)."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"csrf_token": csrf_token(page), "tenant": tenant,
                                           "operator_id": operator_id, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)
    if response.headers["Location"].endswith("/password"):
        assert new_password is not None
        page = client.get("/password").get_data(as_text=True)
        response = client.post("/password", data={"csrf_token": csrf_token(page), "current_password": password,
                                                  "new_password": new_password, "confirm_password": new_password})
        assert response.status_code == 302
    return client


@dataclass(frozen=True)
class Cert:
    pem: str
    der: bytes
    serial: str

    @property
    def header(self) -> dict[str, str]:
        return {"X-SSL-Client-Cert": urllib.parse.quote(self.pem)}

    @property
    def x5t(self) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(self.der).digest()).rstrip(b"=").decode()


@dataclass
class World:
    app: Flask
    admin: FlaskClient
    browser: FlaskClient
    certs: dict[str, Cert] = field(default_factory=dict)

    def issue_ssl_cert(self, business_id: str | None, *, terminal: str = "") -> Cert:
        host = urllib.parse.urlsplit(SYSTEMS[business_id or "05"]["top_url"]).hostname
        body: dict[str, Any] = {"tenant": "system", "hosts": [host],
                                "csr": make_csr(ec.generate_private_key(ec.SECP256R1())).decode()}
        body.update({"business_id": business_id} if business_id else {"terminal": terminal})
        response = self.admin.post("/api/v1/ssl-certificates", json=body)
        assert response.status_code == 201, response.get_json()
        serial = response.get_json()["serial"]
        pem = self.admin.get(f"/api/v1/certificates/{serial}/pem").get_data(as_text=True)
        cert = x509.load_pem_x509_certificate(pem.encode())
        from cryptography.hazmat.primitives.serialization import Encoding

        leaf = cert.public_bytes(Encoding.PEM).decode()
        return Cert(pem=leaf, der=cert.public_bytes(Encoding.DER), serial=serial)


@pytest.fixture
def oidc_app(tmp_path: Path, database_url: str) -> Iterator[Flask]:
    application = make_app(tmp_path / "instance", database_url, TRUSTED_PROXIES="127.0.0.1", PUBLIC_BASE_URL=BASE,
                           ARGON2_TIME_COST=1, ARGON2_MEMORY_KIB=8192, ARGON2_PARALLELISM=1)
    application.config["BOOTSTRAP_PASSWORD"] = initialise(application)
    yield application
    application.extensions["opauth.engine"].dispose()


@pytest.fixture
def world(oidc_app: Flask) -> World:
    app = oidc_app
    web_login(app, "system", "admin", app.config["BOOTSTRAP_PASSWORD"], ADMIN_PASSWORD)
    admin = basic(app, "admin@system", ADMIN_PASSWORD)
    for business_id, data in SYSTEMS.items():
        assert admin.put(f"/api/v1/business-systems/{business_id}", json=data).status_code in (200, 201)
    assert admin.post("/api/v1/tenants", json={"code": "minamiedo", "name": "南江戸市",
                                               "kind": "municipality"}).status_code == 201
    for business_id in SYSTEMS:
        assert admin.put(f"/api/v1/business-systems/{business_id}/joint-use",
                         json={"tenants": ["minamiedo"]}).status_code == 200
    response = admin.post("/api/v1/tenants/minamiedo/operators", json={
        "operator_id": "OP0601", "name": "山田 太郎", "auth_method": "password", "business_ids": ["05", "07"],
        "password": "One-Time-Password-2026"})
    assert response.status_code == 201, response.get_json()
    assert admin.put("/api/v1/tenants/minamiedo/business-systems/05/in-business-ids/OP0601",
                     json={"in_business_id": "U0601", "permissions": ["read", "write"]}).status_code == 200
    for business_id in SYSTEMS:
        response = admin.put(f"/api/v1/business-systems/{business_id}/oidc-client",
                             json={"enabled": True, "redirect_uris": [REDIRECTS[business_id]]})
        assert response.status_code == 200, response.get_json()
    browser = web_login(app, "minamiedo", "OP0601", "One-Time-Password-2026", OPERATOR_PASSWORD)
    world = World(app=app, admin=admin, browser=browser)
    for business_id in SYSTEMS:
        world.certs[business_id] = world.issue_ssl_cert(business_id)
    return world


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class AuthRequest:
    """One authorization request a business system makes, with the values it must remember."""

    business_id: str = "05"
    state: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    verifier: str = ""
    challenge: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    redirect: str = ""  # default: the system's URI in REDIRECTS

    def __post_init__(self) -> None:
        self.verifier, self.challenge = pkce()

    @property
    def client_id(self) -> str:
        return f"biz-{self.business_id}"

    @property
    def redirect_uri(self) -> str:
        return self.redirect or REDIRECTS[self.business_id]

    def params(self, **overrides: str | None) -> dict[str, str]:
        values: dict[str, str | None] = {
            "response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
            "scope": "openid profile", "state": self.state, "nonce": self.nonce,
            "code_challenge": self.challenge, "code_challenge_method": "S256", **self.extra}
        values.update(overrides)
        return {k: v for k, v in values.items() if v is not None}

    def url(self, **overrides: str | None) -> str:
        return "/oidc/authorize?" + urllib.parse.urlencode(self.params(**overrides))


def redirect_params(location: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def get_code(browser: FlaskClient, req: AuthRequest, **overrides: str | None) -> str:
    response = browser.get(req.url(**overrides))
    assert response.status_code == 302, response.get_data(as_text=True)
    params = redirect_params(response.headers["Location"])
    assert response.headers["Location"].startswith(req.redirect_uri + "?"), params
    assert params["state"] == req.state and params["iss"] == BASE + "/oidc", params
    return params["code"]


def exchange(app: Flask, req: AuthRequest, code: str, cert: Cert | None, **overrides: str | None) -> Any:
    form: dict[str, str | None] = {"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": req.redirect_uri, "client_id": req.client_id,
                                   "code_verifier": req.verifier}
    form.update(overrides)
    return app.test_client().post("/oidc/token", data={k: v for k, v in form.items() if v is not None},
                                  headers=cert.header if cert else {})


def userinfo(app: Flask, token: str, cert: Cert | None) -> Any:
    headers = {"Authorization": f"Bearer {token}", **(cert.header if cert else {})}
    return app.test_client().get("/oidc/userinfo", headers=headers)
