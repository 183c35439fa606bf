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
from sqlalchemy import select
from werkzeug.serving import make_server

import db
from ca.models import Certificate, RevocationReason
from ca.revocation import revoke
from kernel.audit import SYSTEM_ACTOR, AuditEvent
from operators.models import OperatorCertificate, Role
from tests.bio.helpers import OPERATOR_PASSWORD, add_operator, register_biometric
from tests.browser.conftest import _free_port
from tests.browser.terminal import terminal
from tests.conftest import initialise, make_app

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
    p12: Path
    p12_password: str
    serial: str


def _biometric_operator(server: TlsServer) -> OperatorIdentity:
    """A biometric operator registered with `flask operator register`, and the PKCS#12 it wrote."""
    registered = register_biometric(server.app, f"BIO{next(_ids):03d}")
    with server.app.app_context():
        serial = db.get_session().scalar(
            select(Certificate.serial).join(OperatorCertificate, OperatorCertificate.certificate_id == Certificate.id)
            .where(OperatorCertificate.operator_id == registered.pk))
    assert serial is not None
    return OperatorIdentity(registered.operator_id, registered.p12, registered.p12_password, serial)


@contextmanager
def _terminal(browser: Any, server: TlsServer, identity: OperatorIdentity | None) -> Iterator[Any]:
    """A page in a browser context (optionally with a client certificate) with a virtual authenticator."""
    certificate = None if identity is None else (server.url, identity.p12, identity.p12_password)
    with terminal(browser, base_url=server.url, certificate=certificate, timeout_ms=15000) as page:
        yield page


def _login_audit(server: TlsServer, operator_id: str) -> list[tuple[str, str]]:
    """(action, reason) of the login attempts audited for the operator."""
    with server.app.app_context():
        rows = db.get_session().scalars(select(AuditEvent).where(
            AuditEvent.target == f"operator:system/{operator_id}", AuditEvent.action.like("auth.%"))
            .order_by(AuditEvent.id))
        return [(row.action, str((row.detail or {}).get("reason", ""))) for row in rows]


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
    # a refused login is a failure (counted towards the lock), never a success followed by a refusal
    assert _login_audit(tls_server, me.operator_id) == [("auth.login_failure", "client_certificate")]


def test_biometric_login_with_another_operators_certificate_is_refused(browser: Any, tls_server: TlsServer) -> None:
    me, other = _biometric_operator(tls_server), _biometric_operator(tls_server)
    with _terminal(browser, tls_server, other) as page:
        _enrol(page, tls_server, me.operator_id)
        _bio_login(page, me.operator_id)
        page.wait_for_selector("#webauthn-status.error")
        assert "別の操作者" in page.locator("#webauthn-status").inner_text()
        assert "/login" in page.goto("/top").url
    assert _login_audit(tls_server, me.operator_id) == [("auth.login_failure", "client_certificate")]


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
