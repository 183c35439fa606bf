"""Every bad CSR gets a clear 4xx, an audit entry, and leaves no certificate or business system behind."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from ca.csr import parse_csr
from ca.errors import InvalidCsr
from ca.models import Certificate
from db import get_session
from operators.models import AuditEvent, BusinessSystem
from tests.helpers import BUSINESS, make_csr, rsa_key


def _bad_signature() -> bytes:
    """A CSR whose public key was swapped after signing."""
    der = make_csr(encoding=serialization.Encoding.DER)
    parsed = asn1_csr.CertificationRequest.load(der)
    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = parsed["certification_request_info"]
    info["subject_pk_info"] = asn1_keys.PublicKeyInfo.load(other)
    return asn1_csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": parsed["signature_algorithm"],
        "signature": parsed["signature"],
    }).dump(force=True)


def _certificate_pem() -> bytes:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(_issued_ca_der())
    return cert.public_bytes(serialization.Encoding.PEM)


def _issued_ca_der() -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _sha1_csr() -> bytes:
    """cryptography refuses to sign with SHA-1; openssl still can, so clients may send one."""
    import tempfile
    from pathlib import Path

    from tests.helpers import run

    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "k.pem"
        key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        out = Path(tmp) / "r.csr"
        run("openssl", "req", "-new", "-sha1", "-key", key, "-subj", "/CN=x", "-out", out, check=True)
        return out.read_bytes()


BAD_CSRS: dict[str, tuple[Callable[[], bytes], str]] = {
    "garbage": (lambda: b"this is not a certificate request at all", "not a CSR"),
    "empty": (lambda: b"   \n", "empty"),
    "wrong_pem_label": (_certificate_pem, "found 'CERTIFICATE'"),
    "bad_signature": (_bad_signature, "signature does not verify"),
    "rsa_1024": (lambda: make_csr(rsa_key(1024)), "at least 2048 bits"),
    "truncated_der": (lambda: make_csr(encoding=serialization.Encoding.DER)[:-20], "not a CSR"),
    "truncated_pem": (lambda: make_csr()[:200], "damaged or truncated"),
    "secp256k1": (lambda: make_csr(ec.generate_private_key(ec.SECP256K1())), "curve secp256k1 is not accepted"),
    "sha1": (_sha1_csr, "too weak"),
    "huge": (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"A" * 70_000, "too large"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSRS))
def test_parse_csr_rejects_with_clear_message(case: str) -> None:
    build, message = BAD_CSRS[case]
    with pytest.raises(InvalidCsr) as info:
        parse_csr(build())
    assert message in info.value.message


def _counts(app: Flask) -> tuple[int, int, int]:
    with app.app_context():
        s = get_session()
        return (s.scalar(select(func.count()).select_from(Certificate)) or 0,
                s.scalar(select(func.count()).select_from(BusinessSystem)) or 0,
                s.scalar(select(func.count()).select_from(AuditEvent).where(
                    AuditEvent.action == "certificate.csr_rejected")) or 0)


@pytest.mark.parametrize("case", ["garbage", "wrong_pem_label", "bad_signature", "rsa_1024", "truncated_der"])
def test_api_rejects_bad_csr_and_writes_nothing(app: Flask, api: FlaskClient, case: str) -> None:
    build, message = BAD_CSRS[case]
    before = _counts(app)
    data = dict(BUSINESS)
    from io import BytesIO

    response = api.post("/api/v1/business-server-certificates",
                        data=dict(data, csr=(BytesIO(build()), "certreq.txt")),
                        content_type="multipart/form-data")
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_csr" and message in body["message"]
    after = _counts(app)
    assert after[0] == before[0] and after[1] == before[1], "a rejected CSR left rows behind"
    assert after[2] == before[2] + 1, "the rejection was not audited"


def test_huge_upload_gets_413_with_message(app: Flask, api: FlaskClient) -> None:
    from io import BytesIO

    before = _counts(app)
    response = api.post("/api/v1/business-server-certificates",
                        data=dict(BUSINESS, csr=(BytesIO(b"A" * (2 * 1024 * 1024)), "big.csr")),
                        content_type="multipart/form-data")
    assert response.status_code == 413
    assert "大きすぎます" in response.get_json()["message"]
    assert _counts(app)[:2] == before[:2]


def test_json_without_csr_or_with_bad_fields_is_400(api: FlaskClient) -> None:
    response = api.post("/api/v1/business-server-certificates", json=dict(BUSINESS))
    assert response.status_code == 400 and "csr" in response.get_json()["message"]
    response = api.post("/api/v1/business-server-certificates", data="not json", content_type="application/json")
    assert response.status_code == 400
    for field, value, message in [("business_id", "5", "two digits"), ("top_url", "ftp://x.jp/", "https"),
                                  ("email", "no-at-sign", "(email)"), ("phone", "03(1234)", "digits"),
                                  ("name", "", "required"), ("business_id", 5, "string")]:
        payload = dict(BUSINESS, csr=make_csr().decode())
        payload[field] = value
        response = api.post("/api/v1/business-server-certificates", json=payload, headers={"Accept-Language": "en"})
        assert response.status_code == 400, field
        assert message in response.get_json()["message"], (field, response.get_json())
