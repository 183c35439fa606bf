"""The login rules: lock after consecutive failures, per-address throttle, password change policy.

Services take the session and never commit; the view or command that owns the
request commits once. Failed attempts are recorded in the same transaction as
the failure counters, so the caller commits a failed login too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from flask_babel import gettext as _
from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from db import utcnow
from kernel.audit import Actor, AuditAction, AuditResult, record_event
from kernel.errors import OpauthError
from operators.login.models import LoginMethod, LoginThrottle, OperatorLoginState, PasswordHistory
from operators.login.passwords import check_policy, hash_password, needs_rehash, verify_password
from operators.models import AuthMethod, Operator, Tenant


class PasswordRejected(OpauthError):
    code = "password_rejected"


class LoginRefusal(enum.StrEnum):
    """Why a login was refused (audited; the user sees one generic message for all of them)."""

    BAD_CREDENTIALS = "bad_credentials"
    UNKNOWN_OPERATOR = "unknown_operator"
    REVOKED = "revoked"
    LOCKED = "locked"
    THROTTLED = "throttled"
    WRONG_METHOD = "wrong_method"
    CLIENT_CERTIFICATE = "client_certificate"


def password_change_required(operator: Operator) -> bool:
    """True when the operator must choose a new password before anything else.

    Only password-mode operators log in with a password, so only they are held by a one-time
    password. A biometric operator's stored password (if any) is not a login credential: it becomes
    one, still to be changed at first use, only if the operator is switched to password mode.
    """
    return operator.must_change_password and operator.auth_method is AuthMethod.PASSWORD


@dataclass(frozen=True)
class LoginSettings:
    """The login knobs from the settings (``LOGIN_*``, ``PASSWORD_*``)."""

    max_failures: int = 5
    lock_minutes: int = 30
    throttle_failures: int = 20
    throttle_window_seconds: int = 300
    password_history: int = 5
    password_min_length: int = 12

    @classmethod
    def from_config(cls, config: Any) -> LoginSettings:
        return cls(max_failures=int(config["LOGIN_MAX_FAILURES"]), lock_minutes=int(config["LOGIN_LOCK_MINUTES"]),
                   throttle_failures=int(config["LOGIN_THROTTLE_FAILURES"]),
                   throttle_window_seconds=int(config["LOGIN_THROTTLE_WINDOW_SECONDS"]),
                   password_history=int(config["PASSWORD_HISTORY"]),
                   password_min_length=int(config["PASSWORD_MIN_LENGTH"]))


@dataclass(frozen=True)
class LoginResult:
    """The operator who logged in, or why nobody did."""

    operator: Operator | None
    refusal: LoginRefusal | None = None
    locked_now: bool = False
    # Set only when the refusal may be explained without revealing anything to someone who does not
    # already hold the credential (e.g. the right password of a biometric-mode operator).
    explanation: str = ""

    @property
    def ok(self) -> bool:
        return self.operator is not None and self.refusal is None


# Built once: every login attempt (password, biometric options, API Basic) runs it.
_FIND_OPERATOR = select(Operator).join(Tenant).where(Tenant.code == bindparam("tenant_code"),
                                                     Operator.operator_id == bindparam("operator_id"))


def find_operator(session: Session, *, tenant_code: str, operator_id: str) -> Operator | None:
    """The operator with this ID in this tenant (revoked ones included), or None."""
    if "\x00" in tenant_code or "\x00" in operator_id:
        return None  # no such identifier can exist (and PostgreSQL text cannot hold NUL)
    return session.scalar(_FIND_OPERATOR, {"tenant_code": tenant_code, "operator_id": operator_id})


def login_state(session: Session, operator: Operator) -> OperatorLoginState:
    """The operator's login state row, created on first use."""
    state = session.get(OperatorLoginState, operator.id)
    if state is None:
        state = OperatorLoginState(operator_pk=operator.id, failed_count=0, last_login_method="")
        session.add(state)
        session.flush()
    return state


class _Unread:
    """``state=`` not given: read the login state row."""


UNREAD = _Unread()


