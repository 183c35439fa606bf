"""オペレータ証明書: operator certificates (issue, re-issue on permission change, revoke, release a hold).

Subject: C=JP, O=<tenant name>, OU=<tenant code>, CN=<オペレータID>. The
permitted 業務IDs travel in the extension ``ca.profiles.PERMITTED_BUSINESS_IDS_OID``.
The key is either generated here and delivered once as a password-protected
PKCS#12 (``ca.delivery``), or comes from a CSR the operator's terminal made.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ca.authority import CaSettings, chain_certificates, current_issuer
from ca.csr import parse_csr
from ca.delivery import Pkcs12Bundle, build_pkcs12
from ca.issuance import issue_certificate
from ca.keys import generate_private_key
from ca.models import Certificate, CertificateProfile, RevocationReason
from ca.profiles import validity_days
from db import utcnow
from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import Conflict
from operators.models import Operator, OperatorCertificate, Tenant


class OperatorRevoked(Conflict):
    """操作者失効 is final: nothing new (certificate, biometrics, enrolment code) for this operator."""

    code = "operator_revoked"


def ensure_not_revoked(operator: Operator, *, refused: str) -> None:
    """Raise ``OperatorRevoked`` naming the operator and what was ``refused`` if they are revoked."""
    if operator.revoked_at is not None:
        raise OperatorRevoked(_("オペレータ %(op)s は失効しています（操作者失効）。%(what)sはできません。",
                                op=operator.operator_id, what=refused))


class Delivery(enum.StrEnum):
    """How the operator's key pair is produced."""

    PKCS12 = "pkcs12"  # generated on the server, handed out once inside a PKCS#12
    CSR = "csr"  # generated on the terminal; the CSR is uploaded


@dataclass(frozen=True)
class IssuedOperatorCertificate:
    """An issued operator certificate and, for PKCS#12 delivery, the one-time bundle."""

    certificate: Certificate
    pkcs12: Pkcs12Bundle | None  # only for Delivery.PKCS12; never stored


def operator_subject(operator: Operator, tenant: Tenant) -> x509.Name:
    """The certificate subject naming the operator and their tenant."""
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, tenant.name[:64]),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, tenant.code[:64]),
        x509.NameAttribute(NameOID.COMMON_NAME, operator.operator_id[:64]),
    ])


def permitted_business_ids(operator: Operator) -> list[str]:
    """The 業務IDs the operator's certificate must carry, sorted."""
    return sorted(s.business_id for s in operator.permitted_systems)


def operator_certificates(session: Session, operator: Operator) -> list[Certificate]:
    """Every certificate issued for ``operator``, newest first."""
    return list(session.scalars(
        select(Certificate).join(OperatorCertificate, OperatorCertificate.certificate_id == Certificate.id)
        .where(OperatorCertificate.operator_id == operator.id).order_by(Certificate.id.desc())))


def _sign(session: Session, *, settings: CaSettings, operator: Operator, public_key: object, actor: Actor,
          replaces: Certificate | None = None) -> Certificate:
    business_ids = permitted_business_ids(operator)
    cert = issue_certificate(
        session, issuer=current_issuer(session, settings), profile=CertificateProfile.OPERATOR,
        subject=operator_subject(operator, operator.tenant),
        public_key=public_key,  # type: ignore[arg-type]  # generated here or vetted by parse_csr
        days=validity_days(CertificateProfile.OPERATOR, settings.config), issued_by=actor.name,
        business_ids=business_ids, tenant_id=operator.tenant_id,
        replaces_id=replaces.id if replaces else None,
        details={"operator_id": operator.operator_id, "tenant": operator.tenant.code})
    session.add(OperatorCertificate(certificate_id=cert.id, operator_id=operator.id))
    session.flush()
    record_event(session, action=AuditAction.CERTIFICATE_ISSUED, actor=actor, target=f"certificate:{cert.serial}",
                 detail={"profile": str(cert.profile), "subject": cert.subject, "business_ids": business_ids,
                         "operator": f"{operator.tenant.code}/{operator.operator_id}",
                         "replaces": replaces.serial if replaces else None})
    return cert


