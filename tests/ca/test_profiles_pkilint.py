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
from ca.business_server import issue_business_server_certificate
from ca.issuance import issue_certificate
from ca.models import Certificate, CertificateProfile
from db import get_session
from operators.audit import SYSTEM_ACTOR
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
    with app.app_context():
        return get_session().scalars(select(Certificate.der).where(Certificate.profile == profile)).one()


@pytest.mark.parametrize("profile", [CertificateProfile.ROOT_CA, CertificateProfile.ISSUING_CA])
def test_ca_certificates_pass_pkilint(sqlite_app: Flask, tmp_path: Path, profile: CertificateProfile) -> None:
    path = _write(tmp_path, profile.value, _profile_der(sqlite_app, profile))
    assert pkilint("lint_pkix_cert", path) == []


# The public-web (CA/B Forum) rules, applied to a private CA, with the two deviations opauth makes on
# purpose. Any other finding (validity, keys, names, extensions) fails the tests below.
CABF_DEVIATIONS = {
    # The seed's screen puts 部門名 (OU) into the subject; the public-web rules forbid OU since 2022.
    "cabf.serverauth.ov.organizational_unit_name_attribute_present": "seed 001 I.2.2(2) subject",
    # A private CA asserts no CA/B Forum reserved policy OID: it is not audited against the BRs.
    "cabf.serverauth.subscriber.certificate_policies_extension_absent": "private CA",
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
            csr_bytes=make_csr(rsa_key() if key == "rsa" else None), actor=SYSTEM_ACTOR)
        session.commit()
        path = _write(tmp_path, "business", cert.der)
    assert pkilint("lint_pkix_cert", path) == []
    assert _cabf_codes(path) <= set(CABF_DEVIATIONS), _cabf_codes(path)


def test_business_server_certificate_without_ou_has_only_the_policy_deviation(
        sqlite_app: Flask, tmp_path: Path) -> None:
    from tests.helpers import SUBJECT

    no_ou = x509.Name([a for a in SUBJECT if a.oid != NameOID.ORGANIZATIONAL_UNIT_NAME])
    with sqlite_app.app_context():
        session = get_session()
        cert = issue_business_server_certificate(
            session, settings=CaSettings.from_config(sqlite_app.config),
            data=BusinessSystemData.from_mapping(BUSINESS), csr_bytes=make_csr(subject=no_ou), actor=SYSTEM_ACTOR)
        session.commit()
        path = _write(tmp_path, "business", cert.der)
    assert _cabf_codes(path) == {"cabf.serverauth.subscriber.certificate_policies_extension_absent"}


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
