"""The audit log: one ``record_event`` for every security-relevant action.

Entries are append-only (database triggers refuse UPDATE and DELETE) and each
one's SHA-256 hash covers its own fields and the previous entry's hash, so an
edited, removed or reordered row breaks the chain that ``verify_chain`` walks.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import JSON, Integer, String, Table, Text, bindparam, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from db import Base, UtcDateTime, str_enum, utcnow

GENESIS_HASH = "0" * 64


class AuditResult(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


class AuditEvent(Base):
    """Append-only audit log; each row's hash covers its fields and the previous row's hash."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str] = mapped_column(String(20), default="")
    source: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(400), default="")
    result: Mapped[AuditResult] = mapped_column(str_enum(AuditResult))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """One row holding the newest audit hash; locked while appending so the chain stays linear."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_hash: Mapped[str] = mapped_column(String(64))
    last_id: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    note: Mapped[str] = mapped_column(Text, default="")


class AuditAction(enum.StrEnum):
    CA_INITIALISED = "ca.initialised"
    CERTIFICATE_ISSUED = "certificate.issued"
    CSR_REJECTED = "certificate.csr_rejected"
    ISSUANCE_REJECTED = "certificate.issuance_rejected"
    BUSINESS_SYSTEM_CREATED = "business_system.created"
    BUSINESS_SYSTEM_UPDATED = "business_system.updated"
    BUSINESS_SYSTEM_REJECTED = "business_system.rejected"
    BOOTSTRAP_ADMIN_CREATED = "operator.bootstrap_created"
    LOGIN_SUCCESS = "auth.login_success"
    LOGIN_FAILURE = "auth.login_failure"
    LOGOUT = "auth.logout"
    PASSWORD_CHANGED = "auth.password_changed"
    PASSWORD_CHANGE_REJECTED = "auth.password_change_rejected"
    ACCESS_DENIED = "auth.access_denied"
    AUDIT_VERIFIED = "audit.verified"
    AUDIT_CHECKPOINT = "audit.checkpoint"
    # Tenancy and operator registration
    TENANT_CREATED = "tenant.created"
    TENANT_UPDATED = "tenant.updated"
    TENANTS_REORDERED = "tenant.reordered"
    TENANT_REJECTED = "tenant.rejected"
    JOINT_USE_CHANGED = "joint_use.changed"
    OPERATOR_REGISTERED = "operator.registered"
    OPERATOR_UPDATED = "operator.updated"
    OPERATOR_STAGED = "operator.staged"
    OPERATOR_UNSTAGED = "operator.unstaged"
    OPERATOR_REJECTED = "operator.rejected"
    OPERATORS_IMPORTED = "operator.imported"
    OPERATORS_EXPORTED = "operator.exported"
    OPERATOR_REVOKED = "operator.revoked"
    OPERATOR_PASSWORDS_RESET = "operator.passwords_reset"
    OPERATOR_CERTIFICATE_DELIVERED = "operator.certificate_delivered"
    IN_BUSINESS_ID_SET = "in_business_id.set"
    IN_BUSINESS_ID_DELETED = "in_business_id.deleted"
    CERTIFICATE_REVOKED = "certificate.revoked"
    CERTIFICATE_HOLD_RELEASED = "certificate.hold_released"
    REVOCATION_REJECTED = "certificate.revocation_rejected"
    # Login hardening and biometrics
    LOGIN_LOCKED = "auth.locked"
    LOGIN_UNLOCKED = "auth.unlocked"
    LOGIN_THROTTLED = "auth.throttled"
    REAUTHENTICATED = "auth.reauthenticated"
    SESSION_EXPIRED = "auth.session_expired"
    BIO_ENROLLED = "bio.enrolled"
    BIO_ENROLMENT_FAILED = "bio.enrolment_failed"
    BIO_CREDENTIAL_DELETED = "bio.credential_deleted"
    BIO_CLONE_SUSPECTED = "bio.clone_suspected"
    BIO_ENROLMENT_CODE_ISSUED = "bio.enrolment_code_issued"
    BIO_ENROLMENT_CODE_REDEEMED = "bio.enrolment_code_redeemed"
    # Mutual TLS
    CLIENT_CERT_REFUSED = "mtls.client_certificate_refused"
    OPERATOR_CERT_MISMATCH = "mtls.operator_certificate_mismatch"
    # 環境基本設定 (instance settings)
    SETTINGS_INITIALISED = "settings.initialised"
    SETTING_CHANGED = "settings.changed"
    SETTINGS_REJECTED = "settings.rejected"
    # Business login (OpenID Connect provider)
    OIDC_CLIENT_UPDATED = "oidc.client_updated"
    OIDC_CLIENT_REJECTED = "oidc.client_rejected"
    OIDC_AUTHORIZED = "oidc.authorized"
    OIDC_DENIED = "oidc.denied"
    OIDC_TOKEN_ISSUED = "oidc.token_issued"
    OIDC_TOKEN_REFUSED = "oidc.token_refused"
    OIDC_TOKEN_REVOKED = "oidc.token_revoked"
    OIDC_CLIENT_AUTH_FAILED = "oidc.client_auth_failed"
    OIDC_CODE_REPLAY = "oidc.code_replay"
    OIDC_USERINFO_REFUSED = "oidc.userinfo_refused"
    OIDC_KEY_ROTATED = "oidc.key_rotated"
    OIDC_LOGOUT_SENT = "oidc.logout_sent"
    OIDC_LOGOUT_FAILED = "oidc.logout_failed"
    # API tokens for machine clients
    API_TOKEN_CREATED = "api_token.created"
    API_TOKEN_REJECTED = "api_token.rejected"
    API_TOKEN_REVOKED = "api_token.revoked"
    API_TOKEN_REFUSED = "api_token.refused"


@dataclass(frozen=True)
class Actor:
    """Who did it, for which tenant, from where."""

    name: str
    tenant: str = ""
    source: str = ""


SYSTEM_ACTOR = Actor(name="system")


def _entry_hash(prev_hash: str, event: AuditEvent) -> str:
    payload = json.dumps(
        {
            "prev": prev_hash,
            "at": event.created_at.isoformat(),
            "actor": event.actor,
            "tenant": event.tenant,
            "source": event.source,
            "action": event.action,
            "target": event.target,
            "result": str(event.result),
            "detail": event.detail,
        },
        sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _printable(text: str) -> str:
    # Refused requests are audited with what was sent; PostgreSQL text cannot hold NUL bytes.
    return text.replace("\x00", "\ufffd")


# The audit entry is on every hot path: the head and the entry are written as plain statements on the
# session's connection, without the unit of work (an ORM flush costs more than the statements themselves).
_EVENTS = cast(Table, AuditEvent.__table__)
_HEADS = cast(Table, AuditHead.__table__)
_TAKE_HEAD = (update(_HEADS).where(_HEADS.c.id == 1).values(updated_at=bindparam("now"))
              .returning(_HEADS.c.last_hash))
_FIRST_HEAD = insert(_HEADS).values(id=1, last_hash=GENESIS_HASH, last_id=0, note="")
_APPEND = insert(_EVENTS).returning(_EVENTS.c.id)
_MOVE_HEAD = (update(_HEADS).where(_HEADS.c.id == 1)
              .values(last_hash=bindparam("last_hash"), last_id=bindparam("last_id")))


def record_event(
    session: Session,
    *,
    action: AuditAction,
    actor: Actor,
    result: AuditResult = AuditResult.SUCCESS,
    target: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one entry in ``session``'s transaction (committed with the work it describes).

    The entry returned is a copy of the row written (not attached to ``session``).
    """
    session.flush()  # the caller's pending work is written first, as with any other statement
    connection = session.connection()
    # Write to the head row first: this takes the row lock (PostgreSQL) or the write
    # lock (SQLite) before the previous hash is read, so the chain cannot fork.
    # UPDATE ... RETURNING: the lock and the current head in one statement (read fresh, never from the
    # session's identity map).
    now = utcnow()
    prev_hash = connection.execute(_TAKE_HEAD, {"now": now}).scalar_one_or_none()
    if prev_hash is None:
        connection.execute(_FIRST_HEAD, {"updated_at": now})
        prev_hash = GENESIS_HASH
    event = AuditEvent(
        created_at=now, actor=_printable(actor.name)[:200], tenant=_printable(actor.tenant)[:20],
        source=_printable(actor.source)[:64], action=str(action), target=_printable(target)[:400], result=result,
        detail=json.loads(json.dumps(detail or {}, default=str)), prev_hash=prev_hash,
    )
    event.entry_hash = _entry_hash(prev_hash, event)
    event.id = connection.execute(_APPEND, {
        "created_at": event.created_at, "actor": event.actor, "tenant": event.tenant, "source": event.source,
        "action": event.action, "target": event.target, "result": event.result, "detail": event.detail,
        "prev_hash": event.prev_hash, "entry_hash": event.entry_hash}).scalar_one()
    connection.execute(_MOVE_HEAD, {"last_hash": event.entry_hash, "last_id": event.id})
    head = session.identity_map.get(session.identity_key(AuditHead, 1))
    if isinstance(head, AuditHead):  # loaded earlier in this session: let it show what the database holds
        for name, value in (("last_hash", event.entry_hash), ("last_id", event.id), ("updated_at", now)):
            set_committed_value(head, name, value)
    return event


