"""生体情報登録・削除 and biometric login: the rules around the WebAuthn ceremonies.

Services take the session and never commit. Challenges are kept server-side,
single use and short-lived; the caller commits after failures too, so a spent
challenge stays spent and failures count towards the operator's lock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, cast

from flask_babel import gettext as _
from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from bio.models import ChallengePurpose, EnrolmentCode, WebAuthnChallenge, WebAuthnCredential, WebAuthnUser
from bio.webauthn import (
    KnownCredential,
    RelyingParty,
    WebAuthnFailure,
    authentication_options,
    credential_id_of,
    registration_options,
    verify_assertion,
    verify_registration,
)
from db import utcnow
from kernel.audit import Actor, AuditAction, AuditResult, record_event
from kernel.errors import Conflict, NotFound
from operators.login.models import LoginMethod, OperatorLoginState
from operators.login.service import (
    LoginRefusal,
    LoginResult,
    LoginSettings,
    find_operator,
    note_source_failure,
    precheck,
    record_failure,
    record_success,
    record_unknown,
)
from operators.models import AuthMethod, Operator
from operators.operator_certs import ensure_not_revoked
from operators.registration import on_operator_revoked

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed at a terminal
CODE_LENGTH = 12


@dataclass(frozen=True)
class Ceremony:
    """Options for the browser and the id of the server-side challenge (kept in the Flask session)."""

    challenge_id: int | None
    options_json: str


def _target(operator: Operator) -> str:
    return f"operator:{operator.tenant.code}/{operator.operator_id}"


def user_handle(session: Session, operator: Operator) -> bytes:
    """The operator's random WebAuthn user handle, created on first enrolment."""
    row = session.get(WebAuthnUser, operator.id)
    if row is None:
        row = WebAuthnUser(operator_pk=operator.id, user_handle=secrets.token_bytes(32))
        session.add(row)
        session.flush()
    return row.user_handle


# The statements of a login, built once (a login runs each of them; building one costs as much as running it).
_CREDENTIALS_OF = (select(WebAuthnCredential).where(WebAuthnCredential.operator_pk == bindparam("operator_pk"))
                   .order_by(WebAuthnCredential.id))
_CREDENTIAL = select(WebAuthnCredential).where(WebAuthnCredential.operator_pk == bindparam("operator_pk"),
                                               WebAuthnCredential.credential_id == bindparam("credential_id"))
_CHALLENGES = cast(Table, WebAuthnChallenge.__table__)
_INSERT_CHALLENGE = insert(_CHALLENGES).returning(_CHALLENGES.c.id)
_DELETE_STALE = delete(_CHALLENGES).where(_CHALLENGES.c.expires_at < bindparam("stale_before"))
# One statement spends the challenge and reads back what the verification needs (RETURNING: SQLite >= 3.35
# and PostgreSQL); a plain statement on the table, so no ORM object is made or synchronised.
_SPEND = (update(_CHALLENGES)
          .where(_CHALLENGES.c.id == bindparam("challenge_id"), _CHALLENGES.c.purpose == bindparam("wanted_purpose"),
                 _CHALLENGES.c.used_at.is_(None), _CHALLENGES.c.expires_at > bindparam("now"))
          .values(used_at=bindparam("now")).returning(_CHALLENGES.c.operator_pk, _CHALLENGES.c.challenge))
_CREDENTIALS = cast(Table, WebAuthnCredential.__table__)
_COUNTED = (update(_CREDENTIALS).where(_CREDENTIALS.c.id == bindparam("credential_pk"))
            .values(sign_count=bindparam("new_count"), last_used_at=bindparam("used_at")))
# The operator a login challenge names, with its tenant (the audit target names it).
_CHALLENGE_OPERATOR = (select(Operator).join(WebAuthnChallenge, WebAuthnChallenge.operator_pk == Operator.id)
                       .where(WebAuthnChallenge.id == bindparam("challenge_id"),
                              WebAuthnChallenge.purpose == ChallengePurpose.AUTHENTICATION)
                       .options(joinedload(Operator.tenant)))


