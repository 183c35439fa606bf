"""失効: revoking certificates (RFC 5280 reasons), releasing a certificateHold.

``revoke`` and ``release_hold`` change the certificate row and record the audit
entry in the caller's transaction; like every service they never commit.
certificateHold is the only reversible reason: releasing it is what RFC 5280
calls removeFromCRL (the entry simply disappears from the next full CRL).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask_babel import lazy_gettext
from sqlalchemy.orm import Session

from ca.authority import CaSettings, authorities
from ca.crl import bump_status_version, current_crl
from ca.inquiry import get_certificate
from ca.labels import reason_label
from ca.models import Certificate, CertificateProfile, RevocationReason
from ca.ocsp import ensure_responder, presign, stale_responses
from ca.publishing import note, publish_now
from db import utcnow
from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import Conflict, InvalidInput

# RFC 5280 5.3.1: removeFromCRL is not a revocation reason a certificate keeps; it is how a
# CRL (or our API/CLI) says "the hold is released".
REMOVE_FROM_CRL = "removeFromCRL"

# An invalidity date may lie in the past, never in the future (a little clock skew is tolerated).
_FUTURE_SKEW = timedelta(minutes=5)


def parse_reason(name: object) -> RevocationReason | None:
    """The reason named ``name`` (RFC 5280 spelling); None means removeFromCRL (release a hold)."""
    if name == REMOVE_FROM_CRL:
        return None
    try:
        if not isinstance(name, str):
            raise ValueError(name)
        return RevocationReason(name)
    except ValueError:
        allowed = ", ".join([*(r.value for r in RevocationReason), REMOVE_FROM_CRL])
        raise InvalidInput(lazy_gettext("失効理由 (reason) は次のいずれかです: %(allowed)s", allowed=allowed)) from None


def parse_invalidity_date(value: object) -> datetime | None:
    """An ISO 8601 date-time with time zone (``2026-11-25T09:00:00Z``), or None when absent/empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(lazy_gettext(
            "失効原因発生日時 (invalidity_date) は ISO 8601 の日時文字列で指定してください。"))
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(lazy_gettext(
            "失効原因発生日時 (invalidity_date) は 2026-11-25T09:00:00Z のような"
            " ISO 8601 の日時で指定してください。")) from None
    if moment.tzinfo is None:
        raise InvalidInput(lazy_gettext(
            "失効原因発生日時 (invalidity_date) にはタイムゾーンが必要です（例: 2026-11-25T09:00:00Z）。"))
    return moment


def revoke(
    session: Session,
    *,
    certificate: Certificate,
    reason: RevocationReason,
    actor: Actor,
    invalidity_date: datetime | None = None,
) -> Certificate:
    """Revoke ``certificate`` now with ``reason``; ``Conflict`` if it is already revoked.

    The one allowed change of a revoked certificate: a certificateHold may be made
    final with any other reason (RFC 5280 3.3). Holding a held certificate again, or
    revoking a finally revoked one, is a ``Conflict`` and changes nothing.
    """
    held = certificate.revocation_reason is RevocationReason.CERTIFICATE_HOLD
    if certificate.revoked_at is not None and (not held or reason is RevocationReason.CERTIFICATE_HOLD):
        since = certificate.revoked_at.strftime("%Y-%m-%d %H:%M:%S")
        if held:
            raise Conflict(lazy_gettext("証明書 %(serial)s は既に保留中です（%(at)s UTC）。",
                                        serial=certificate.serial, at=since))
        raise Conflict(lazy_gettext("証明書 %(serial)s は既に失効しています（%(reason)s、%(at)s UTC）。",
                                    serial=certificate.serial, reason=reason_label(certificate.revocation_reason),
                                    at=since))
    was_held_since = certificate.revoked_at
    if certificate.profile is CertificateProfile.ROOT_CA:
        raise Conflict(lazy_gettext("ルートCA証明書は失効できません。信頼ストアから削除してください。"))
    now = utcnow()
    if invalidity_date is not None:
        if invalidity_date.tzinfo is None:
            raise InvalidInput(lazy_gettext(
                "失効原因発生日時 (invalidity_date) にはタイムゾーンが必要です（例: 2026-11-25T09:00:00Z）。"))
        if invalidity_date > now + _FUTURE_SKEW:
            raise InvalidInput(lazy_gettext("失効原因発生日時 (invalidity_date) に未来の日時は指定できません。"))
    if reason is RevocationReason.CERTIFICATE_HOLD and invalidity_date is not None:
        raise InvalidInput(lazy_gettext(
            "certificateHold（保留）には失効原因発生日時 (invalidity_date) を指定できません。"))
    certificate.revoked_at = now.replace(microsecond=0)  # CRLs and OCSP carry whole seconds
    certificate.revocation_reason = reason
    certificate.invalidity_date = invalidity_date.astimezone(UTC).replace(microsecond=0) if invalidity_date else None
    _status_changed(session, certificate)
    record_event(session, action=AuditAction.CERTIFICATE_REVOKED, actor=actor,
                 target=f"certificate:{certificate.serial}",
                 detail={"reason": reason.value, "profile": str(certificate.profile),
                         "subject": certificate.subject,
                         "held_since": was_held_since.isoformat() if was_held_since else None,
                         "invalidity_date": certificate.invalidity_date.isoformat()
                         if certificate.invalidity_date else None})
    return certificate