def record_event_separately(session_factory: Callable[[], Session], **kwargs: Any) -> None:
    """Record an entry in its own transaction, for work that was refused and rolled back."""
    session: Session = session_factory()
    try:
        record_event(session, **kwargs)
        session.commit()
    finally:
        session.close()


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str = ""


def verify_chain(session: Session, *, batch: int = 1000) -> ChainVerdict:
    """Walk the log in order and report the first entry whose hash or link does not match."""
    prev = GENESIS_HASH
    checked = 0
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.id).execution_options(
            yield_per=batch)):
        if event.prev_hash != prev:
            return ChainVerdict(False, checked, event.id, "link to the previous entry is broken "
                                "(an entry was removed, inserted or reordered)")
        if _entry_hash(prev, event) != event.entry_hash:
            return ChainVerdict(False, checked, event.id, "entry content does not match its hash "
                                "(the entry was edited)")
        prev = event.entry_hash
        checked += 1
    head = session.get(AuditHead, 1)
    if head is not None and head.last_hash != prev:
        return ChainVerdict(False, checked, None, "the newest entries were removed (head hash mismatch)")
    return ChainVerdict(True, checked)


T = TypeVar("T")


def audited_unit_of_work(session: Session, session_factory: Callable[[], Session], *, work: Callable[[], T],
                         failure_action: AuditAction, actor: Actor, target: str = "") -> T:
    """Run ``work`` and commit; on a refused request roll back and audit the refusal, then re-raise.

    This is the unit-of-work boundary shared by the web UI, the API and the CLI.
    """
    from kernel.errors import OpauthError

    try:
        result = work()
        session.commit()
        return result
    except OpauthError as exc:
        session.rollback()
        record_event_separately(session_factory, action=failure_action, actor=actor,
                                result=AuditResult.FAILURE, target=target,
                                detail={"reason": exc.message, "error": exc.code})
        raise
    except BaseException:
        session.rollback()
        raise