def credentials_of(session: Session, operator: Operator) -> list[WebAuthnCredential]:
    return list(session.scalars(_CREDENTIALS_OF, {"operator_pk": operator.id}))


def credential_counts(session: Session, operator_pks: list[int]) -> dict[int, int]:
    """How many credentials each operator has (for lists)."""
    if not operator_pks:
        return {}
    rows = session.execute(select(WebAuthnCredential.operator_pk, func.count())
                           .where(WebAuthnCredential.operator_pk.in_(operator_pks))
                           .group_by(WebAuthnCredential.operator_pk))
    return {pk: count for pk, count in rows}


def _known(creds: list[WebAuthnCredential]) -> list[KnownCredential]:
    return [KnownCredential(c.credential_id, tuple(c.transports or ())) for c in creds]


STALE_AFTER = timedelta(hours=1)


def _store_challenge(session: Session, *, operator: Operator, purpose: ChallengePurpose, challenge: bytes,
                     rp: RelyingParty) -> int:
    now = utcnow()
    # Spent and expired challenges are worthless; keep the table small (indexed on expires_at).
    session.execute(_DELETE_STALE, {"stale_before": now - STALE_AFTER})
    # A plain INSERT ... RETURNING: the row is not needed as an object, only its id for the Flask session.
    challenge_id: int = session.execute(_INSERT_CHALLENGE, {
        "challenge": challenge, "purpose": purpose, "operator_pk": operator.id, "created_at": now,
        "expires_at": now + timedelta(seconds=rp.challenge_seconds)}).scalar_one()
    return challenge_id


class SpentChallenge(Protocol):
    """What a spent challenge tells the verification: whose it was and its bytes."""

    operator_pk: int
    challenge: bytes


def consume_challenge(session: Session, *, challenge_id: Any, purpose: ChallengePurpose) -> SpentChallenge:
    """Spend a challenge: it must exist, have this purpose, be unused and unexpired. Atomic (one UPDATE)."""
    if not isinstance(challenge_id, int):
        raise WebAuthnFailure("no ceremony in progress: start again")
    row = session.execute(_SPEND, {"challenge_id": challenge_id, "wanted_purpose": purpose, "now": utcnow()}).first()
    if row is None:
        raise WebAuthnFailure("the challenge was already used or has expired: start again")
    return cast(SpentChallenge, row)


# --- enrolment -----------------------------------------------------------------------------------

def begin_registration(session: Session, *, operator: Operator, rp: RelyingParty) -> Ceremony:
    """Start enrolling a credential for ``operator`` (existing credentials are excluded)."""
    ensure_not_revoked(operator, refused=_("生体情報の登録"))
    options = registration_options(rp=rp, user_handle=user_handle(session, operator),
                                   user_name=f"{operator.operator_id}@{operator.tenant.code}",
                                   display_name=operator.name, exclude=_known(credentials_of(session, operator)))
    challenge_id = _store_challenge(session, operator=operator, purpose=ChallengePurpose.REGISTRATION,
                                    challenge=options.challenge, rp=rp)
    return Ceremony(challenge_id, options.options_json)


def finish_registration(session: Session, *, operator: Operator, challenge_id: Any, credential: Any,
                        nickname: str, rp: RelyingParty, actor: Actor) -> WebAuthnCredential:
    """Verify the attestation against the spent challenge and store the credential; audited."""
    ensure_not_revoked(operator, refused=_("生体情報の登録"))
    challenge = consume_challenge(session, challenge_id=challenge_id, purpose=ChallengePurpose.REGISTRATION)
    if challenge.operator_pk != operator.id:
        raise WebAuthnFailure("the challenge belongs to another enrolment: start again")
    verified = verify_registration(rp=rp, credential=credential, expected_challenge=challenge.challenge)
    if session.scalar(select(WebAuthnCredential.id)
                      .where(WebAuthnCredential.credential_id == verified.credential_id)) is not None:
        raise Conflict(_("この認証器の生体情報は既に登録されています。"))
    row = WebAuthnCredential(operator_pk=operator.id, credential_id=verified.credential_id,
                             public_key=verified.public_key, sign_count=verified.sign_count,
                             transports=list(verified.transports), aaguid=verified.aaguid,
                             attestation_format=verified.attestation_format,
                             nickname=nickname.replace("\x00", "").strip()[:100] or "生体認証",
                             created_at=utcnow())
    session.add(row)
    session.flush()
    record_event(session, action=AuditAction.BIO_ENROLLED, actor=actor, target=_target(operator),
                 detail={"credential": row.id, "aaguid": row.aaguid, "format": row.attestation_format,
                         "nickname": row.nickname})
    return row


