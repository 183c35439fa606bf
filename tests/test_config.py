"""Settings: defaults, OPAUTH_* overrides, bad values refused; each key algorithm builds a valid hierarchy."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select

from ca.models import CertificateAuthority
from config import ConfigError, load_settings
from db import get_session
from tests.conftest import initialise, make_app
from tests.helpers import run


def test_environment_overrides_defaults() -> None:
    settings = load_settings(environ={"OPAUTH_DATABASE_URL": "postgresql+psycopg://u@h/db",
                                      "OPAUTH_KEY_ALGORITHM": "RSA-3072", "OPAUTH_PAGE_SIZE": "7",
                                      "OPAUTH_SESSION_COOKIE_SECURE": "false",
                                      "OPAUTH_PUBLIC_BASE_URL": "https://opauth.city.example.jp/"})
    assert settings["DATABASE_URL"] == "postgresql+psycopg://u@h/db"
    assert settings["KEY_ALGORITHM"] == "rsa-3072" and settings["PAGE_SIZE"] == 7
    assert settings["SESSION_COOKIE_SECURE"] is False
    assert settings["PUBLIC_BASE_URL"] == "https://opauth.city.example.jp"
    assert settings["PKI_BASE_URL"] == "http://opauth.city.example.jp:8080"  # plain HTTP on the public host


def test_defaults_give_an_embedded_sqlite_instance() -> None:
    settings = load_settings(environ={"OPAUTH_INSTANCE_DIR": "/srv/opauth"})
    assert settings["DATABASE_URL"] == "sqlite:////srv/opauth/opauth.db"
    assert settings["KEY_ALGORITHM"] == "ec-p256"


@pytest.mark.parametrize(("name", "value"), [("OPAUTH_KEY_ALGORITHM", "dsa-1024"), ("OPAUTH_PAGE_SIZE", "many"),
                                             ("OPAUTH_SESSION_COOKIE_SECURE", "maybe")])
def test_bad_values_are_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(environ={name: value})


@pytest.mark.parametrize(("algorithm", "check"), [
    ("ec-p384", lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.key_size == 384),
    ("rsa-2048", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048),
    ("rsa-3072", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 3072),
])
def test_each_key_algorithm_builds_a_hierarchy_openssl_accepts(tmp_path: Path, sqlite_url: str, algorithm: str,
                                                                check: object) -> None:
    app = make_app(tmp_path / "instance", sqlite_url, KEY_ALGORITHM=algorithm)
    initialise(app)
    with app.app_context():
        cas = get_session().scalars(select(CertificateAuthority).order_by(CertificateAuthority.id)).all()
        certs = [x509.load_der_x509_certificate(ca.cert_der) for ca in cas]
    assert all(check(c.public_key()) for c in certs)  # type: ignore[operator]
    tls = tmp_path / "instance" / "tls"
    result = run("openssl", "verify", "-CAfile", tls / "ca-bundle.pem", "-untrusted", tls / "server.pem",
                 tls / "server.pem")
    assert result.returncode == 0, result.stderr
    app.extensions["opauth.engine"].dispose()


def test_wrong_key_passphrase_is_a_clear_error(tmp_path: Path, sqlite_url: str) -> None:
    from ca.authority import CaSettings, current_issuer
    from ca.keys import KeyStoreError

    app = make_app(tmp_path / "instance", sqlite_url)
    initialise(app)
    wrong = make_app(tmp_path / "instance", sqlite_url, KEY_PASSPHRASE="not-the-passphrase")
    with wrong.app_context(), pytest.raises(KeyStoreError, match="wrong passphrase"):
        current_issuer(get_session(), CaSettings.from_config(wrong.config))


def test_pki_urls_default_to_plain_http_on_the_public_host() -> None:
    assert load_settings(environ={})["PKI_BASE_URL"] == "http://localhost:8080"
    ipv6 = load_settings(environ={"OPAUTH_PUBLIC_BASE_URL": "https://[2001:db8::1]:8443",
                                  "OPAUTH_PKI_HTTP_BIND": "[::]:80"})
    assert ipv6["PKI_BASE_URL"] == "http://[2001:db8::1]"
    no_listener = load_settings(environ={"OPAUTH_PKI_HTTP_BIND": ""})
    assert no_listener["PKI_BASE_URL"] == "https://localhost:8443"
    explicit = load_settings(environ={"OPAUTH_PKI_BASE_URL": "http://pki.example.jp/"})
    assert explicit["PKI_BASE_URL"] == "http://pki.example.jp"


def test_instance_values_beat_defaults_and_the_environment_beats_them() -> None:
    stored = {"CERT_EXPIRY_WARNING_DAYS": 45, "PAGE_SIZE": 20}
    settings = load_settings(environ={"OPAUTH_PAGE_SIZE": "7"}, stored=stored)
    assert settings["CERT_EXPIRY_WARNING_DAYS"] == 45 and settings["PAGE_SIZE"] == 7


def test_pinned_settings_keep_the_instance_value_whatever_the_environment_says() -> None:
    stored = {"PKI_BASE_URL": "http://pki.example.jp", "PUBLIC_BASE_URL": "https://opauth.example.jp"}
    settings = load_settings(environ={"OPAUTH_PKI_BASE_URL": "http://elsewhere.example.jp"}, stored=stored)
    assert settings["PKI_BASE_URL"] == "http://pki.example.jp"
    assert settings["WEBAUTHN_RP_ID"] == "opauth.example.jp"  # derived from the stored public URL


def test_bootstrap_settings_are_never_taken_from_the_instance() -> None:
    settings = load_settings(environ={}, stored={"DATABASE_URL": "sqlite:////elsewhere.db", "KEY_PASSPHRASE": "x"})
    assert settings["DATABASE_URL"].endswith("instance/opauth.db") and settings["KEY_PASSPHRASE"] == ""


def test_disagreeing_pinned_environment_is_a_conflict_with_a_remedy() -> None:
    from config.instance import pinned_conflicts

    [conflict] = pinned_conflicts({"PKI_BASE_URL": "http://a.example.jp", "PAGE_SIZE": 9},
                                  {"PKI_BASE_URL": "http://b.example.jp", "PAGE_SIZE": 10})
    assert conflict.key == "PKI_BASE_URL"
    assert "settings set PKI_BASE_URL" in conflict.message() and "OPAUTH_PKI_BASE_URL" in conflict.message()
    assert pinned_conflicts({"PKI_BASE_URL": "http://b.example.jp/"}, {"PKI_BASE_URL": "http://b.example.jp"}) == []
