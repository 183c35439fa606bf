"""opauth's own TLS certificate: the public host, SERVER_NAMES and loopback; re-issued before it expires."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from flask import Flask
from sqlalchemy import select

from bootstrap import ensure_tls_certificate
from ca.authority import CaSettings
from ca.models import Certificate
from config.serving import tls_paths
from db import get_session
from tests.conftest import initialise, make_app
from tests.helpers import run


def _server_cert(instance: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(tls_paths(instance)["cert"].read_bytes())[0]


def _names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))}


def _ensure(app: Flask) -> bool:
    with app.app_context():
        return ensure_tls_certificate(get_session(), CaSettings.from_config(app.config))


def test_certificate_covers_the_public_host_and_the_listed_names(tmp_path: Path, sqlite_url: str) -> None:
    instance = tmp_path / "instance"
    app = make_app(instance, sqlite_url, PUBLIC_BASE_URL="https://opauth.city.example.jp",
               SERVER_NAMES="opauth-2.city.example.jp, 192.0.2.10")
    initialise(app)
    cert = _server_cert(instance)
    assert _names(cert) == {"opauth.city.example.jp", "opauth-2.city.example.jp", "192.0.2.10",
                            "localhost", "127.0.0.1", "::1"}
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "opauth.city.example.jp"
    tls = tls_paths(instance)
    for host in ("opauth.city.example.jp", "opauth-2.city.example.jp"):
        checked = run("openssl", "verify", "-CAfile", tls["ca"], "-untrusted", tls["cert"], "-verify_hostname", host,
                      tls["cert"])
        assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = run("openssl", "verify", "-CAfile", tls["ca"], "-untrusted", tls["cert"], "-verify_ip", "192.0.2.10",
                  tls["cert"])
    assert checked.returncode == 0
    assert _ensure(app) is False  # fresh and naming exactly what is configured: kept
    app.extensions["opauth.engine"].dispose()


def test_a_changed_name_list_reissues_the_certificate(tmp_path: Path, sqlite_url: str) -> None:
    instance = tmp_path / "instance"
    app = make_app(instance, sqlite_url)
    initialise(app)
    first = _server_cert(instance)
    assert _names(first) == {"localhost", "127.0.0.1", "::1"}
    # The public URL is kept with the instance (環境基本設定); it takes effect at the next start.
    changed = app.test_cli_runner().invoke(args=["settings", "set", "PUBLIC_BASE_URL",
                                                 "https://opauth.example.jp:8443", "--yes"])
    assert changed.exit_code == 0, changed.output
    app.extensions["opauth.engine"].dispose()

    moved = make_app(instance, sqlite_url, SERVER_NAMES="[2001:db8::1]")
    assert _ensure(moved) is True
    second = _server_cert(instance)
    assert _names(second) == {"opauth.example.jp", "2001:db8::1", "localhost", "127.0.0.1", "::1"}
    assert second.public_key() != first.public_key()  # a new key, too
    with moved.app_context():
        row = get_session().scalar(select(Certificate).where(Certificate.serial == format(second.serial_number, "x")))
        old = get_session().scalar(select(Certificate).where(Certificate.serial == format(first.serial_number, "x")))
        assert row is not None and old is not None and row.replaces_id == old.id
    assert _ensure(moved) is False
    moved.extensions["opauth.engine"].dispose()


def test_certificate_is_renewed_when_fewer_than_the_renewal_days_remain(tmp_path: Path, sqlite_url: str) -> None:
    instance = tmp_path / "instance"
    app = make_app(instance, sqlite_url)
    initialise(app)
    first = _server_cert(instance)
    app.extensions["opauth.engine"].dispose()
    remaining = (first.not_valid_after_utc - first.not_valid_before_utc).days
    soon = make_app(instance, sqlite_url, SERVER_CERT_RENEW_DAYS=remaining + 1)  # as if it expired within the window
    assert _ensure(soon) is True
    assert _server_cert(instance).serial_number != first.serial_number
    soon.extensions["opauth.engine"].dispose()
    later = make_app(instance, sqlite_url)
    assert _ensure(later) is False
    later.extensions["opauth.engine"].dispose()
