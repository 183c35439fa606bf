"""Mutual TLS with real clients: curl against gunicorn terminating TLS, and against nginx in front.

A business server reaches the machine API only with a valid, unrevoked SSL communication certificate
bound to a registered business system; everything else is refused (and a revocation takes effect at
once, without a restart).
"""

from __future__ import annotations

import datetime
import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from config.serving import NginxSite
from tests.helpers import BUSINESS, make_csr, run
from tests.servers import BIN, ROOT, flask_cli, free_port, gunicorn, instance_env, nginx, nginx_available

API = "/api/v1/business/self"


@dataclass(frozen=True)
class Client:
    cert: Path
    key: Path
    serial: str


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key


def _ssl_client(env: dict[str, str], tmp: Path, name: str, *binding: str) -> Client:
    """An SSL communication certificate issued through the real CLI from our own CSR."""
    key_path = tmp / f"{name}.key"
    csr = tmp / f"{name}.csr"
    csr.write_bytes(make_csr(_key(key_path)))
    cert = tmp / f"{name}.pem"
    # A certificate bound to a business system names only that system's registered hosts.
    host = "www1.city.itozaki.nagano.jp" if "--business-id" in binding else f"{name}.city.example.jp"
    result = flask_cli(env, "ssl", "issue", "--tenant", "system", *binding, "--host", host,
                       "--csr", csr, "--out", cert)
    assert result.returncode == 0, result.stderr
    return Client(cert=cert, key=key_path, serial=result.stderr.split("issued serial ")[1].split()[0])