def record_enrolment_failure(session: Session, *, operator: Operator | None, actor: Actor, reason: str) -> None:
    record_event(session, action=AuditAction.BIO_ENROLMENT_FAILED, actor=actor, result=AuditResult.FAILURE,
                 target=_target(operator) if operator else "", detail={"reason": reason[:300]})


def get_credential(session: Session, *, operator: Operator, credential_pk: int) -> WebAuthnCredential:
    row = session.scalar(select(WebAuthnCredential).where(WebAuthnCredential.id == credential_pk,
                                                          WebAuthnCredential.operator_pk == operator.id))
    if row is None:
        raise NotFound(_("このオペレータにその生体情報はありません。"))
    return row


def delete_credential(session: Session, *, operator: Operator, credential_pk: int, actor: Actor) -> None:
    """生体認証情報削除: the credential can no longer log in; audited."""
    row = get_credential(session, operator=operator, credential_pk=credential_pk)
    record_event(session, action=AuditAction.BIO_CREDENTIAL_DELETED, actor=actor, target=_target(operator),
                 detail={"credential": row.id, "nickname": row.nickname, "aaguid": row.aaguid})
    session.delete(row)
    session.flush()


# --- enrolment codes -----------------------------------------------------------------------------

def _code_digest(code: str) -> str:
    normalised = "".join(ch for ch in code.upper() if ch.isalnum())
    return hashlib.sha256(normalised.encode()).hexdigest()


def issue_enrolment_code(session: Session, *, operator: Operator, issued_by: Operator, minutes: int,
                         actor: Actor) -> tuple[str, EnrolmentCode]:
    """A single-use code (shown once; only its hash is kept) letting ``operator`` enrol at a terminal."""
    ensure_not_revoked(operator, refused=_("生体情報登録コードの発行"))
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    code = "-".join(raw[i:i + 4] for i in range(0, CODE_LENGTH, 4))
    now = utcnow()
    row = EnrolmentCode(code_sha256=_code_digest(code), operator_pk=operator.id, issued_by_pk=issued_by.id,
                        created_at=now, expires_at=now + timedelta(minutes=minutes))
    session.add(row)
    session.flush()
    record_event(session, action=AuditAction.BIO_ENROLMENT_CODE_ISSUED, actor=actor, target=_target(operator),
                 detail={"code": row.id, "expires_at": row.expires_at.isoformat()})
    return code, row


def record_enrolment_code_refusal(session: Session, *, operator: Operator, actor: Actor, reason: str) -> None:
    """Audit a refused 登録コード発行 (e.g. for a revoked operator)."""
    record_event(session, action=AuditAction.BIO_ENROLMENT_CODE_ISSUED, actor=actor, result=AuditResult.FAILURE,
                 target=_target(operator), detail={"reason": reason[:300]})


def redeem_enrolment_code(session: Session, *, tenant_code: str, operator_id: str, code: str,
                          actor: Actor) -> Operator:
    """Spend the code if it was issued for this operator and is unused and unexpired; audited either way."""
    operator = find_operator(session, tenant_code=tenant_code, operator_id=operator_id)
    now = utcnow()
    if operator is not None and operator.revoked_at is None:
        spent = session.execute(update(EnrolmentCode)
                                .where(EnrolmentCode.code_sha256 == _code_digest(code),
                                       EnrolmentCode.operator_pk == operator.id,
                                       EnrolmentCode.used_at.is_(None), EnrolmentCode.expires_at > now)
                                .values(used_at=now))
        if getattr(spent, "rowcount", 0) == 1:
            record_event(session, action=AuditAction.BIO_ENROLMENT_CODE_REDEEMED, actor=actor,
                         target=_target(operator))
            return operator
    record_event(session, action=AuditAction.BIO_ENROLMENT_CODE_REDEEMED, actor=actor, result=AuditResult.FAILURE,
                 target=f"operator:{tenant_code[:20]}/{operator_id[:64]}", detail={"reason": "invalid code"})
    raise WebAuthnFailure("the enrolment code is wrong, used or expired")


