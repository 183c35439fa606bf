"""A real opauth (gunicorn over TLS) with the AP download module registered as business system 01,
and the module itself: served by its own gunicorn over TLS (where opauth delivers back-channel logouts)
and, on the same instance, in this process for the tests' requests.

Everything is created through the products' own paths: opauth's CLI (business system, tenants, joint use,
business login, SSL通信証明書, operators, 業務内ID permissions), opauth's login form in a scripted browser,
and the module's own forms.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from apdl import cardops, db
from apdl.app import create_app
from apdl.emulator.card import CardState
from apdl.emulator.stack import PcscStack
from apdl.models import OperationLog
from tests.helpers import SUBJECT, make_csr
from tests.oidc.browser import FormBrowser
from tests.servers import BIN, ROOT, _wait_for_port, flask_cli, free_port, instance_env

LOOPBACK = x509.Name([*list(SUBJECT)[:-1], x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
NEW_PASSWORD = "Operator-Secret-2026"
ADMIN_TENANT = "apdlcenter"
CHIYODA = "131016"  # 千代田区: the emulated card's default residence code
SAPPORO = "011002"
FULL = "ap.download ap.delete user.register"


@dataclass(frozen=True)
class Account:
    tenant: str
    operator_id: str
    permissions: str


ACCOUNTS = {
    "admin": Account(ADMIN_TENANT, "AD0001", "ap.manage"),
    "center": Account(ADMIN_TENANT, "AD0002", FULL),  # the admin tenant's own counter (loads for itself)
    "minami": Account("minamiedo", "OP0601", FULL + " ap.manage"),  # the holder's municipality (千代田区 code)
    "kita": Account("kitaedo", "OP0701", FULL),  # another municipality
    "kitamgr": Account("kitaedo", "OP0702", FULL + " ap.manage"),  # 北江戸市's service provider (即時停止)
    "reader": Account("minamiedo", "OP0602", "user.register"),  # no download or delete
    "leaver": Account("minamiedo", "OP0603", FULL),  # logs out of opauth in the back-channel test
    "chromium": Account("minamiedo", "OP0604", FULL),  # logs in with Chromium (its one-time password)
    "revoked": Account("minamiedo", "OP0605", FULL),  # revoked at opauth (操作者失効) in the back-channel test
    "counter": Account("minamiedo", "OP0607", FULL),  # logs out at a shared counter terminal (RP-initiated)
}


@dataclass
class Opauth:
    """The running provider and what the module needs from it."""

    base: str
    env: dict[str, str]
    ca: Path
    apdl_base: str
    client_cert: Path
    client_key: Path
    server_cert: Path
    server_key: Path
    passwords: dict[str, str] = field(default_factory=dict)
    browsers: dict[str, FormBrowser] = field(default_factory=dict)
    biometric_p12: Path | None = None  # BIO0606 of 南江戸市, a biometric operator (PKCS#12 from `operator register`)
    biometric_p12_password: str = ""
    manager_password: str = ""  # mgr01 of 南江戸市, the tenant manager who enrols BIO0606's fingerprint

    @property
    def issuer(self) -> str:
        return self.base + "/oidc"

    def cli(self, *args: str | Path) -> str:
        result = flask_cli(self.env, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key


@pytest.fixture(scope="session")
def opauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Opauth]:
    tmp = tmp_path_factory.mktemp("opauth-for-apdl")
    oport, aport = free_port(), free_port()
    base, apdl_base = f"https://localhost:{oport}", f"https://127.0.0.1:{aport}"
    # PKI_BASE_URL: the CRL distribution point in the certificates is this opauth itself (the module fetches
    # the CRL there to check a terminal's certificate), not the plain-HTTP listener `make run` adds.
    env = instance_env(tmp / "instance", OPAUTH_PUBLIC_BASE_URL=base, OPAUTH_PKI_BASE_URL=base,
                       OPAUTH_ARGON2_TIME_COST="1",
                       OPAUTH_ARGON2_MEMORY_KIB="8192", OPAUTH_ARGON2_PARALLELISM="1")
    world = Opauth(base=base, env=env, ca=tmp / "instance" / "tls" / "ca-bundle.pem", apdl_base=apdl_base,
                   client_cert=tmp / "client.pem", client_key=tmp / "client.key", server_cert=tmp / "server.pem",
                   server_key=tmp / "server.key")
    world.cli("init")
    (tmp / "server.csr").write_bytes(make_csr(_key(world.server_key), LOOPBACK))
    (tmp / "client.csr").write_bytes(make_csr(_key(world.client_key), LOOPBACK))
    (tmp / "operator.csr").write_bytes(make_csr(_key(tmp / "operator.key")))  # operator certificates: another key
    system = {"business-id": "01", "name": "カードAPダウンロード", "admin-org": "J-LIS",
              "top-url": f"{apdl_base}/", "operator-admin-url": f"{apdl_base}/aps",
              "personalize-url": f"{apdl_base}/residents", "phone": "03-1234-5678", "email": "apdl@example.jp"}
    args: list[str | Path] = ["cert", "issue-business-server", "--csr", tmp / "server.csr", "--format", "chain.pem",
                              "--out", world.server_cert]
    for name, value in system.items():
        args += [f"--{name}", value]
    world.cli(*args)
    for code, name, kind in ((ADMIN_TENANT, "カードAPセンター", "voluntary"), ("minamiedo", "南江戸市", "municipality"),
                             ("kitaedo", "北江戸市", "municipality")):
        world.cli("tenant", "create", "--code", code, "--name", name, "--kind", kind)
    world.cli("tenant", "joint-use", "01", ADMIN_TENANT, "minamiedo", "kitaedo")
    world.cli("oidc", "client", "set", "01", "--enable", "--redirect-uri", f"{apdl_base}/auth/callback",
              "--backchannel-logout-uri", f"{apdl_base}/backchannel-logout",
              "--post-logout-redirect-uri", f"{apdl_base}/")
    world.cli("ssl", "issue", "--tenant", "system", "--business-id", "01", "--host", "127.0.0.1",
              "--csr", tmp / "client.csr", "--out", world.client_cert)
    for label, account in ACCOUNTS.items():
        out = world.cli("operator", "register", "--tenant", account.tenant, "--operator-id", account.operator_id,
                        "--name", f"操作者 {label}", "--business-ids", "01", "--csr", tmp / "operator.csr")
        world.passwords[label] = out.split("shown once): ")[-1].strip()
        world.cli("operator", "in-business-id", "--tenant", account.tenant, "--business-id", "01",
                  "--operator-id", account.operator_id, "--id", f"U-{account.operator_id}",
                  "--permissions", account.permissions)
    manager = world.cli("operator", "register", "--tenant", "minamiedo", "--operator-id", "mgr01", "--name",
                        "南江戸市 運用管理", "--role", "tenant_manager", "--p12-out", tmp / "mgr01.p12")
    world.manager_password = manager.split("login password (shown once): ")[-1].strip()
    result = flask_cli(env, "operator", "register", "--tenant", "minamiedo", "--operator-id", "BIO0606", "--name",
                       "生体 花子", "--auth-method", "biometric", "--business-ids", "01", "--p12-out",
                       tmp / "BIO0606.p12")
    assert result.returncode == 0, result.stderr
    world.biometric_p12 = tmp / "BIO0606.p12"
    world.biometric_p12_password = re.search(r"its password \(shown once\): (\S+)",
                                             result.stdout + result.stderr).group(1)  # type: ignore[union-attr]
    world.cli("operator", "in-business-id", "--tenant", "minamiedo", "--business-id", "01", "--operator-id",
              "BIO0606", "--id", "U-BIO0606", "--permissions", FULL)
    # opauth's own gunicorn settings; its log goes to a file, since a pipe nobody reads fills up over a session
    # of requests and then blocks the server.
    log = (tmp / "opauth.log").open("w")
    server_env = dict(env, OPAUTH_BIND=f"127.0.0.1:{oport}", OPAUTH_WORKERS="1")
    proc = subprocess.Popen([str(BIN / "gunicorn"), "--config", "config/gunicorn.conf.py"], cwd=ROOT,
                            env=server_env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(proc, oport, "opauth gunicorn", tmp / "opauth.log")
        yield world
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def apdl_config(opauth: Opauth, instance: Path, reader: str = "Virtual PCD 00 00") -> dict[str, Any]:
    return {"INSTANCE_DIR": str(instance), "OPAUTH_ISSUER": opauth.issuer, "CLIENT_ID": "biz-01",
            "PUBLIC_BASE_URL": opauth.apdl_base, "CLIENT_CERT": str(opauth.client_cert),
            "CLIENT_KEY": str(opauth.client_key), "CA_BUNDLE": str(opauth.ca), "ADMIN_TENANT": ADMIN_TENANT,
            "READER": reader, "SESSION_COOKIE_SECURE": False}


@pytest.fixture
def apdl_app(opauth: Opauth, tmp_path: Path) -> Iterator[Flask]:
    """A fresh module instance (its own database, migrated) in this process."""
    app = create_app(apdl_config(opauth, tmp_path / "apdl"))
    db.upgrade(app.config["DATABASE_URL"])
    yield app
    app.extensions[db.ENGINE_KEY].dispose()


def issued_card(app: Flask, **fields: Any) -> CardState:
    """A fresh card issued with SCP03 keys diversified from the module's master keys (as the card issuer
    would personalise it: the card holds its own keys only)."""
    return CardState.issued(cardops.card_keys(app.config), **fields)


@pytest.fixture
def card_stack(card_stack: PcscStack, apdl_app: Flask) -> PcscStack:
    """The shared stack with a fresh, empty card that holds the module's SCP03 keys."""
    card_stack.card.load_state(issued_card(apdl_app))
    return card_stack


