"""Business login in a real Chromium for a BIOMETRIC operator, against gunicorn over mutual TLS.

The installation comes from the CLI (business system 05 from its CSR, 南江戸市 with joint use, business
login with its redirect URI, the system's SSL通信証明書, a tenant manager and a biometric operator whose
PKCS#12 `operator register` writes). At the operator's terminal (that PKCS#12 as TLS client certificate,
a CDP virtual authenticator) the manager enrols the fingerprint; then the business system's authorization
request sends the operator through opauth's biometric login and back to its redirect URI, served by a small
HTTPS server on 127.0.0.1 (the system's registered host) with the server certificate opauth issued for it
(Playwright's client-certificate proxy resolves names itself, so the host must really resolve). The business
system exchanges the code presenting its SSL通信証明書 and reads amr/acr and the
thumbprint of the operator certificate the login used.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import ssl
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.browser.terminal import enrol_fingerprint, first_password_login, terminal
from tests.helpers import BUSINESS, SUBJECT, make_csr
from tests.oidc.conftest import AuthRequest, redirect_params
from tests.servers import flask_cli, free_port, gunicorn, instance_env

sync_api = pytest.importorskip("playwright.sync_api")

LOOPBACK = x509.Name([*(a for a in SUBJECT if a.oid != x509.NameOID.COMMON_NAME),
                      x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")])
MANAGER_PASSWORD = "Kawasemi-Hotaru-Chosen-2026"


@dataclass(frozen=True)
class Site:
    url: str
    redirect: str
    landed: list[str]
    ca: Path
    client_cert: Path
    client_key: Path
    manager_password: str
    p12: Path
    p12_password: str


def _cli(env: dict[str, str], *args: str | Path) -> str:
    result = flask_cli(env, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout + result.stderr


def _shown_once(output: str, what: str) -> str:
    found = re.search(rf"{what} \(shown once\): (\S+)", output)
    assert found, output
    return found.group(1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("oidc-biometric")
    port = free_port()
    url = f"https://localhost:{port}"
    env = instance_env(tmp / "instance", OPAUTH_PUBLIC_BASE_URL=url, OPAUTH_BIOMETRIC_CLIENT_CERT_REQUIRED="true",
                       OPAUTH_ARGON2_MEMORY_KIB="8192", OPAUTH_ARGON2_TIME_COST="1", OPAUTH_ARGON2_PARALLELISM="1")
    _cli(env, "init")
    rp = f"https://127.0.0.1:{free_port()}"
    redirect = f"{rp}/oidc/callback"
    server_key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp / "server.csr").write_bytes(make_csr(server_key, LOOPBACK))
    args: list[str | Path] = ["cert", "issue-business-server", "--csr", tmp / "server.csr", "--format", "chain.pem",
                              "--out", tmp / "server.pem"]
    system = dict(BUSINESS, top_url=f"{rp}/top", operator_admin_url=f"{rp}/admin", personalize_url=f"{rp}/perso")
    for name, value in system.items():
        args += [f"--{name.replace('_', '-')}", value]
    _cli(env, *args)
    _cli(env, "tenant", "create", "--code", "minamiedo", "--name", "南江戸市")
    _cli(env, "tenant", "joint-use", "05", "minamiedo")
    _cli(env, "oidc", "client", "set", "05", "--enable", "--redirect-uri", redirect)
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "client.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (tmp / "client.csr").write_bytes(make_csr(key, LOOPBACK))
    _cli(env, "ssl", "issue", "--tenant", "system", "--business-id", "05", "--host", "127.0.0.1",
         "--csr", tmp / "client.csr", "--out", tmp / "client.pem")
    manager = _cli(env, "operator", "register", "--tenant", "minamiedo", "--operator-id", "mgrA", "--name",
                   "南江戸市 運用管理", "--role", "tenant_manager", "--p12-out", tmp / "mgrA.p12")
    operator = _cli(env, "operator", "register", "--tenant", "minamiedo", "--operator-id", "BIO0601", "--name",
                    "生体 太郎", "--auth-method", "biometric", "--business-ids", "05", "--p12-out",
                    tmp / "BIO0601.p12")
    landed: list[str] = []

    class BusinessSystem(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            landed.append(rp + self.path)
            body = "<h1>業務システム</h1>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(rp.rsplit(":", 1)[1])), BusinessSystem)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp / "server.pem", tmp / "server.key")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with gunicorn(env, port):
            yield Site(url=url, redirect=redirect, landed=landed, ca=tmp / "instance" / "tls" / "ca-bundle.pem",
                       client_cert=tmp / "client.pem", client_key=tmp / "client.key",
                       manager_password=_shown_once(manager, "one-time login password"),
                       p12=tmp / "BIO0601.p12", p12_password=_shown_once(operator, "its password"))
    finally:
        server.shutdown()
        server.server_close()


def _enrol(page: Any, site: Site) -> None:
    """The tenant manager, at the operator's terminal, logs in by password and enrols the fingerprint."""
    first_password_login(page, "", "minamiedo", "mgrA", site.manager_password, MANAGER_PASSWORD)
    enrol_fingerprint(page, "", "minamiedo", "BIO0601")


def _token_request(site: Site, req: AuthRequest, code: str) -> dict[str, Any]:
    """The business system's token request over mutual TLS with its SSL通信証明書 (tls_client_auth)."""
    context = ssl.create_default_context(cafile=str(site.ca))
    context.load_cert_chain(site.client_cert, site.client_key)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": req.redirect_uri,
            "client_id": req.client_id, "code_verifier": req.verifier}
    request = urllib.request.Request(site.url + "/oidc/token", data=urllib.parse.urlencode(form).encode())
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
    with urllib.request.urlopen(site.url + "/oidc/jwks.json", context=context, timeout=30) as response:
        keys = KeySet.import_key_set(json.loads(response.read()))
    return dict(jwt.decode(body["id_token"], keys, algorithms=["ES256"]).claims)


def test_biometric_operator_signs_in_to_a_business_system_in_chromium(browser: Any, site: Site) -> None:
    with terminal(browser, base_url=site.url, certificate=(site.url, site.p12, site.p12_password)) as page:
        _enrol(page, site)
        req = AuthRequest("05", redirect=site.redirect)
        page.goto(req.url())
        assert page.url.endswith("/login")  # no session: the business system's request waits for the login
        page.goto("/bio/login")
        page.select_option("#tenant", "minamiedo")
        page.fill("#operator_id", "BIO0601")
        page.click("#bio-login")
        page.wait_for_url(site.redirect + "?**")
        assert "業務システム" in page.content()
    callbacks = [url for url in site.landed if url.startswith(site.redirect + "?")]  # not Chromium's favicon
    assert len(callbacks) == 1, site.landed
    params = redirect_params(callbacks[0])
    assert params["state"] == req.state and params["iss"] == site.url + "/oidc"
    claims = _token_request(site, req, params["code"])
    assert claims["amr"] == ["hwk", "user"] and claims["acr"] == "urn:opauth:acr:biometric"
    assert claims["name"] == "生体 太郎" and claims["nonce"] == req.nonce
    _key, certificate, _chain = pkcs12.load_key_and_certificates(site.p12.read_bytes(), site.p12_password.encode())
    assert certificate is not None
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
    assert claims["https://opauth/op_cert#S256"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