# --- login ---------------------------------------------------------------------------------------

def _decoy_options(rp: RelyingParty, *, secret: bytes, tenant_code: str, operator_id: str) -> Ceremony:
    """Options for an operator who cannot log in biometrically, indistinguishable from real ones."""
    fake_id = hmac.new(secret, f"{tenant_code}\0{operator_id}".encode(), hashlib.sha256).digest()
    options = authentication_options(rp=rp, allow=[KnownCredential(fake_id, ("internal",))])
    return Ceremony(None, options.options_json)


def begin_login(session: Session, *, tenant_code: str, operator_id: str, rp: RelyingParty,
                decoy_secret: bytes) -> Ceremony:
    """Options for the operator's credentials; the same shape whether or not the operator may log in."""
    operator = find_operator(session, tenant_code=tenant_code, operator_id=operator_id)
    creds = credentials_of(session, operator) if operator is not None else []
    if operator is None or operator.auth_method is not AuthMethod.BIOMETRIC or not creds:
        return _decoy_options(rp, secret=decoy_secret, tenant_code=tenant_code, operator_id=operator_id)
    options = authentication_options(rp=rp, allow=_known(creds))
    challenge_id = _store_challenge(session, operator=operator, purpose=ChallengePurpose.AUTHENTICATION,
                                    challenge=options.challenge, rp=rp)
    return Ceremony(challenge_id, options.options_json)


def begin_reauth(session: Session, *, operator: Operator, rp: RelyingParty) -> Ceremony:
    """Options to re-authenticate the logged-in biometric operator."""
    creds = credentials_of(session, operator)
    if not creds:
        raise WebAuthnFailure("no biometric credential is registered for you")
    options = authentication_options(rp=rp, allow=_known(creds))
    challenge_id = _store_challenge(session, operator=operator, purpose=ChallengePurpose.AUTHENTICATION,
                                    challenge=options.challenge, rp=rp)
    return Ceremony(challenge_id, options.options_json)


def challenge_operator(session: Session, *, challenge_id: Any) -> Operator | None:
    """The operator a login challenge was issued for (without spending it), or None."""
    if not isinstance(challenge_id, int):
        return None
    # One query for the operator and its tenant (the audit target names it); the caller keeps the operator,
    # so finish_login's session.get of it is an identity-map hit in the same request.
    return session.scalar(_CHALLENGE_OPERATOR, {"challenge_id": challenge_id})