@contextmanager
def served_apdl(opauth: Opauth, app: Flask, **settings: Any) -> Iterator[subprocess.Popen[str]]:
    """The module's own gunicorn (TLS, the server certificate opauth issued) on ``app``'s instance; ``settings``
    (e.g. ``PAIRING_CODE_SECONDS=6``) as its APDL_* environment.

    It inherits this process's PCSCLITE_CSOCK_NAME, so it reaches the private pcscd when one runs.
    """
    port = int(opauth.apdl_base.rsplit(":", 1)[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APDL_", "OPAUTH_"))}
    env.update({f"APDL_{k}": str(v) for k, v in apdl_config(opauth, Path(app.config["INSTANCE_DIR"])).items()})
    env.update(APDL_BIND=f"127.0.0.1:{port}", APDL_WORKERS="1", APDL_TLS_CERT=str(opauth.server_cert),
               APDL_TLS_KEY=str(opauth.server_key), APDL_SECRET_KEY=app.config["SECRET_KEY"])
    env.update({f"APDL_{k}": str(v) for k, v in settings.items()})
    log_path = Path(app.config["INSTANCE_DIR"]) / "gunicorn.log"
    log = log_path.open("a")
    proc = subprocess.Popen([str(BIN / "gunicorn"), "--config", "python:apdl.gunicorn_conf"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(proc, port, "apdl gunicorn", log_path)
        yield proc
    finally:
        proc.terminate()  # gunicorn's graceful stop waits up to 30 s for its workers; a loaded machine takes longer
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def browser_for(opauth: Opauth, label: str) -> FormBrowser:
    """The operator's browser at opauth, logged in (one-time password changed on first use)."""
    if label not in opauth.browsers:
        browser = FormBrowser(opauth.ca)
        account = ACCOUNTS[label]
        status, location, _ = browser.post_form(opauth.base + "/login", {
            "tenant": account.tenant, "operator_id": account.operator_id, "password": opauth.passwords[label]})
        assert status == 302, (status, location)
        if location.endswith("/password"):
            status, location, _ = browser.post_form(opauth.base + "/password", {
                "current_password": opauth.passwords[label], "new_password": NEW_PASSWORD,
                "confirm_password": NEW_PASSWORD})
            assert status == 302
            opauth.passwords[label] = NEW_PASSWORD
        opauth.browsers[label] = browser
    return opauth.browsers[label]


def login(opauth: Opauth, app: Flask, label: str) -> FlaskClient:
    """An operator logged in at the module: /login → opauth's authorize (session there) → /auth/callback."""
    client = app.test_client()
    start = client.get("/login")
    assert start.status_code == 302, start.get_data(as_text=True)
    authorize = start.headers["Location"]
    assert authorize.startswith(opauth.issuer + "/authorize?"), authorize
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize).query))
    assert query["code_challenge_method"] == "S256" and query["nonce"] and query["state"], query
    status, callback, page = browser_for(opauth, label).go(authorize)
    assert status == 302 and callback.startswith(opauth.apdl_base + "/auth/callback?"), (status, callback, page[:300])
    done = client.get(callback.removeprefix(opauth.apdl_base))
    assert done.status_code == 302 and done.headers["Location"] == "/", _last_log(app)
    return client


def _last_log(app: Flask) -> dict[str, Any]:
    with app.app_context():
        entry = db.get_session().scalars(select(OperationLog).order_by(OperationLog.id.desc())).first()
        return {} if entry is None else {"action": entry.action, **entry.detail}


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def submit(client: FlaskClient, page_url: str, action: str, fields: dict[str, Any]) -> Any:
    """Open ``page_url`` and post ``fields`` (lists allowed) to ``action`` with the page's CSRF token."""
    token = csrf(client.get(page_url).get_data(as_text=True))
    return client.post(action, data={"csrf_token": token, **fields})


