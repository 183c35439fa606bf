"""pkilint finds no error-level problem in a certificate of any profile (RFC 5280 and, for servers, CA/B rules)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from sqlalchemy import select

from ca.authority import CaSettings, current_issuer
from ca.issuance import issue_certificate
from ca.models import Certificate, CertificateProfile
from certs.business_server import issue_business_server_certificate
from db import get_session
from kernel.audit import SYSTEM_ACTOR
from operators.business_systems import BusinessSystemData
from tests.helpers import BUSINESS, make_csr, pkilint, rsa_key


def _write(tmp_path: Path, name: str, der: bytes) -> Path:
    path = tmp_path / f"{name}.pem"
    path.write_bytes(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM))
    return path


def _issue(app: Flask, profile: CertificateProfile, **kwargs: object) -> bytes:
    with app.app_context():
        session = get_session()
        settings = CaSettings.from_config(app.config)
        row = issue_certificate(session, issuer=current_issuer(session, settings), profile=profile,
                                public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
                                days=30, issued_by="test", **kwargs)  # type: ignore[arg-type]
        session.commit()
        return row.der


def _profile_der(app: Flask, profile: CertificateProfile) -> bytes:
    """The first certificate of ``profile`` that init made (one OCSP responder per CA: the root's)."""
    with app.app_context():
        der = get_session().scalars(select(Certificate.der).where(Certificate.profile == profile)
                                    .order_by(Certificate.id)).first()
        assert der is not None, profile
        return der


@pytest.mark.parametrize("profile", [CertificateProfile.ROOT_CA, CertificateProfile.ISSUING_CA])
def test_ca_certificates_pass_pkilint(sqlite_app: Flask, tmp_path: Path, profile: CertificateProfile) -> None:
    path = _write(tmp_path, profile.value, _profile_der(sqlite_app, profile))
    assert pkilint("lint_pkix_cert", path) == []


# The public-web (CA/B Forum) rules, applied to a private CA, with the two deviations opauth makes on
# purpose. Any other finding (validity, keys, names, extensions) fails the tests below.
CABF_DEVIATIONS = {
    # The seed's screen puts 部門名 (OU) into the subject; the public-web rules forbid OU since 2022.
    "cabf.serverauth.ov.organizational_unit_name_attribute_present": "seed 001 I.2.2(2) subject",
    # A private CA asserts no CA/B Forum reserved policy OID (2.23.140.1.2.x): it is not audited against the
    # Baseline Requirements. certificatePolicies carries OPAUTH_CERTIFICATE_POLICY_OID instead.
    "cabf.serverauth.subscriber_missing_reserved_policy_oid": "private CA",
}


def _cabf_codes(path: Path) -> set[str]:
    return {d["code"] for f in pkilint("lint_cabf_serverauth_cert", path, "-t", "OV-FINAL-CERTIFICATE")
            for d in f["finding_descriptions"]}


@pytest.mark.parametrize("key", ["ec", "rsa"])
def test_business_server_certificate_passes_pkix_and_cabf_lints(sqlite_app: Flask, tmp_path: Path,
                                                                  key: str) -> None:
    with sqlite_app.app_context():
        session = get_session()
        cert = issue_business_server_certificate(
            session, settings=CaSettings.from_config(sqlite_app.config),
            data=BusinessSystemData.from_mapping(BUSINESS),
            csr_bytes=make_csr(rsa_key() if key == "rsa" else None), actor=SYSTEM_ACTOR,
            may_change_system=True)
        session.commit()
        path = _write(tmp_path, "business", cert.der)
    assert pkilint("lint_pkix_cert", path) == []
    assert _cabf_codes(path) <= set(CABF_DEVIATIONS), _cabf_codes(path)


def test_business_server_certificate_without_ou_has_only_the_reserved_policy_deviation(
        sqlite_app: Flask, tmp_path: Path) -> None:
    from tests.helpers import SUBJECT

    no_ou = x509.Name([a for a in SUBJECT if a.oid != NameOID.ORGANIZATIONAL_UNIT_NAME])
    with sqlite_app.app_context():
        session = get_session()
        cert = issue_business_server_certificate(
            session, settings=CaSettings.from_config(sqlite_app.config),
            data=BusinessSystemData.from_mapping(BUSINESS), csr_bytes=make_csr(subject=no_ou), actor=SYSTEM_ACTOR,
            may_change_system=True)
        session.commit()
        path = _write(tmp_path, "business", cert.der)
    assert _cabf_codes(path) == {"cabf.serverauth.subscriber_missing_reserved_policy_oid"}


def test_operator_certificate_passes_pkilint(sqlite_app: Flask, tmp_path: Path) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "南江州市"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "OP0601")])
    der = _issue(sqlite_app, CertificateProfile.OPERATOR, subject=subject, business_ids=["05", "12"])
    assert pkilint("lint_pkix_cert", _write(tmp_path, "operator", der)) == []


