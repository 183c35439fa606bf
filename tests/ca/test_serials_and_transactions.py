"""Serial numbers are random, positive, ≤ 20 octets and unique; signing and recording are one transaction."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

import ca.issuance as issuance
from ca.authority import CaSettings
from ca.models import Certificate
from certs.business_server import issue_business_server_certificate
from db import get_session
from kernel.audit import SYSTEM_ACTOR
from operators.business_systems import BusinessSystemData
from tests.helpers import BUSINESS, make_csr


def _issue(app: Flask) -> Certificate:
    session = get_session()
    cert = issue_business_server_certificate(
        session, settings=CaSettings.from_config(app.config), data=BusinessSystemData.from_mapping(BUSINESS),
        csr_bytes=make_csr(), actor=SYSTEM_ACTOR, may_change_system=True)
    session.commit()
    return cert


def test_serials_are_159_bit_positive_and_distinct() -> None:
    serials = [issuance.new_serial() for _ in range(2000)]
    assert len(set(serials)) == len(serials)
    assert all(0 < s < 2**159 for s in serials)
    assert max(s.bit_length() for s in serials) > 150  # uses the whole range


def test_a_serial_already_in_use_is_never_reused(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    with app.app_context():
        first = _issue(app)
        taken = int(first.serial, 16)
        fresh = iter([taken, taken, 0x1234567890ABCDEF1234])
        monkeypatch.setattr(issuance, "new_serial", lambda: next(fresh))
        second = _issue(app)
    assert second.serial == "1234567890abcdef1234"


def test_database_unique_constraint_rejects_duplicate_serial(app: Flask) -> None:
    with app.app_context():
        session = get_session()
        existing = session.scalars(select(Certificate)).first()
        assert existing is not None
        clone = Certificate(serial=existing.serial, authority_id=existing.authority_id, profile=existing.profile,
                            subject="CN=x", common_name="x", sans=[], not_before=existing.not_before,
                            not_after=existing.not_after, der=b"x", fingerprint_sha256="f" * 64,
                            spki_sha256="0" * 64, issued_by="test")
        session.add(clone)
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()


def test_failed_recording_leaves_no_certificate(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the row cannot be written, the signature is discarded with the transaction."""
    with app.app_context():
        session = get_session()
        before = session.scalar(select(func.count()).select_from(Certificate))
        taken = session.scalars(select(Certificate.serial)).first()
        assert taken is not None
        # Skip the pre-check so the unique constraint itself must stop the duplicate.
        monkeypatch.setattr(issuance, "_unused_serial", lambda _s: int(taken, 16))
        with pytest.raises(IntegrityError):
            issue_business_server_certificate(
                session, settings=CaSettings.from_config(app.config),
                data=BusinessSystemData.from_mapping(BUSINESS), csr_bytes=make_csr(), actor=SYSTEM_ACTOR,
                may_change_system=True)
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Certificate)) == before


def test_certificates_never_outlive_the_issuing_ca(sqlite_app: Flask) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from ca.authority import current_issuer
    from ca.models import CertificateProfile

    with sqlite_app.app_context():
        session = get_session()
        issuer = current_issuer(session, CaSettings.from_config(sqlite_app.config))
        row = issuance.issue_certificate(
            session, issuer=issuer, profile=CertificateProfile.TLS,
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "long.example.jp")]),
            public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
            sans=[x509.DNSName("long.example.jp")], days=100_000, issued_by="test")
        assert issuer.not_after is not None and row.not_after <= issuer.not_after
