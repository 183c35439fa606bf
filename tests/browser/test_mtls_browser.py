"""Biometric login over mutual TLS in a real Chromium: the operator's own certificate, or no login.

The server speaks HTTPS and asks for a client certificate (optional at the TLS layer, as `make run`);
each browser context carries the client certificate Playwright is given, plus a CDP virtual
authenticator. Biometric operators need both the fingerprint and their own operator certificate,
on the login and on every later request.
"""

from __future__ import annotations

import itertools
import re
import shutil
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from werkzeug.serving import make_server

import db
from ca.authority import CaSettings
from ca.models import Certificate, RevocationReason
from ca.revocation import revoke
from operators.audit import SYSTEM_ACTOR
from operators.models import AuthMethod, Operator, Role
from operators.operator_certs import issue_operator_certificate
from tests.bio.helpers import OPERATOR_PASSWORD, add_operator
from tests.browser.conftest import _free_port
from tests.conftest import initialise, make_app
from tests.helpers import make_csr

sync_api = pytest.importorskip("playwright.sync_api")
_ids = itertools.count(1)


@dataclass
class TlsServer:
    app: Any
    url: str
    tmp: Path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[TlsServer]:
    base = tmp_path_factory.mktemp("browser-mtls")
    shutil.copy(sqlite_template, base / "opauth.db")
    port = _free_port()
    url = f"https://localhost:{port}"
    app = make_app(base / "instance", f"sqlite:///{base / 'opauth.db'}", PUBLIC_BASE_URL=url,
                   SESSION_COOKIE_SECURE=True, BIOMETRIC_CLIENT_CERT_REQUIRED=True,
                   ARGON2_MEMORY_KIB=8192, ARGON2_TIME_COST=2, ARGON2_PARALLELISM=1)
    initialise(app)
    tls = base / "instance" / "tls"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "server.pem", tls / "server.key", password=app.config["KEY_PASSPHRASE"])
    context.load_verify_locations(cafile=tls / "ca-bundle.pem")
    context.verify_mode = ssl.CERT_OPTIONAL  # as gunicorn in `make run`: password operators have none
    server = make_server("127.0.0.1", port, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield TlsServer(app=app, url=url, tmp=base)
    server.shutdown()
    thread.join(timeout=10)
    app.extensions["opauth.engine"].dispose()


@dataclass(frozen=True)
class OperatorIdentity:
    operator_id: str
    cert: Path
    key: Path
    serial: str


def _biometric_operator(server: TlsServer) -> OperatorIdentity:
    """A biometric operator with an operator certificate issued from a key the 'terminal' holds."""
    operator_id = f"BIO{next(_ids):03d}"
    add_operator(server.app, operator_id, auth_method=AuthMethod.BIOMETRIC, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = server.tmp / f"{operator_id}.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    with server.app.app_context():
        session = db.get_session()
        operator = session.scalar(select(Operator).where(Operator.operator_id == operator_id))
        assert operator is not None
        issued = issue_operator_certificate(session, settings=CaSettings.from_config(server.app.config),
                                            operator=operator, actor=SYSTEM_ACTOR, csr_bytes=make_csr(key))
        session.commit()
        cert_path = server.tmp / f"{operator_id}.pem"
        from cryptography import x509

        cert_path.write_bytes(x509.load_der_x509_certificate(issued.certificate.der).public_bytes(
            serialization.Encoding.PEM))
        return OperatorIdentity(operator_id, cert_path, key_path, issued.certificate.serial)


@contextmanager
def _terminal(browser: Any, server: TlsServer, identity: OperatorIdentity | None) -> Iterator[Any]:
    """A page in a browser context (optionally with a client certificate) with a virtual authenticator."""
    options: dict[str, Any] = {"base_url": server.url, "ignore_https_errors": True}
    if identity is not None:
        options["client_certificates"] = [{"origin": server.url, "certPath": str(identity.cert),
                                           "keyPath": str(identity.key)}]
    context = browser.new_context(**options)
    context.set_default_timeout(15000)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    try:
        yield page
    finally:
        context.close()


def _enrol(page: Any, server: TlsServer, operator_id: str) -> None:
    """A manager logs in by password at this terminal and enrols the operator's fingerprint."""
    admin = f"ADM{next(_ids):03d}"
    add_operator(server.app, admin, role=Role.SYSTEM_ADMIN)
    page.goto("/login")
    page.select_option("#tenant", "system")
    page.fill("#operator_id", admin)
    page.fill("#password", OPERATOR_PASSWORD)
    page.click("#login")
    page.wait_for_url(re.compile(r"/top$"))
    page.goto(f"/bio/manage/system/{operator_id}")
    page.fill("#nickname", "窓口端末")
    page.click("#bio-register")
    page.wait_for_selector("#credentials")
    page.click("header form button[type=submit]")
    page.wait_for_url(re.compile(r"/login$"))


def _bio_login(page: Any, operator_id: str) -> None:
    page.goto("/bio/login")
    page.fill("#operator_id", operator_id)
    page.click("#bio-login")


def test_biometric_login_with_the_operators_own_certificate(browser: Any, tls_server: TlsServer) -> None:
    me = _biometric_operator(tls_server)
    with _terminal(browser, tls_server, me) as page:
        _enrol(page, tls_server, me.operator_id)
        _bio_login(page, me.operator_id)
        page.wait_for_url(re.compile(r"/top$"))
        assert "操作者用トップ画面" in page.content()
        assert page.goto("/top").url.endswith("/top")  # later requests of the session go on


def test_biometric_login_without_a_certificate_is_refused(browser: Any, tls_server: TlsServer) -> None:
    me = _biometric_operator(tls_server)
    with _terminal(browser, tls_server, None) as page:
        _enrol(page, tls_server, me.operator_id)
        _bio_login(page, me.operator_id)
        page.wait_for_selector("#webauthn-status.error")
        assert "クライアント証明書" in page.locator("#webauthn-status").inner_text()
        assert "/login" in page.goto("/top").url


def test_biometric_login_with_another_operators_certificate_is_refused(browser: Any, tls_server: TlsServer) -> None:
    me, other = _biometric_operator(tls_server), _biometric_operator(tls_server)
    with _terminal(browser, tls_server, other) as page:
        _enrol(page, tls_server, me.operator_id)
        _bio_login(page, me.operator_id)
        page.wait_for_selector("#webauthn-status.error")
        assert "別の操作者" in page.locator("#webauthn-status").inner_text()
        assert "/login" in page.goto("/top").url


def test_revoking_the_certificate_ends_the_session(browser: Any, tls_server: TlsServer) -> None:
    me = _biometric_operator(tls_server)
    with _terminal(browser, tls_server, me) as page:
        _enrol(page, tls_server, me.operator_id)
        _bio_login(page, me.operator_id)
        page.wait_for_url(re.compile(r"/top$"))
        with tls_server.app.app_context():
            session = db.get_session()
            cert = session.scalar(select(Certificate).where(Certificate.serial == me.serial))
            assert cert is not None
            revoke(session, certificate=cert, reason=RevocationReason.KEY_COMPROMISE, actor=SYSTEM_ACTOR)
            session.commit()
        assert "/login" in page.goto("/top").url  # the very next request