def _foreign_client(tmp: Path) -> Client:
    """A clientAuth certificate from a CA opauth has never heard of."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Foreign CA")])
    now = datetime.datetime.now(datetime.UTC)
    key = _key(tmp / "foreign.key")
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp / "foreign.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Client(cert=tmp / "foreign.pem", key=tmp / "foreign.key", serial="")


@dataclass(frozen=True)
class Deployment:
    env: dict[str, str]
    instance: Path
    base: str
    business: Client
    terminal: Client
    foreign: Client

    def curl(self, client: Client | None = None, *extra: str) -> tuple[int, int, dict[str, object]]:
        """(curl exit code, HTTP status, JSON body) of GET the machine API."""
        args = ["curl", "-sS", "--cacert", str(self.instance / "tls" / "ca-bundle.pem"), "-o", "-",
                "-w", "\n%{http_code}"]
        if client is not None:
            args += ["--cert", str(client.cert), "--key", str(client.key)]
        result = run(*args, *extra, self.base + API)
        body, _, status = result.stdout.rpartition("\n")
        try:
            parsed = json.loads(body) if body.strip().startswith("{") else {}
        except ValueError:
            parsed = {}
        return result.returncode, int(status or 0), parsed


def _prepare(tmp: Path, **env_extra: str) -> tuple[dict[str, str], Path, Client, Client, Client]:
    instance = tmp / "instance"
    env = instance_env(instance, **env_extra)
    assert flask_cli(env, "init").returncode == 0
    csr = tmp / "server.csr"
    csr.write_bytes(make_csr())
    args: list[str | Path] = ["cert", "issue-business-server", "--csr", csr, "--out", tmp / "server.pem"]
    for field, value in BUSINESS.items():
        args += [f"--{field.replace('_', '-')}", value]
    assert flask_cli(env, *args).returncode == 0
    business = _ssl_client(env, tmp, "bizclient", "--business-id", "05")
    terminal = _ssl_client(env, tmp, "terminal01", "--terminal", "terminal01")
    return env, instance, business, terminal, _foreign_client(tmp)


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """gunicorn terminating TLS itself (the `make run` deployment)."""
    tmp = tmp_path_factory.mktemp("mtls-direct")
    env, instance, business, terminal, foreign = _prepare(tmp)
    port = free_port()
    with gunicorn(env, port):
        yield Deployment(env, instance, f"https://localhost:{port}", business, terminal, foreign)


def test_valid_business_certificate_is_accepted(direct: Deployment) -> None:
    code, status, body = direct.curl(direct.business)
    assert (code, status) == (0, 200), body
    assert body["business_id"] == "05" and body["certificate_serial"] == direct.business.serial


def test_no_certificate_is_refused_with_a_clear_message(direct: Deployment) -> None:
    code, status, body = direct.curl(None)
    assert code == 0 and status == 403
    assert body["error"] == "client_certificate_refused" and "必要です" in str(body["message"])


def test_certificate_not_bound_to_a_business_system_is_refused(direct: Deployment) -> None:
    _code, status, body = direct.curl(direct.terminal)
    assert status == 403 and "業務システム" in str(body["message"])


def test_foreign_certificate_is_refused(direct: Deployment) -> None:
    code, status, _ = direct.curl(direct.foreign)
    # gunicorn's TLS layer rejects the chain (TLS 1.3: an alert after the handshake, curl exit 56).
    assert code != 0 or status == 403


def test_spoofed_certificate_header_is_ignored_without_a_trusted_proxy(direct: Deployment) -> None:
    header = urllib.parse.quote(direct.business.cert.read_text())
    code, status, body = direct.curl(None, "-H", f"X-SSL-Client-Cert: {header}")
    assert code == 0 and status == 403 and "必要です" in str(body["message"])


def test_revocation_takes_effect_at_once(direct: Deployment, tmp_path: Path) -> None:
    victim = _ssl_client(direct.env, tmp_path, "victim", "--business-id", "05")
    assert direct.curl(victim)[1] == 200
    result = flask_cli(direct.env, "cert", "revoke", victim.serial, "--reason", "keyCompromise")
    assert result.returncode == 0, result.stderr
    _code, status, body = direct.curl(victim)  # no restart, no wait
    assert status == 403 and "失効しています" in str(body["message"])


def test_expired_certificate_is_refused(direct: Deployment, tmp_path: Path) -> None:
    from app import create_app
    from ca.authority import CaSettings, current_issuer
    from ca.issuance import issue_certificate
    from ca.models import CertificateProfile
    from db import get_session
    from operators.business_systems import find_by_business_id

    app = create_app({"INSTANCE_DIR": str(direct.instance)})
    key = _key(tmp_path / "old.key")
    with app.app_context():
        session = get_session()
        system = find_by_business_id(session, "05")
        assert system is not None
        row = issue_certificate(session, issuer=current_issuer(session, CaSettings.from_config(app.config)),
                                profile=CertificateProfile.TLS,
                                subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example.jp")]),
                                public_key=key.public_key(), sans=[x509.DNSName("old.example.jp")], days=0,
                                issued_by="test", business_system_id=system.id)
        session.commit()
        (tmp_path / "old.pem").write_bytes(x509.load_der_x509_certificate(row.der).public_bytes(
            serialization.Encoding.PEM))
    app.extensions["opauth.engine"].dispose()
    code, status, _ = direct.curl(Client(tmp_path / "old.pem", tmp_path / "old.key", row.serial))
    assert code != 0 or status == 403


def test_ssl_certificate_cli_lists_deletes_and_reissues(direct: Deployment, tmp_path: Path) -> None:
    client = _ssl_client(direct.env, tmp_path, "rotating", "--business-id", "05")
    listing = flask_cli(direct.env, "ssl", "list").stdout
    assert client.serial in listing
    p12 = tmp_path / "new.p12"
    result = flask_cli(direct.env, "ssl", "reissue", client.serial, "--p12-out", p12, "--out", tmp_path / "n.pem")
    assert result.returncode == 0, result.stderr
    password = result.stderr.rsplit("(shown once): ", 1)[1].strip()
    opened = run("openssl", "pkcs12", "-in", p12, "-nokeys", "-passin", f"pass:{password}")
    assert opened.returncode == 0 and "BEGIN CERTIFICATE" in opened.stdout, opened.stderr
    assert direct.curl(client)[1] == 403  # superseded
    new_serial = result.stderr.split("issued serial ")[1].split()[0]
    assert flask_cli(direct.env, "ssl", "delete", new_serial).returncode == 0
    assert new_serial not in flask_cli(direct.env, "ssl", "list").stdout
    assert new_serial in flask_cli(direct.env, "ssl", "list", "--all").stdout
    assert flask_cli(direct.env, "ssl", "delete", new_serial).returncode == 2  # twice: clear refusal


# --- nginx in front ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """nginx (optional_no_ca) in front of plain-HTTP gunicorn on TCP loopback: the explicitly configured,
    weaker TRUSTED_PROXIES mode (`make run` uses a Unix socket instead, tests/test_serving.py)."""
    if nginx_available() is None:
        pytest.fail("nginx is not installed: scripts/system-deps.sh installs it")
    tmp = tmp_path_factory.mktemp("mtls-nginx")
    env, instance, business, terminal, foreign = _prepare(
        tmp, OPAUTH_SERVE_TLS="false", OPAUTH_TRUSTED_PROXIES="127.0.0.1")
    app_port, tls_port = free_port(), free_port()
    with gunicorn(env, app_port), nginx(NginxSite(
            prefix=tmp / "nginx", https_listen=f"127.0.0.1:{tls_port}", pki_http_listen="",
            server_cert=instance / "tls" / "server.pem", server_key=instance / "tls" / "server.key",
            server_key_password_file=instance / "keys" / "passphrase", client_ca=instance / "tls" / "ca-bundle.pem",
            upstream=f"127.0.0.1:{app_port}")):
        yield Deployment(env, instance, f"https://localhost:{tls_port}", business, terminal, foreign)


def test_nginx_forwards_a_valid_certificate(proxied: Deployment) -> None:
    code, status, body = proxied.curl(proxied.business)
    assert (code, status) == (0, 200), body
    assert body["business_id"] == "05"


def test_nginx_without_certificate_is_refused_by_the_app(proxied: Deployment) -> None:
    assert proxied.curl(None)[1] == 403


def test_nginx_foreign_certificate_reaches_the_app_and_gets_403(proxied: Deployment) -> None:
    code, status, body = proxied.curl(proxied.foreign)
    assert (code, status) == (0, 403), body  # an HTTP answer from the one enforcement point, not nginx's 400
    assert body["error"] == "client_certificate_refused"
    assert "このシステムが発行したものではありません" in str(body["message"])


def test_nginx_replaces_a_spoofed_header(proxied: Deployment) -> None:
    header = urllib.parse.quote(proxied.business.cert.read_text())
    _code, status, _ = proxied.curl(None, "-H", f"X-SSL-Client-Cert: {header}")
    assert status == 403


def test_nginx_revocation_takes_effect_at_once_without_reload(proxied: Deployment, tmp_path: Path) -> None:
    victim = _ssl_client(proxied.env, tmp_path, "victim2", "--business-id", "05")
    assert proxied.curl(victim)[1] == 200
    assert flask_cli(proxied.env, "cert", "revoke", victim.serial, "--reason", "keyCompromise").returncode == 0
    _code, status, body = proxied.curl(victim)  # nginx's CRL is stale; the app's check is not
    assert status == 403 and "失効しています" in str(body["message"])


# --- trusted proxies, in-process ------------------------------------------------------------------------------------

def _failed_login_source(app: object, remote: str, forwarded: str) -> str:
    from flask import Flask
    from sqlalchemy import select

    from db import get_session
    from kernel.audit import AuditEvent
    from tests.conftest import csrf_token

    assert isinstance(app, Flask)
    client = app.test_client()
    client.environ_base.update(REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"csrf_token": csrf_token(page), "tenant": "system", "operator_id": "admin",
                                "password": "wrong-password"})
    with app.app_context():
        event = get_session().scalars(select(AuditEvent).where(AuditEvent.action == "auth.login_failure")
                                      .order_by(AuditEvent.id.desc())).first()
        assert event is not None
        return event.source


def test_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(tmp_path: Path,
                                                                               sqlite_url: str) -> None:
    from tests.conftest import initialise, make_app

    app = make_app(tmp_path / "instance", sqlite_url, TRUSTED_PROXIES="127.0.0.1")
    initialise(app)
    assert _failed_login_source(app, "127.0.0.1", "203.0.113.7") == "203.0.113.7"
    assert _failed_login_source(app, "192.0.2.9", "203.0.113.7") == "192.0.2.9"  # not a proxy of ours
    assert _failed_login_source(app, "127.0.0.1", "not-an-address") == "127.0.0.1"
    app.extensions["opauth.engine"].dispose()


# --- the Unix socket is the only channel whose proxy headers count ---------------------------------------------------

def test_proxy_headers_count_over_the_app_socket_only_never_over_tcp(tmp_path: Path) -> None:
    """One gunicorn listening on the app socket and on TCP loopback, TRUSTED_PROXIES unset (the default):
    the same forwarded certificate is believed over the socket and ignored over TCP."""
    env, instance, business, _terminal, _foreign = _prepare(tmp_path)
    sock = instance / "run" / "app.sock"
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "--config", "config/gunicorn.conf.py", "--bind", f"unix:{sock}",
         "--bind", f"127.0.0.1:{port}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(env, OPAUTH_BIND=f"unix:{sock}", OPAUTH_SERVE_TLS="false", OPAUTH_WORKERS="1"))
    try:
        deadline = time.monotonic() + 60
        while run("curl", "-sS", "--unix-socket", sock, "http://localhost/pki/ca-bundle.pem").returncode != 0:
            assert time.monotonic() < deadline and proc.poll() is None, "gunicorn did not start"
            time.sleep(0.2)
        assert sock.stat().st_mode & 0o077 == 0 and sock.parent.stat().st_mode & 0o777 == 0o700
        header = f"X-SSL-Client-Cert: {urllib.parse.quote(business.cert.read_text())}"
        over_socket = run("curl", "-sS", "--unix-socket", sock, "-H", header, f"http://localhost{API}")
        assert json.loads(over_socket.stdout)["business_id"] == "05", over_socket.stdout
        over_tcp = run("curl", "-sS", "-H", header, f"http://127.0.0.1:{port}{API}")
        answer = json.loads(over_tcp.stdout)
        assert answer["error"] == "client_certificate_refused" and "必要です" in answer["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