def locked_until(session: Session, operator: Operator, *, now: datetime | None = None,
                 state: OperatorLoginState | _Unread | None = UNREAD) -> datetime | None:
    """When the operator's lock ends, or None if they are not locked.

    ``state``: the operator's login state row (or None: it has none) read earlier in this request, so an
    absent row is not read again (the identity map keeps only rows that exist).
    """
    if isinstance(state, _Unread):
        state = session.get(OperatorLoginState, operator.id)
    now = now or utcnow()
    if state is None or state.locked_until is None or state.locked_until <= now:
        return None
    return state.locked_until


def end_all_sessions(operator: Operator) -> None:
    """Invalidate every browser session of ``operator`` (the session version is part of the login id)."""
    operator.session_version = (operator.session_version or 0) + 1


# Read from the database on every login request (never the identity map), as a row: no ORM object.
_THROTTLE = select(LoginThrottle.window_start, LoginThrottle.failures).where(LoginThrottle.source == bindparam("key"))


def is_throttled(session: Session, *, source: str, settings: LoginSettings, now: datetime | None = None) -> bool:
    """True when ``source`` has had too many failed logins in the current window."""
    now = now or utcnow()
    row = session.execute(_THROTTLE, {"key": source[:64]}).first()
    if row is None or now - row.window_start > timedelta(seconds=settings.throttle_window_seconds):
        return False
    return bool(row.failures >= settings.throttle_failures)


def note_source_failure(session: Session, *, source: str, settings: LoginSettings,
                        now: datetime | None = None) -> None:
    """Count one failed login for ``source`` (a fixed window that restarts when it has passed)."""
    now = now or utcnow()
    key = source[:64]
    window_start = now - timedelta(seconds=settings.throttle_window_seconds)
    restarted = session.execute(update(LoginThrottle).where(LoginThrottle.source == key,
                                                            LoginThrottle.window_start < window_start)
                                .values(window_start=now, failures=1))
    if getattr(restarted, "rowcount", 0):
        return
    counted = session.execute(update(LoginThrottle).where(LoginThrottle.source == key)
                              .values(failures=LoginThrottle.failures + 1))
    if getattr(counted, "rowcount", 0):
        return
    try:
        with session.begin_nested():
            session.add(LoginThrottle(source=key, window_start=now, failures=1))
    except IntegrityError:  # a concurrent request created it first
        session.execute(update(LoginThrottle).where(LoginThrottle.source == key)
                        .values(failures=LoginThrottle.failures + 1))


def record_failure(session: Session, *, operator: Operator, settings: LoginSettings, actor: Actor,
                   method: LoginMethod, reason: LoginRefusal, note: str = "", now: datetime | None = None) -> bool:
    """Count a failed attempt against ``operator``; lock them at the limit. True if this failure locked them.

    ``note`` (e.g. why a WebAuthn assertion was refused) goes into the audit entry.
    """
    now = now or utcnow()
    state = login_state(session, operator)
    session.execute(update(OperatorLoginState).where(OperatorLoginState.operator_pk == operator.id)
                    .values(failed_count=OperatorLoginState.failed_count + 1, last_failure_at=now))
    session.refresh(state)
    record_event(session, action=AuditAction.LOGIN_FAILURE, actor=actor, result=AuditResult.FAILURE,
                 target=_target(operator), detail={"method": str(method), "reason": str(reason),
                                                   "consecutive_failures": state.failed_count,
                                                   **({"note": note[:300]} if note else {})})
    already_locked = state.locked_until is not None and state.locked_until > now
    if state.failed_count >= settings.max_failures and not already_locked:
        state.locked_at = now
        state.locked_until = now + timedelta(minutes=settings.lock_minutes)
        end_all_sessions(operator)
        record_event(session, action=AuditAction.LOGIN_LOCKED, actor=actor, result=AuditResult.FAILURE,
                     target=_target(operator), detail={"failures": state.failed_count,
                                                       "until": state.locked_until.isoformat()})
        return True
    return False


# Plain statements on the table (no unit of work, no ORM synchronisation): the login's writes to its state.
_STATE_TABLE = cast(Table, OperatorLoginState.__table__)
_RESET_STATE = (update(_STATE_TABLE).where(_STATE_TABLE.c.operator_pk == bindparam("pk"))
                .values({name: bindparam(f"new_{name}") for name in ("failed_count", "locked_at", "locked_until",
                                                                      "last_login_at", "last_login_method")}))
_FIRST_STATE = insert(_STATE_TABLE)