def release_hold(session: Session, *, certificate: Certificate, actor: Actor) -> Certificate:
    """Release a certificateHold (removeFromCRL): the certificate is good again."""
    if certificate.revoked_at is None or certificate.revocation_reason is not RevocationReason.CERTIFICATE_HOLD:
        if certificate.revoked_at is None:
            raise Conflict(lazy_gettext("証明書 %(serial)s は保留中ではありません（失効していません）。",
                                        serial=certificate.serial))
        raise Conflict(lazy_gettext("証明書 %(serial)s は保留中ではありません（%(reason)s で失効済みです）。",
                                    serial=certificate.serial, reason=reason_label(certificate.revocation_reason)))
    held_since = certificate.revoked_at
    certificate.revoked_at = None
    certificate.revocation_reason = None
    certificate.invalidity_date = None
    _status_changed(session, certificate)
    record_event(session, action=AuditAction.CERTIFICATE_HOLD_RELEASED, actor=actor,
                 target=f"certificate:{certificate.serial}",
                 detail={"reason": REMOVE_FROM_CRL, "held_since": held_since.isoformat()})
    return certificate


def revoke_by_serial(
    session: Session,
    *,
    serial: str,
    reason: RevocationReason | None,
    actor: Actor,
    invalidity_date: datetime | None = None,
) -> Certificate:
    """Find the certificate by hex serial (``NotFound`` otherwise) and revoke it.

    ``reason=None`` stands for removeFromCRL and releases a hold.
    """
    certificate = get_certificate(session, serial=serial)
    if reason is None:
        if invalidity_date is not None:
            raise InvalidInput(lazy_gettext(
                "removeFromCRL（保留解除）には失効原因発生日時 (invalidity_date) を指定できません。"))
        return release_hold(session, certificate=certificate, actor=actor)
    return revoke(session, certificate=certificate, reason=reason, actor=actor, invalidity_date=invalidity_date)


def _status_changed(session: Session, certificate: Certificate) -> None:
    """Flush the new status, mark the CA's CRL out of date and, in an app, have it republished after commit.

    So every status change (the operator modules revoke through here too) reaches the CRL and the
    stored OCSP answers right after its commit, outside the request; a script without an app
    leaves that to the worker or the next CRL fetch.
    """
    session.flush()
    bump_status_version(session, certificate.authority_id)
    note(session, authority_id=certificate.authority_id, certificate_id=certificate.id)


def publish(session: Session, settings: CaSettings, certificate: Certificate) -> None:
    """After a status change: the CA's next CRL and the certificate's OCSP responses.

    In an app every status change is already republished after its commit (``_status_changed``,
    ``ca/publishing.py``: in the background in a web process), so this adds nothing there; a script
    without an app gets them signed here, in its own transaction. Not required for correctness:
    validation and OCSP read the status from the database.
    """
    if not note(session, authority_id=certificate.authority_id, certificate_id=certificate.id):
        publish_now(session, settings, authority_ids={certificate.authority_id}, certificate_ids={certificate.id})


@dataclass(frozen=True)
class RefreshReport:
    """What ``refresh`` re-signed."""

    crls: tuple[tuple[int, int], ...]  # (authority id, CRL number) of each CA's current CRL
    responders: tuple[tuple[int, str], ...]  # (authority id, serial) of each CA's OCSP signing certificate
    ocsp_resigned: int


def refresh(session: Session, settings: CaSettings) -> RefreshReport:
    """The scheduled refresh (cron): renew responders, re-sign CRLs and OCSP responses that are due."""
    crls = []
    responders = []
    for authority in authorities(session):
        if not authority.active:
            continue
        responder = ensure_responder(session, settings, authority)
        responders.append((authority.id, format(responder.certificate.serial_number, "x")))
        crls.append((authority.id, current_crl(session, settings, authority).number))
    due = stale_responses(session, settings)
    for certificate_id in due:
        certificate = session.get(Certificate, certificate_id)
        if certificate is not None:
            presign(session, settings, certificate)
    return RefreshReport(crls=tuple(crls), responders=tuple(responders), ocsp_resigned=len(due))
