"""照会: finding certificates (filters, pagination) and exporting them in the usual formats."""

from __future__ import annotations

import enum
from collections.abc import Collection
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from flask_babel import lazy_gettext
from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from ca.models import Certificate, CertificateAuthority, CertificateProfile, RevocationReason
from db import utcnow
from kernel.errors import InvalidInput, NotFound
from kernel.pagination import Page


class StatusFilter(enum.StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    ON_HOLD = "on_hold"


def _parse_enum(cls: type[enum.StrEnum], value: str | None, field: str) -> enum.StrEnum | None:
    if not value:
        return None
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise InvalidInput(lazy_gettext(
            "%(field)s は次のいずれかです: %(allowed)s", field=field, allowed=allowed)) from None


def list_certificates(
    session: Session,
    *,
    profile: str | None = None,
    business_system_ids: Collection[int] | None = None,
    status: str | None = None,
    text: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> Page[Certificate]:
    """Certificates, newest first, filtered by profile, owning business systems (ids), status and a text match."""
    if page < 1 or per_page < 1 or per_page > 500:
        raise InvalidInput(lazy_gettext("page は1以上、per_page は1〜500で指定してください。"))
    query = select(Certificate)
    wanted_profile = _parse_enum(CertificateProfile, profile, "profile")
    if wanted_profile is not None:
        query = query.where(Certificate.profile == wanted_profile)
    if business_system_ids is not None:
        query = query.where(Certificate.business_system_id.in_(list(business_system_ids)))
    wanted_status = _parse_enum(StatusFilter, status, "status")
    now = utcnow()
    if wanted_status is StatusFilter.VALID:
        query = query.where(Certificate.revoked_at.is_(None), Certificate.not_after >= now)
    elif wanted_status is StatusFilter.EXPIRED:
        query = query.where(Certificate.revoked_at.is_(None), Certificate.not_after < now)
    elif wanted_status is StatusFilter.REVOKED:
        query = query.where(Certificate.revoked_at.is_not(None),
                            Certificate.revocation_reason != RevocationReason.CERTIFICATE_HOLD)
    elif wanted_status is StatusFilter.ON_HOLD:
        query = query.where(Certificate.revocation_reason == RevocationReason.CERTIFICATE_HOLD)
    if text:
        like = f"%{text.strip()[:100]}%"
        query = query.where(or_(Certificate.common_name.ilike(like), Certificate.subject.ilike(like),
                                Certificate.serial.ilike(like)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = list(session.scalars(query.order_by(Certificate.id.desc())
                                 .offset((page - 1) * per_page).limit(per_page)))
    return Page(items=items, page=page, per_page=per_page, total=total)


def get_certificate(session: Session, *, serial: str | None = None, cert_id: int | None = None) -> Certificate:
    """One certificate by hex serial or id; ``NotFound`` otherwise (also for malformed serials)."""
    cert = None
    if cert_id is not None:
        cert = session.get(Certificate, cert_id)
    elif serial is not None:
        normalised = serial.strip().lower().replace(":", "").lstrip("0")
        if normalised and len(normalised) <= 40 and all(c in "0123456789abcdef" for c in normalised):
            cert = session.scalar(select(Certificate).where(Certificate.serial == normalised))
    if cert is None:
        raise NotFound(lazy_gettext("指定された証明書はありません。"))
    return cert


class ExportFormat(enum.StrEnum):
    PEM = "pem"
    DER = "der"
    CHAIN_PEM = "chain.pem"
    PKCS7 = "p7b"


EXPORT_MEDIA_TYPES = {
    ExportFormat.PEM: "application/x-pem-file",
    ExportFormat.DER: "application/pkix-cert",
    ExportFormat.CHAIN_PEM: "application/x-pem-file",
    ExportFormat.PKCS7: "application/pkcs7-mime",
}


def export_certificate(session: Session, cert: Certificate, fmt: str) -> tuple[bytes, str, str]:
    """(body, media type, file name) of ``cert`` as PEM, DER, PEM chain or PKCS#7 (DER) chain."""
    wanted = _parse_enum(ExportFormat, fmt, "format")
    assert isinstance(wanted, ExportFormat)
    leaf = x509.load_der_x509_certificate(cert.der)
    name = f"{cert.serial}.{wanted.value}"
    if wanted is ExportFormat.DER:
        body = cert.der
    elif wanted is ExportFormat.PEM:
        body = leaf.public_bytes(serialization.Encoding.PEM)
    else:
        chain = [leaf, *chain_for(session, cert)]
        if wanted is ExportFormat.CHAIN_PEM:
            body = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        else:
            body = pkcs7.serialize_certificates(chain, serialization.Encoding.DER)
    return body, EXPORT_MEDIA_TYPES[wanted], name


def chain_for(session: Session, cert: Certificate) -> list[x509.Certificate]:
    """The issuer chain above ``cert`` (issuing CA, then root; nothing above a root itself)."""
    chain = []
    ca: CertificateAuthority | None = cert.authority
    while ca is not None:
        if ca.cert_der != cert.der:
            chain.append(x509.load_der_x509_certificate(ca.cert_der))
        ca = ca.parent
    return chain


def expiring_certificates(session: Session, *, within_days: int,
                          business_system_ids: list[int] | None = None) -> list[Certificate]:
    """Unrevoked business server and SSL certificates that expire within ``within_days`` (soonest first).

    ``business_system_ids`` limits the list to those systems (a business system administrator's view);
    None means every business system.
    """
    successor = aliased(Certificate)
    now = utcnow()
    query = select(Certificate).where(
        ~exists().where(successor.replaces_id == Certificate.id),  # already re-issued: nothing to warn about
        Certificate.profile.in_((CertificateProfile.BUSINESS_SERVER, CertificateProfile.TLS)),
        Certificate.business_system_id.is_not(None),
        Certificate.revoked_at.is_(None),
        Certificate.not_after >= now,
        Certificate.not_after <= now + timedelta(days=within_days))
    if business_system_ids is not None:
        query = query.where(Certificate.business_system_id.in_(business_system_ids))
    return list(session.scalars(query.order_by(Certificate.not_after).limit(200)))