def record_success(session: Session, *, operator: Operator, actor: Actor, method: LoginMethod,
                   now: datetime | None = None) -> None:
    """Reset the failure count and audit the login.

    Written with one UPDATE (an INSERT for the operator's first login) rather than through the unit of work;
    a copy of the row loaded earlier in this session is brought up to date.
    """
    now = now or utcnow()
    values = {"failed_count": 0, "locked_at": None, "locked_until": None, "last_login_at": now,
              "last_login_method": str(method)}
    updated = session.execute(_RESET_STATE, {"pk": operator.id, **{f"new_{k}": v for k, v in values.items()}})
    if not getattr(updated, "rowcount", 0):
        session.execute(_FIRST_STATE, {"operator_pk": operator.id, "last_failure_at": None, **values})
    loaded = session.identity_map.get(session.identity_key(OperatorLoginState, operator.id))
    if isinstance(loaded, OperatorLoginState):
        for name, value in values.items():
            set_committed_value(loaded, name, value)
    record_event(session, action=AuditAction.LOGIN_SUCCESS, actor=actor, target=_target(operator),
                 detail={"method": str(method)})


def record_unknown(session: Session, *, actor: Actor, method: LoginMethod, reason: LoginRefusal,
                   note: str = "") -> None:
    """Audit a failed attempt that names no existing, active operator."""
    record_event(session, action=AuditAction.LOGIN_FAILURE, actor=actor, result=AuditResult.FAILURE,
                 detail={"method": str(method), "reason": str(reason), **({"note": note[:300]} if note else {})})


def precheck(session: Session, *, operator: Operator | None, source: str, settings: LoginSettings,
             actor: Actor, method: LoginMethod, expected_method: AuthMethod,
             state: OperatorLoginState | _Unread | None = UNREAD) -> LoginRefusal | None:
    """Refusals that do not depend on the credential: throttled source, unknown/revoked/locked/wrong mode.

    Records the refusal (audit, throttle counter) except for the throttle itself, which is audited only.
    ``state``: the operator's login state as read earlier in this request (see ``locked_until``).
    """
    if is_throttled(session, source=source, settings=settings):
        record_event(session, action=AuditAction.LOGIN_THROTTLED, actor=actor, result=AuditResult.FAILURE,
                     detail={"method": str(method)})
        return LoginRefusal.THROTTLED
    refusal = None
    if operator is None:
        refusal = LoginRefusal.UNKNOWN_OPERATOR
    elif operator.revoked_at is not None:
        refusal = LoginRefusal.REVOKED
    elif locked_until(session, operator, state=state) is not None:
        refusal = LoginRefusal.LOCKED
    elif operator.auth_method != expected_method:
        refusal = LoginRefusal.WRONG_METHOD
    return refusal


def password_login(session: Session, *, tenant_code: str, operator_id: str, password: str, source: str,
                   settings: LoginSettings, actor: Actor,
                   method: LoginMethod = LoginMethod.PASSWORD) -> LoginResult:
    """ID+password login with lock and throttle; the password is verified (or a dummy) in every case."""
    operator = find_operator(session, tenant_code=tenant_code, operator_id=operator_id)
    refusal = precheck(session, operator=operator, source=source, settings=settings, actor=actor, method=method,
                       expected_method=AuthMethod.PASSWORD)
    if refusal is LoginRefusal.THROTTLED:
        verify_password(None, password)  # the same work as any other answer
        return LoginResult(None, refusal)
    password_ok = verify_password(operator.password_hash if operator else None, password)
    if refusal is None and not password_ok:
        refusal = LoginRefusal.BAD_CREDENTIALS
    if refusal is not None:
        note_source_failure(session, source=source, settings=settings)
        if operator is None or refusal is LoginRefusal.REVOKED:
            record_unknown(session, actor=actor, method=method, reason=refusal)
            return LoginResult(None, refusal)
        locked = record_failure(session, operator=operator, settings=settings, actor=actor, method=method,
                                reason=refusal)
        explanation = ""
        if refusal is LoginRefusal.WRONG_METHOD and password_ok and not locked:
            # Whoever knows the password may learn that this operator logs in biometrically.
            explanation = _("このオペレータは生体認証でログインします。生体情報照合画面から、"
                            "ご自分のオペレータ証明書を設定した端末でログインしてください。")
        return LoginResult(None, refusal, locked_now=locked, explanation=explanation)
    assert operator is not None
    if needs_rehash(operator.password_hash):
        operator.password_hash = hash_password(password)
    record_success(session, operator=operator, actor=actor, method=method)
    return LoginResult(operator)


