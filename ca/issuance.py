"""Signing certificates: the signature and the database row happen in one transaction.

``issue_certificate`` signs and writes the row in the session's transaction, so
the unique constraints (serial, fingerprint) are checked before anything is returned. It
never commits: the caller commits once and only then hands the certificate
out. If the commit fails, the signed bytes die with the session.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.orm import Session, make_transient_to_detached

from ca.keys import Signer
from ca.models import Certificate, CertificateProfile
from ca.profiles import PkiUrls, extensions_for
from db import utcnow
from kernel.errors import SettingsConflict

# Tolerate clocks of relying parties that run a little behind.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class Issuer:
    """A CA ready to sign: its database id, name, key and the URLs it puts into what it signs."""

    authority_id: int
    name: x509.Name
    signer: Signer
    urls: PkiUrls | None  # None only while the root signs itself
    not_after: datetime | None  # issued certificates never outlive their issuer
    policy_oid: str | None = None  # certificatePolicies of what it signs (CERTIFICATE_POLICY_OID)
    refusal: str = ""  # why this process must not sign certificates (settings conflict), if it must not


def new_serial() -> int:
    """159 bits of CSPRNG output, positive (RFC 5280: at most 20 octets)."""
    return x509.random_serial_number()


def serial_hex(serial: int) -> str:
    return format(serial, "x")


# Built once from the table's columns: issuance runs it for every certificate, on the session's connection
# (the caller's work is flushed first, in issue_certificate).
_CERTIFICATES = cast(Table, Certificate.__table__)
_SERIAL_TAKEN = select(_CERTIFICATES.c.id).where(_CERTIFICATES.c.serial == bindparam("serial"))


def _unused_serial(session: Session) -> int:
    for _ in range(5):
        serial = new_serial()
        taken = session.connection().execute(_SERIAL_TAKEN, {"serial": serial_hex(serial)}).scalar()
        if taken is None:
            return serial
    raise RuntimeError("could not find an unused serial number")  # pragma: no cover - 2^-159 odds


def spki_sha256(public_key: CertificateIssuerPublicKeyTypes) -> str:
    spki = public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def issue_certificate(
    session: Session,
    *,
    issuer: Issuer,
    profile: CertificateProfile,
    subject: x509.Name,
    public_key: CertificateIssuerPublicKeyTypes,
    days: int,
    issued_by: str,
    sans: Sequence[x509.GeneralName] = (),
    business_ids: Sequence[str] = (),
    business_system_id: int | None = None,
    tenant_id: int | None = None,
    replaces_id: int | None = None,
    details: dict[str, Any] | None = None,
    self_signed: bool = False,
) -> Certificate:
    """Sign a certificate of ``profile`` and write its row in ``session``'s transaction (not committed)."""
    if issuer.refusal:
        raise SettingsConflict(issuer.refusal)
    session.flush()  # the caller's pending work is written first, as with any other statement
    now = utcnow()
    not_before = now - BACKDATE
    not_after = now + timedelta(days=days)
    if issuer.not_after is not None and not_after > issuer.not_after:
        not_after = issuer.not_after
    serial = _unused_serial(session)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if self_signed else issuer.name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions_for(
        profile, public_key=public_key, issuer_public_key=issuer.signer.public_key(),
        urls=issuer.urls, sans=sans, business_ids=business_ids, policy_oid=issuer.policy_oid,
    ):
        builder = builder.add_extension(extension, critical)
    cert = builder.sign(issuer.signer.private_key, issuer.signer.hash_algorithm)
    der = cert.public_bytes(serialization.Encoding.DER)
    values: dict[str, Any] = {
        "serial": serial_hex(serial),
        "authority_id": issuer.authority_id,
        "profile": profile,
        "subject": cert.subject.rfc4514_string(),
        "common_name": _common_name(cert.subject),
        "sans": [describe_general_name(n) for n in sans],
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "der": der,
        "fingerprint_sha256": hashlib.sha256(der).hexdigest(),
        "spki_sha256": spki_sha256(public_key),
        "business_system_id": business_system_id,
        "tenant_id": tenant_id,
        "issued_by": issued_by,
        "created_at": now,
        "replaces_id": replaces_id,
        "revoked_at": None,
        "revocation_reason": None,
        "invalidity_date": None,
        "details": dict(details or {}, business_ids=list(business_ids)) if business_ids else dict(details or {}),
    }
    return _recorded(session, values)


# The row is written as one plain INSERT on the session's connection (an ORM flush of a new object costs more
# than the statement), then handed back as the persistent ``Certificate`` it is, without reading it again.
_INSERT_CERTIFICATE = insert(_CERTIFICATES).returning(_CERTIFICATES.c.id)


def _recorded(session: Session, values: dict[str, Any]) -> Certificate:
    """Insert the certificate's row in ``session``'s transaction (unique serial/fingerprint checked here)."""
    certificate_id = session.connection().execute(_INSERT_CERTIFICATE, values).scalar_one()
    row = Certificate(id=certificate_id, **values)
    make_transient_to_detached(row)  # every column as written: loaded, nothing pending
    session.add(row)
    return row


def describe_general_name(name: x509.GeneralName) -> str:
    """``DNS:host`` / ``IP:addr`` / ``URI:...`` / ``email:...`` for lists and audit."""
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    return str(name)