def test_tls_certificate_passes_pkilint(sqlite_app: Flask, tmp_path: Path) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "terminal01.city.itozaki.nagano.jp")])
    der = _issue(sqlite_app, CertificateProfile.TLS, subject=subject,
                 sans=[x509.DNSName("terminal01.city.itozaki.nagano.jp")])
    assert pkilint("lint_pkix_cert", _write(tmp_path, "tls", der)) == []


def test_ocsp_signing_certificate_passes_pkilint(sqlite_app: Flask, tmp_path: Path) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "opauth OCSP responder")])
    der = _issue(sqlite_app, CertificateProfile.OCSP_SIGNING, subject=subject)
    assert pkilint("lint_pkix_cert", _write(tmp_path, "ocsp", der)) == []


def test_ocsp_responder_certificate_carries_nocheck_and_no_crl_or_aia(sqlite_app: Flask) -> None:
    """The responder's certificate, as init made it: nobody checks its status, so it points at no CRL or OCSP."""
    cert = x509.load_der_x509_certificate(_profile_der(sqlite_app, CertificateProfile.OCSP_SIGNING))
    types = {type(e.value) for e in cert.extensions}
    assert x509.OCSPNoCheck in types
    assert x509.CRLDistributionPoints not in types and x509.AuthorityInformationAccess not in types


def _policies(der: bytes) -> list[str]:
    cert = x509.load_der_x509_certificate(der)
    try:
        ext = cert.extensions.get_extension_for_class(x509.CertificatePolicies)
    except x509.ExtensionNotFound:
        return []
    return [p.policy_identifier.dotted_string for p in ext.value]


def test_every_certificate_below_the_root_carries_the_configured_policy(tmp_path: Path, sqlite_url: str) -> None:
    from tests.conftest import initialise, make_app

    app = make_app(tmp_path / "instance", sqlite_url, CERTIFICATE_POLICY_OID="1.2.392.999.7.1")
    initialise(app)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OP0603")])
    operator = _issue(app, CertificateProfile.OPERATOR, subject=subject)
    assert _policies(operator) == ["1.2.392.999.7.1"]
    for profile in (CertificateProfile.ISSUING_CA, CertificateProfile.OCSP_SIGNING, CertificateProfile.TLS):
        assert _policies(_profile_der(app, profile)) == ["1.2.392.999.7.1"], profile
    assert _policies(_profile_der(app, CertificateProfile.ROOT_CA)) == []  # the anchor asserts none
    app.extensions["opauth.engine"].dispose()


def test_a_malformed_policy_oid_is_refused_naming_the_variable() -> None:
    from config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="OPAUTH_CERTIFICATE_POLICY_OID"):
        load_settings(environ={"OPAUTH_CERTIFICATE_POLICY_OID": "2.25.x"})


def test_operator_certificate_roles_round_trip_and_openssl_reads_them(sqlite_app: Flask, tmp_path: Path) -> None:
    from ca.profiles import permitted_business_ids
    from tests.helpers import run

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OP0602")])
    der = _issue(sqlite_app, CertificateProfile.OPERATOR, subject=subject, business_ids=["05", "12", "99"])
    assert permitted_business_ids(x509.load_der_x509_certificate(der)) == ["05", "12", "99"]
    path = _write(tmp_path, "op", der)
    text = run("openssl", "x509", "-in", path, "-noout", "-text", check=True).stdout
    assert "Subject Directory Attributes" in text or "2.5.29.9" in text
    plain = _issue(sqlite_app, CertificateProfile.OPERATOR, subject=subject)
    assert permitted_business_ids(x509.load_der_x509_certificate(plain)) == []


def test_opauths_own_server_certificate_breaks_only_the_listed_cabf_rules(tmp_path: Path, sqlite_url: str) -> None:
    """Domain-validated shape; what remains is the loopback names (the quick start) and the private policy."""
    from tests.conftest import initialise, make_app

    app = make_app(tmp_path / "instance", sqlite_url, PUBLIC_BASE_URL="https://opauth.city.example.jp")
    initialise(app)
    app.extensions["opauth.engine"].dispose()
    leaf = x509.load_pem_x509_certificates((tmp_path / "instance" / "tls" / "server.pem").read_bytes())[0]
    path = tmp_path / "server.pem"
    path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    assert pkilint("lint_pkix_cert", path) != []  # `localhost` only: checked in tests/test_serving.py
    codes = {d["code"] for f in pkilint("lint_cabf_serverauth_cert", path, "-t", "DV-FINAL-CERTIFICATE")
             for d in f["finding_descriptions"]}
    assert codes == {"cabf.internal_domain_name", "cabf.internal_ip_address",
                     "cabf.serverauth.subscriber_missing_reserved_policy_oid"}, codes