def verify_current_password(session: Session, *, operator: Operator, password: str, settings: LoginSettings,
                            actor: Actor, method: LoginMethod) -> bool:
    """Re-authentication: a wrong password counts towards the lock like a failed login."""
    if locked_until(session, operator) is not None:
        verify_password(None, password)
        return False
    if verify_password(operator.password_hash, password):
        state = login_state(session, operator)
        state.failed_count = 0
        record_event(session, action=AuditAction.REAUTHENTICATED, actor=actor, target=_target(operator),
                     detail={"method": str(method)})
        return True
    record_failure(session, operator=operator, settings=settings, actor=actor, method=method,
                   reason=LoginRefusal.BAD_CREDENTIALS)
    return False


def unlock(session: Session, *, operator: Operator, actor: Actor) -> bool:
    """An administrator lifts the lock and resets the failure count; False if nothing was locked."""
    state = session.get(OperatorLoginState, operator.id)
    was_locked = state is not None and (state.locked_until is not None or state.failed_count > 0)
    if state is not None:
        state.failed_count = 0
        state.locked_at = None
        state.locked_until = None
    record_event(session, action=AuditAction.LOGIN_UNLOCKED, actor=actor, target=_target(operator),
                 detail={"was_locked": was_locked})
    return was_locked


def locked_operators(session: Session, *, now: datetime | None = None) -> list[tuple[Operator, OperatorLoginState]]:
    """Operators whose lock has not yet expired, oldest lock first."""
    now = now or utcnow()
    rows = session.execute(select(Operator, OperatorLoginState)
                           .join(OperatorLoginState, OperatorLoginState.operator_pk == Operator.id)
                           .where(OperatorLoginState.locked_until > now)
                           .order_by(OperatorLoginState.locked_at))
    return [(op, state) for op, state in rows]


def change_password(session: Session, *, operator: Operator, current: str, new: str, confirm: str,
                    settings: LoginSettings, actor: Actor) -> None:
    """Change the operator's own password under the policy; ends their other sessions.

    Raises ``PasswordRejected`` with the reason. Policy: the current password is right, the two new
    entries match, length and operator-ID rules (``check_policy``), and not one of the current and
    last ``password_history`` passwords.
    """
    if not verify_password(operator.password_hash, current):
        raise PasswordRejected(_("現在のパスワードが正しくありません。"))
    if new != confirm:
        raise PasswordRejected(_("新しいパスワードが一致しません。"))
    reason = check_policy(new, operator_id=operator.operator_id, min_length=settings.password_min_length)
    if reason is not None:
        raise PasswordRejected(reason)
    previous = [operator.password_hash, *session.scalars(
        select(PasswordHistory.password_hash).where(PasswordHistory.operator_pk == operator.id)
        .order_by(PasswordHistory.id.desc()).limit(settings.password_history))]
    if any(verify_password(h, new) for h in previous if h):
        raise PasswordRejected(_("以前に使用したパスワードは使用できません。"))
    set_password(session, operator=operator, new_hash=hash_password(new), settings=settings,
                 must_change=False)
    record_event(session, action=AuditAction.PASSWORD_CHANGED, actor=actor, target=_target(operator))


def set_password(session: Session, *, operator: Operator, new_hash: str, settings: LoginSettings,
                 must_change: bool) -> None:
    """Replace the password hash, keep the old one in the history, end every session of the operator.

    Also for administrators setting a one-time password (``must_change=True``).
    """
    if operator.password_hash:
        session.add(PasswordHistory(operator_pk=operator.id, password_hash=operator.password_hash))
        session.flush()
        keep = [row_id for row_id in session.scalars(
            select(PasswordHistory.id).where(PasswordHistory.operator_pk == operator.id)
            .order_by(PasswordHistory.id.desc()).limit(max(settings.password_history, 0)))]
        session.execute(delete(PasswordHistory).where(PasswordHistory.operator_pk == operator.id,
                                                      PasswordHistory.id.not_in(keep or [0])))
    operator.password_hash = new_hash
    operator.must_change_password = must_change
    end_all_sessions(operator)


def _target(operator: Operator) -> str:
    return f"operator:{operator.tenant.code}/{operator.operator_id}"