def issue_operator_certificate(
    session: Session,
    *,
    settings: CaSettings,
    operator: Operator,
    actor: Actor,
    csr_bytes: bytes | None = None,
) -> IssuedOperatorCertificate:
    """Issue a certificate for ``operator``: from ``csr_bytes``, or with a new key in a PKCS#12."""
    ensure_not_revoked(operator, refused=_("オペレータ証明書の発行"))
    if csr_bytes is not None:
        csr = parse_csr(csr_bytes, max_bytes=settings.config["MAX_CSR_BYTES"])
        cert = _sign(session, settings=settings, operator=operator, public_key=csr.public_key(), actor=actor)
        return IssuedOperatorCertificate(certificate=cert, pkcs12=None)
    key = generate_private_key(settings.key_algorithm)
    cert = _sign(session, settings=settings, operator=operator, public_key=key.public_key(), actor=actor)
    bundle = build_pkcs12(
        key=key, certificate=x509.load_der_x509_certificate(cert.der), chain=chain_certificates(session),
        friendly_name=f"{operator.tenant.code}/{operator.operator_id}",
        filename=f"{operator.tenant.code}-{operator.operator_id}.p12")
    record_event(session, action=AuditAction.OPERATOR_CERTIFICATE_DELIVERED, actor=actor,
                 target=f"certificate:{cert.serial}", detail={"delivery": Delivery.PKCS12.value})
    return IssuedOperatorCertificate(certificate=cert, pkcs12=bundle)


def without_live_certificate(query: Select[Operator]) -> Select[Operator]:
    """Narrow an operator query (from ``operators.tenancy``) to active operators lacking a live certificate."""
    live = (select(OperatorCertificate.operator_id)
            .join(Certificate, Certificate.id == OperatorCertificate.certificate_id)
            .where(Certificate.revoked_at.is_(None), Certificate.not_after > utcnow()))
    return query.where(Operator.revoked_at.is_(None), Operator.id.not_in(live))


def _is_live(cert: Certificate) -> bool:
    return cert.revoked_at is None and cert.not_after > utcnow()


def reissue_for_permissions(session: Session, *, settings: CaSettings, operator: Operator,
                            actor: Actor) -> list[Certificate]:
    """After a change of permitted business systems: certify each live key again, revoke the old (superseded).

    The terminal keeps its key; it only needs the new certificate, which is public.
    """
    from ca.revocation import revoke

    renewed = []
    for old in operator_certificates(session, operator):
        if not _is_live(old):
            continue
        public_key = x509.load_der_x509_certificate(old.der).public_key()
        renewed.append(_sign(session, settings=settings, operator=operator, public_key=public_key, actor=actor,
                             replaces=old))
        revoke(session, certificate=old, reason=RevocationReason.SUPERSEDED, actor=actor)
    return renewed


def _certificate_of(session: Session, operator: Operator, serial: str) -> Certificate:
    """One of the operator's certificates by serial (``NotFound`` for anyone else's)."""
    from kernel.errors import NotFound

    for cert in operator_certificates(session, operator):
        if cert.serial == serial.strip().lower():
            return cert
    raise NotFound(lazy_gettext("この操作者の指定された証明書はありません。"))


def revoke_operator_certificate(session: Session, *, operator: Operator, serial: str, actor: Actor,
                                reason: RevocationReason = RevocationReason.UNSPECIFIED) -> Certificate:
    """失効: one of the operator's certificates (``NotFound`` for anyone else's)."""
    from ca.revocation import revoke

    return revoke(session, certificate=_certificate_of(session, operator, serial), reason=reason, actor=actor)


def release_operator_certificate_hold(session: Session, *, operator: Operator, serial: str,
                                      actor: Actor) -> Certificate:
    """保留解除 (removeFromCRL) of one of the operator's certificates: whoever may put it on hold may release it.

    ``NotFound`` for anyone else's certificate, ``Conflict`` when it is not on hold; a revoked operator's
    certificates stay revoked (操作者失効 is final).
    """
    from ca.revocation import release_hold

    cert = _certificate_of(session, operator, serial)
    ensure_not_revoked(operator, refused=_("証明書の保留解除"))
    return release_hold(session, certificate=cert, actor=actor)


def revoke_all(session: Session, *, operator: Operator, actor: Actor,
               reason: RevocationReason) -> list[Certificate]:
    """Revoke every certificate of ``operator`` that is not revoked yet (held ones are released first)."""
    from ca.revocation import release_hold, revoke

    done = []
    for cert in operator_certificates(session, operator):
        if cert.revoked_at is not None:
            if cert.revocation_reason is not RevocationReason.CERTIFICATE_HOLD:
                continue
            release_hold(session, certificate=cert, actor=actor)
        done.append(revoke(session, certificate=cert, reason=reason, actor=actor))
    return done