def finish_login(session: Session, *, challenge_id: Any, credential: Any, rp: RelyingParty,
                 settings: LoginSettings, source: str, actor: Actor,
                 method: LoginMethod = LoginMethod.BIOMETRIC, expected_operator: Operator | None = None,
                 client_refusal: str | None = None) -> LoginResult:
    """Verify an assertion for a spent challenge: throttle, lock, mode, UV, signature and counter.

    A counter that did not increase (when either value is non-zero) is refused as a possible cloned
    authenticator: audited, and the credential is flagged for the manager and refused until replaced.
    ``client_refusal`` is why the caller's mutual-TLS check refused the operator's client certificate
    (made before, see ``challenge_operator``): the login is a success only when every check passed, and a
    verified assertion with a refused certificate counts towards the lock like any failed login.
    """
    try:
        challenge = consume_challenge(session, challenge_id=challenge_id, purpose=ChallengePurpose.AUTHENTICATION)
    except WebAuthnFailure as exc:
        note_source_failure(session, source=source, settings=settings)
        record_unknown(session, actor=actor, method=method, reason=LoginRefusal.BAD_CREDENTIALS, note=exc.message)
        return LoginResult(None, LoginRefusal.BAD_CREDENTIALS)
    operator = session.get(Operator, challenge.operator_pk, options=[joinedload(Operator.tenant)])
    if expected_operator is not None and (operator is None or operator.id != expected_operator.id):
        operator = None
    # Read once here and held: the identity map keeps rows only while referenced, and both the lock check
    # (precheck) and the failure bookkeeping read this row; an absent row (the operator's first login) is
    # handed to the lock check as None rather than read again.
    held_state = session.get(OperatorLoginState, operator.id) if operator is not None else None
    refusal = precheck(session, operator=operator, source=source, settings=settings, actor=actor, method=method,
                       expected_method=AuthMethod.BIOMETRIC, state=held_state)
    if refusal is LoginRefusal.THROTTLED:
        return LoginResult(None, refusal)
    if operator is None or refusal is LoginRefusal.REVOKED:
        note_source_failure(session, source=source, settings=settings)
        record_unknown(session, actor=actor, method=method, reason=refusal or LoginRefusal.UNKNOWN_OPERATOR)
        return LoginResult(None, refusal or LoginRefusal.UNKNOWN_OPERATOR)
    reason: str | None = None
    stored: WebAuthnCredential | None = None
    if refusal is None:
        try:
            raw_id = credential_id_of(credential)
            stored = session.scalar(_CREDENTIAL, {"operator_pk": operator.id, "credential_id": raw_id})
            if stored is None:
                raise WebAuthnFailure("the credential is not registered for this operator")
            if stored.clone_suspected_at is not None:
                raise WebAuthnFailure("the credential is suspended: possible cloned authenticator")
            verified = verify_assertion(rp=rp, credential=credential, expected_challenge=challenge.challenge,
                                        public_key=stored.public_key)
            new, old = verified.new_sign_count, stored.sign_count
            if (new > 0 or old > 0) and new <= old:
                stored.clone_suspected_at = utcnow()
                record_event(session, action=AuditAction.BIO_CLONE_SUSPECTED, actor=actor,
                             result=AuditResult.FAILURE, target=_target(operator),
                             detail={"credential": stored.id, "stored_count": old, "presented_count": new})
                raise WebAuthnFailure("signature counter did not increase: possible cloned authenticator")
        except WebAuthnFailure as exc:
            reason = exc.message
        else:
            # The authenticator did sign: keep its counter for clone detection (a plain UPDATE, no flush).
            used_at = utcnow()
            session.execute(_COUNTED, {"credential_pk": stored.id, "new_count": new, "used_at": used_at})
            set_committed_value(stored, "sign_count", new)
            set_committed_value(stored, "last_used_at", used_at)
            if client_refusal is not None:
                refusal, reason = LoginRefusal.CLIENT_CERTIFICATE, client_refusal
    if refusal is not None or reason is not None:
        note_source_failure(session, source=source, settings=settings)
        refusal = refusal or LoginRefusal.BAD_CREDENTIALS
        locked = record_failure(session, operator=operator, settings=settings, actor=actor, method=method,
                                reason=refusal, note=reason or "")
        # The certificate's owner already proved the fingerprint: tell them what is wrong with the terminal.
        explanation = ""
        if refusal is LoginRefusal.CLIENT_CERTIFICATE and not locked:
            explanation = _("この端末のオペレータ証明書ではログインできません（%(reason)s）。", reason=reason or "")
        return LoginResult(None, refusal, locked_now=locked, explanation=explanation)
    if method is LoginMethod.BIOMETRIC:
        record_success(session, operator=operator, actor=actor, method=method)
    else:
        record_event(session, action=AuditAction.REAUTHENTICATED, actor=actor, target=_target(operator),
                     detail={"method": str(method)})
    return LoginResult(operator)


def remove_all_credentials(session: Session, operator: Operator, actor: Actor) -> int:
    """Delete every credential of an operator (操作者失効), each deletion audited; how many were removed."""
    credentials = credentials_of(session, operator)
    for credential in credentials:
        delete_credential(session, operator=operator, credential_pk=credential.id, actor=actor)
    return len(credentials)


on_operator_revoked("biometrics", remove_all_credentials)
