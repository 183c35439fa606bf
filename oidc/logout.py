"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0): ended opauth sessions end the business systems'.

When an opauth session ends — logout, session expiry, a certificate-bound session losing its certificate
(all through Flask-Login's ``logout_user``) — or every session of an operator ends at once (lock,
password change or reset, 操作者失効: the ``session_version`` bump), or the operator certificate a
biometric session was made with is revoked, a delivery row is written for each
business system the session signed into, in the same transaction.

A session that simply stops (the browser is closed; idle or absolute timeout with no later request)
is announced too: when a code is issued, a delivery is scheduled for the moment the session will have
ended if no request comes before; each request of the session moves it later (at most once a
minute, so the scheduled moment is never before the session's real end and at most a minute after).
``flask --app app oidc deliver-logouts`` (cron, or ``oidc logout-worker`` beside the web server)
posts the signed ``logout_token`` with a short timeout and retries with back-off; each attempt is
audited. The operator's own request never waits for a business system.
"""

from __future__ import annotations

import http.client
import secrets
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, current_app, request, session
from flask_login import current_user, user_logged_out
from joserfc import jwt
from sqlalchemy import event, func, inspect, select, update
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from ca.models import Certificate, CertificateProfile
from ca.validation import validate_chain
from db import new_session, utcnow
from kernel.audit import SYSTEM_ACTOR, AuditAction, AuditResult, record_event
from oidc.clients import client_id_for
from oidc.keys import signing_key
from oidc.models import OidcAuthorizationCode, OidcClient, OidcLogoutDelivery
from oidc.pairwise import pairwise_key, pairwise_sub, sector_for
from operators.models import BusinessSystem, Operator

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
SID_KEY = "oidc_sid"  # the opauth session's id towards business systems (set by the authorization endpoint)
# Sessions older than this cannot still be open at a business system through opauth (absolute timeouts).
SESSION_WINDOW = timedelta(hours=24)
MAX_ATTEMPTS = 8
TIMEOUT_SECONDS = 2.0
# A scheduled logout for a session that times out: moved later by the session's requests.
TIMED_OUT = "session_timeout"
DUE_KEY = "oidc_logout_due"  # (browser session) the moment the scheduled logouts of this sid are set for
RESCHEDULE_SLACK_SECONDS = 60


def _signed_in_systems(session: Session, *, sid: str | None = None, operator_pk: int | None = None,
                       since: datetime | None = None, system_id: int | None = None) -> list[tuple[int, int, str]]:
    """(business system, operator, sid) for each business system a session received tokens for."""
    query = select(OidcAuthorizationCode.business_system_id, OidcAuthorizationCode.operator_pk,
                   OidcAuthorizationCode.sid).where(OidcAuthorizationCode.used_at.is_not(None)).distinct()
    if sid is not None:
        query = query.where(OidcAuthorizationCode.sid == sid)
    if operator_pk is not None:
        query = query.where(OidcAuthorizationCode.operator_pk == operator_pk)
    if since is not None:
        query = query.where(OidcAuthorizationCode.created_at >= since)
    if system_id is not None:
        query = query.where(OidcAuthorizationCode.business_system_id == system_id)
    return [(system_id, op_pk, s) for system_id, op_pk, s in session.execute(query)]


def _pending(session: Session, *, sid: str, system_id: int) -> OidcLogoutDelivery | None:
    return session.scalar(select(OidcLogoutDelivery).where(
        OidcLogoutDelivery.sid == sid, OidcLogoutDelivery.business_system_id == system_id,
        OidcLogoutDelivery.delivered_at.is_(None), OidcLogoutDelivery.gave_up_at.is_(None)).limit(1))


def _told_since_last_sign_in(session: Session, *, sid: str, system_id: int) -> bool:
    """True when the system was already sent this session's logout after its last token exchange."""
    last_signed_in = session.scalar(select(func.max(OidcAuthorizationCode.used_at)).where(
        OidcAuthorizationCode.sid == sid, OidcAuthorizationCode.business_system_id == system_id))
    last_told = session.scalar(select(func.max(OidcLogoutDelivery.delivered_at)).where(
        OidcLogoutDelivery.sid == sid, OidcLogoutDelivery.business_system_id == system_id))
    return last_told is not None and (last_signed_in is None or last_told >= last_signed_in)


def _enqueue(session: Session, targets: list[tuple[int, int, str]], reason: str) -> int:
    count = 0
    now = utcnow()
    for system_id, operator_pk, sid in targets:
        client = session.get(OidcClient, system_id)
        if client is None or not client.backchannel_logout_uri:
            continue
        pending = _pending(session, sid=sid, system_id=system_id)
        if pending is None and _told_since_last_sign_in(session, sid=sid, system_id=system_id):
            continue  # e.g. its timeout was announced; the browser's next request only confirms it
        if pending is None:
            session.add(OidcLogoutDelivery(business_system_id=system_id, operator_pk=operator_pk, sid=sid,
                                           reason=reason, next_attempt_at=now))
            count += 1
        elif pending.reason == TIMED_OUT and pending.attempts == 0:
            pending.reason, pending.next_attempt_at = reason, now  # the session ended before its timeout
            count += 1
    return count


def session_end_bound(now: int) -> int | None:
    """The moment (epoch seconds) the current browser session ends unless another request comes first.

    Never earlier than ``operators.login.auth`` refuses the session (idle: SESSION_IDLE_MINUTES after the
    last request; absolute: SESSION_ABSOLUTE_MINUTES after the login); None without a login time.
    """
    auth_at = session.get("auth_at")
    if not isinstance(auth_at, int):
        return None
    idle = int(current_app.config["SESSION_IDLE_MINUTES"]) * 60
    absolute = int(current_app.config["SESSION_ABSOLUTE_MINUTES"]) * 60
    return min(now + idle, auth_at + absolute) + 1


def _scheduled_moment(now: int) -> int | None:
    bound = session_end_bound(now)
    if bound is None:
        return None
    auth_at = int(session["auth_at"])
    absolute = int(current_app.config["SESSION_ABSOLUTE_MINUTES"]) * 60
    return min(bound + RESCHEDULE_SLACK_SECONDS, auth_at + absolute + 1)


def schedule_timeout_logout(db_session: Session, *, system_id: int, operator_pk: int, sid: str) -> None:
    """In the authorization request of the browser session ``sid``: owe ``system_id`` a logout token at the
    moment this session will have ended if no other request comes (moved later by its requests)."""
    client = db_session.get(OidcClient, system_id)
    moment = _scheduled_moment(int(time.time()))
    if client is None or not client.backchannel_logout_uri or moment is None:
        return
    due = datetime.fromtimestamp(moment, tz=UTC)
    pending = _pending(db_session, sid=sid, system_id=system_id)
    if pending is None:
        db_session.add(OidcLogoutDelivery(business_system_id=system_id, operator_pk=operator_pk, sid=sid,
                                          reason=TIMED_OUT, next_attempt_at=due))
    elif pending.reason == TIMED_OUT and pending.next_attempt_at < due:
        pending.next_attempt_at = due
    known = session.get(DUE_KEY)
    session[DUE_KEY] = min(known, moment) if isinstance(known, int) else moment


def _keep_scheduled_logouts_due() -> None:
    """Before each request of a session that signed in to business systems: its request is activity, so the
    scheduled timeout logouts move later once they would otherwise fall before the session's new end."""
    if request.endpoint == "static" or not current_user.is_authenticated:
        return
    sid, known = session.get(SID_KEY), session.get(DUE_KEY)
    if not isinstance(sid, str) or not isinstance(known, int):
        return
    now = int(time.time())
    bound = session_end_bound(now)
    if bound is None or known >= bound:
        return
    moment = _scheduled_moment(now)
    assert moment is not None
    db_session = new_session()  # its own short transaction, before the view opens any
    try:
        db_session.execute(update(OidcLogoutDelivery).where(
            OidcLogoutDelivery.sid == sid, OidcLogoutDelivery.reason == TIMED_OUT,
            OidcLogoutDelivery.attempts == 0, OidcLogoutDelivery.delivered_at.is_(None),
            OidcLogoutDelivery.gave_up_at.is_(None)).values(next_attempt_at=datetime.fromtimestamp(moment, tz=UTC)))
        db_session.commit()
    finally:
        db_session.close()
    session[DUE_KEY] = moment


def enqueue_session_logout(session: Session, *, sid: str, reason: str) -> int:
    """Owe a logout token to every business system that session ``sid`` signed into; returns how many."""
    return _enqueue(session, _signed_in_systems(session, sid=sid), reason)


def enqueue_operator_logout(session: Session, *, operator_pk: int, reason: str) -> int:
    """Owe logout tokens for every recent session of an operator (all their sessions just ended)."""
    with session.no_autoflush:
        targets = _signed_in_systems(session, operator_pk=operator_pk, since=utcnow() - SESSION_WINDOW)
        return _enqueue(session, targets, reason)


def enqueue_certificate_logout(session: Session, *, fingerprint_sha256: str) -> int:
    """Owe logout tokens for the sessions logged in with this operator certificate (it was just revoked)."""
    with session.no_autoflush:
        query = (select(OidcAuthorizationCode.business_system_id, OidcAuthorizationCode.operator_pk,
                        OidcAuthorizationCode.sid)
                 .where(OidcAuthorizationCode.used_at.is_not(None),
                        OidcAuthorizationCode.operator_cert_sha256 == fingerprint_sha256,
                        OidcAuthorizationCode.created_at >= utcnow() - SESSION_WINDOW).distinct())
        targets = [(system_id, op_pk, sid) for system_id, op_pk, sid in session.execute(query)]
        return _enqueue(session, targets, "certificate_revoked")


def _on_flush(session: Session, _context: Any, _instances: Any) -> None:
    """Sessions end when an operator's ``session_version`` changes or the operator certificate a biometric
    session was bound to is revoked: owe the business systems a logout, in the same transaction."""
    for obj in list(session.dirty):
        if isinstance(obj, Operator) and inspect(obj).attrs.session_version.history.has_changes():
            enqueue_operator_logout(session, operator_pk=obj.id, reason="sessions_ended")
        elif (isinstance(obj, Certificate) and obj.profile is CertificateProfile.OPERATOR
              and obj.revoked_at is not None and inspect(obj).attrs.revoked_at.history.has_changes()):
            enqueue_certificate_logout(session, fingerprint_sha256=obj.fingerprint_sha256)


def _on_logged_out(_app: Flask, **_extra: Any) -> None:
    """Flask-Login logged the browser out (logout, expiry, lost certificate): its sid's logouts are owed."""
    sid = session.get(SID_KEY)
    if not isinstance(sid, str) or not sid:
        return
    db_session = new_session()  # its own transaction: the view may or may not commit after logging out
    try:
        if enqueue_session_logout(db_session, sid=sid, reason="logout"):
            db_session.commit()
    finally:
        db_session.close()


# --- delivery ----------------------------------------------------------------------------------------------

def logout_token(db_session: Session, settings: CaSettings, *, issuer: str, system: BusinessSystem,
                 delivery: OidcLogoutDelivery) -> str:
    """The signed ``logout_token``: pairwise ``sub`` and ``sid`` of the ended session, no ``nonce``."""
    now = int(time.time())
    claims = {"iss": issuer, "aud": client_id_for(system), "iat": now, "exp": now + 120,
              "jti": secrets.token_urlsafe(24), "sid": delivery.sid,
              "sub": pairwise_sub(pairwise_key(settings.instance_dir), sector=sector_for(system.business_id),
                                  operator_pk=delivery.operator_pk),
              "events": {LOGOUT_EVENT: {}}}
    key = signing_key(db_session, settings)
    return jwt.encode({"alg": "ES256", "typ": "logout+jwt", "kid": key.kid or ""}, claims, key)


def _post(uri: str, token: str, *, ca_bundle: Path, timeout: float,
          judge: Callable[[bytes], str | None] = lambda _der: None) -> str | None:
    """POST the token; None on 200/204, else why it failed.

    ``judge`` sees the server's certificate (DER) after the handshake and before anything is sent: a reason
    (a revoked certificate of opauth's own, say) keeps the token from going.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "https" or not parts.hostname:  # registered URIs are https (oidc.clients); never file:
        return "the back-channel logout URI is not https"
    context = ssl.create_default_context()
    if ca_bundle.exists():
        context.load_verify_locations(cafile=str(ca_bundle))  # business servers may use opauth's certificates
    body = urllib.parse.urlencode({"logout_token": token}).encode()
    # http.client, not urllib: the certificate is judged between the handshake and the request, and a
    # redirect is never followed (a logout token goes to the registered URI only).
    connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context)
    try:
        connection.connect()
        refused = judge(connection.sock.getpeercert(binary_form=True) or b"")
        if refused:
            return f"the business system's server certificate is refused: {refused}"[:400]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", target, body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cache-Control": "no-store"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return f"unreachable: {getattr(exc, 'reason', None) or exc}"[:400]
    finally:
        connection.close()
    return None if status in (200, 204) else f"answered HTTP {status}"


def _server_certificate_judge(db_session: Session, settings: CaSettings) -> Callable[[bytes], str | None]:
    """A certificate opauth issued is judged by the database (revoked or held: refused at once, as the
    mutual-TLS enforcement point does); one from another CA has passed the TLS library's chain check."""
    def judge(der: bytes) -> str | None:
        result = validate_chain(db_session, settings, leaf_der=der, required_eku={"server_auth"}, key_usage=set())
        if result.valid or result.reason == "untrusted":
            return None
        return f"{result.reason}: {result.message}"
    return judge


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery attempt did."""

    delivery_id: int
    business_id: str
    delivered: bool
    error: str
    skipped: bool = False  # a scheduled timeout logout for a system that never received tokens


def deliver(db_session: Session, settings: CaSettings, delivery: OidcLogoutDelivery, *, issuer: str,
            timeout: float = TIMEOUT_SECONDS, now: datetime | None = None) -> DeliveryResult:
    """Attempt one delivery; record the outcome (and the next attempt, with back-off) and audit it."""
    now = now or utcnow()
    system = db_session.get(BusinessSystem, delivery.business_system_id)
    client = db_session.get(OidcClient, delivery.business_system_id)
    if delivery.reason == TIMED_OUT and delivery.attempts == 0 and not _signed_in_systems(
            db_session, sid=delivery.sid, system_id=delivery.business_system_id):
        # scheduled when a code was issued, but the business system never exchanged it: nothing to end there
        delivery.gave_up_at = now
        delivery.last_error = "the session received no tokens for this business system"
        return DeliveryResult(delivery.id, system.business_id if system else "", False, "", skipped=True)
    delivery.attempts += 1
    if system is None or client is None or not client.backchannel_logout_uri:
        error: str | None = "the business system no longer has a back-channel logout URI"
        delivery.gave_up_at = now
    else:
        token = logout_token(db_session, settings, issuer=issuer, system=system, delivery=delivery)
        error = _post(client.backchannel_logout_uri, token, ca_bundle=settings.instance_dir / "tls" / "ca-bundle.pem",
                      timeout=timeout, judge=_server_certificate_judge(db_session, settings))
    target = f"business_system:{system.business_id if system else delivery.business_system_id}"
    if error is None:
        delivery.delivered_at = now
        delivery.last_error = ""
        record_event(db_session, action=AuditAction.OIDC_LOGOUT_SENT, actor=SYSTEM_ACTOR, target=target,
                     detail={"delivery": delivery.id, "sid": delivery.sid, "attempt": delivery.attempts,
                             "reason": delivery.reason})
    else:
        delivery.last_error = error
        if delivery.attempts >= MAX_ATTEMPTS:
            delivery.gave_up_at = now
        delivery.next_attempt_at = now + timedelta(minutes=2 ** min(delivery.attempts, 10))
        record_event(db_session, action=AuditAction.OIDC_LOGOUT_FAILED, actor=SYSTEM_ACTOR,
                     result=AuditResult.FAILURE, target=target,
                     detail={"delivery": delivery.id, "sid": delivery.sid, "attempt": delivery.attempts,
                             "reason": delivery.reason, "error": error, "gave_up": delivery.gave_up_at is not None})
    return DeliveryResult(delivery.id, system.business_id if system else "", error is None, error or "")


def due_deliveries(db_session: Session, *, now: datetime | None = None, limit: int = 200) -> list[int]:
    """Ids of deliveries whose next attempt is due."""
    now = now or utcnow()
    return list(db_session.scalars(select(OidcLogoutDelivery.id).where(
        OidcLogoutDelivery.delivered_at.is_(None), OidcLogoutDelivery.gave_up_at.is_(None),
        OidcLogoutDelivery.next_attempt_at <= now).order_by(OidcLogoutDelivery.id).limit(limit)))


CLAIM_SECONDS = 60


def claim(db_session: Session, delivery_id: int, *, now: datetime | None = None) -> OidcLogoutDelivery | None:
    """Take a due delivery for this process (committed): another sender running at the same time skips it."""
    now = now or utcnow()
    taken = db_session.execute(update(OidcLogoutDelivery).where(
        OidcLogoutDelivery.id == delivery_id, OidcLogoutDelivery.delivered_at.is_(None),
        OidcLogoutDelivery.gave_up_at.is_(None), OidcLogoutDelivery.next_attempt_at <= now)
        .values(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
        .execution_options(synchronize_session=False))
    db_session.commit()
    if getattr(taken, "rowcount", 0) != 1:
        return None
    delivery = db_session.get(OidcLogoutDelivery, delivery_id, populate_existing=True)
    return delivery


@dataclass(frozen=True)
class RoundReport:
    """What one round of deliveries did."""

    sent: int
    failed: list[DeliveryResult]


def deliver_due(db_session: Session, settings: CaSettings, *, issuer: str,
                timeout: float = TIMEOUT_SECONDS) -> RoundReport:
    """Send every due logout token, one commit per delivery (a later failure never undoes an earlier success)."""
    sent, failed = 0, []
    for delivery_id in due_deliveries(db_session):
        delivery = claim(db_session, delivery_id)
        if delivery is None:
            continue
        result = deliver(db_session, settings, delivery, issuer=issuer, timeout=timeout)
        db_session.commit()
        if result.delivered:
            sent += 1
        elif not result.skipped:
            failed.append(result)
    return RoundReport(sent, failed)


def init_app(app: Flask) -> None:
    """Listen for the ends of sessions (Flask-Login's logout and the session_version bump)."""
    user_logged_out.connect(_on_logged_out, app)
    app.before_request(_keep_scheduled_logouts_due)  # after operators.login.auth has ended expired sessions
    if not event.contains(Session, "before_flush", _on_flush):
        event.listen(Session, "before_flush", _on_flush)


def issuer_of(app_config: Any) -> str:
    """The issuer for an app's configuration (also outside a request)."""
    return str(app_config["PUBLIC_BASE_URL"]).rstrip("/") + "/oidc"
