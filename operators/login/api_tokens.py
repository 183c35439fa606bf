"""API tokens: create, list, revoke, and resolve the bearer of a request.

A token is made by an operator for a script or a business server. The secret
(``opa_`` + 43 base64url characters, 256 bits) is shown once; only its SHA-256
is kept. A token acts as its owner, within ``scopes``: a subset of the owner's
permissions chosen at creation, never more, and checked again against the
owner's role on every request. Its tenant reach is the owner's. A revoked or
expired token, and every token of a revoked or locked owner, is refused (401,
audited). Services take the session and never commit.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask_babel import lazy_gettext
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, joinedload

from db import utcnow
from kernel import webinput
from kernel.audit import Actor, AuditAction, AuditResult, record_event
from kernel.errors import InvalidInput, NotFound
from operators.login.api_token_models import ApiToken
from operators.login.models import OperatorLoginState
from operators.login.service import password_change_required
from operators.models import Operator
from operators.permissions import Permission, has_permission

TOKEN_PREFIX = "opa_"
_TOKEN = re.compile(r"^opa_[A-Za-z0-9_-]{43}$")
DEFAULT_DAYS = 30
MAX_DAYS = 90
_BAD_DAYS = lazy_gettext("有効日数 (days) は 1 以上 %(max)d 以下の整数で指定してください。", max=MAX_DAYS)
# A token never manages tokens: a leaked one cannot mint successors.
NOT_GRANTABLE = frozenset({Permission.MANAGE_API_TOKENS})
# Writing the last use on every request would turn each read into a write; once a minute is enough to see use.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenRefusal(enum.StrEnum):
    """Why a bearer token was refused (audited and named in the 401 answer)."""

    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    OWNER_DISABLED = "owner_disabled"  # the owner is revoked, locked or must change a one-time password


REFUSAL_MESSAGES = {
    TokenRefusal.MALFORMED: lazy_gettext("API トークンの形式が正しくありません(opa_ で始まる 47 文字)。"),
    TokenRefusal.UNKNOWN: lazy_gettext("API トークンが正しくありません。"),
    TokenRefusal.EXPIRED: lazy_gettext("API トークンの有効期限が切れています。"),
    TokenRefusal.REVOKED: lazy_gettext("API トークンは失効しています。"),
    TokenRefusal.OWNER_DISABLED: lazy_gettext("API トークンの所有者は現在利用できません(失効・ロック等)。"),
}


def token_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def grantable_permissions(owner: Operator) -> list[Permission]:
    """The permissions ``owner`` may put into a token: their own, minus token management."""
    return [p for p in Permission if p not in NOT_GRANTABLE and has_permission(owner, p)]


def parse_scopes(raw: Iterable[object], *, owner: Operator) -> list[str]:
    """Validated scope values (Permission values the owner holds); ``InvalidInput`` otherwise."""
    allowed = {str(p) for p in grantable_permissions(owner)}
    scopes: list[str] = []
    for item in raw:
        if not isinstance(item, str) or item not in allowed:
            shown = item[:60] if isinstance(item, str) else type(item).__name__
            raise InvalidInput(lazy_gettext(
                "スコープ %(scope)s は付与できません。付与できるのは次の権限です: %(allowed)s",
                scope=repr(shown), allowed=", ".join(sorted(allowed)) or "-"))
        if item not in scopes:
            scopes.append(item)
    if not scopes:
        raise InvalidInput(lazy_gettext("スコープ (scopes) を一つ以上指定してください。"))
    return scopes


def parse_days(raw: object) -> int:
    """The validity in days: default ``DEFAULT_DAYS``, 1 to ``MAX_DAYS``."""
    if raw is None or raw == "":
        return DEFAULT_DAYS
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise InvalidInput(_BAD_DAYS)
    try:
        days = int(raw) if isinstance(raw, int) or len(raw) <= 4 else -1
    except ValueError:
        days = -1
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(_BAD_DAYS)
    return days


@dataclass(frozen=True)
class NewToken:
    """A token just created: the row, and the secret that is shown this once and never stored."""

    token: ApiToken
    secret: str


def create_token(session: Session, *, owner: Operator, name: object, scopes: Iterable[object], days: object,
                 actor: Actor) -> NewToken:
    """Make a token for ``owner`` (audited, flushed, not committed)."""
    if owner.revoked_at is not None or password_change_required(owner):
        raise InvalidInput(lazy_gettext("この操作者には API トークンを発行できません。"))
    label = webinput.text(name, field=str(lazy_gettext("名称 (name)")), max_length=100)
    if not label:
        raise InvalidInput(lazy_gettext("名称 (name) は必須です。"))
    granted = parse_scopes(scopes, owner=owner)
    valid_days = parse_days(days)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    token = ApiToken(token_sha256=token_sha256(secret), display_prefix=secret[:12], name=label,
                     operator_pk=owner.id, scopes=granted, created_by=actor.name, created_at=now,
                     expires_at=now + timedelta(days=valid_days))
    session.add(token)
    session.flush()
    record_event(session, action=AuditAction.API_TOKEN_CREATED, actor=actor, target=_target(token, owner),
                 detail={"name": label, "scopes": granted, "expires_at": token.expires_at.isoformat(),
                         "prefix": token.display_prefix})
    return NewToken(token=token, secret=secret)


def _target(token: ApiToken, owner: Operator) -> str:
    return f"api_token:{token.id} operator:{owner.tenant.code}/{owner.operator_id}"


def visible_tokens(session: Session, viewer: Operator) -> list[ApiToken]:
    """Tokens ``viewer`` may see: their own; a system administrator sees every tenant's."""
    query = select(ApiToken).options(joinedload(ApiToken.operator).joinedload(Operator.tenant))
    if not has_permission(viewer, Permission.ALL_TENANTS):
        query = query.where(ApiToken.operator_pk == viewer.id)
    return list(session.scalars(query.order_by(ApiToken.id.desc())))


def get_visible_token(session: Session, viewer: Operator, token_id: int) -> ApiToken:
    """One token ``viewer`` may see; another's (or none) is ``NotFound``, so ids cannot be probed."""
    token = session.get(ApiToken, token_id)
    if token is None or (token.operator_pk != viewer.id and not has_permission(viewer, Permission.ALL_TENANTS)):
        raise NotFound(lazy_gettext("指定された API トークンはありません。"))
    return token


def revoke_token(session: Session, *, token: ApiToken, actor: Actor) -> bool:
    """Revoke ``token`` (audited); False if it was already revoked."""
    if token.revoked_at is not None:
        return False
    token.revoked_at = utcnow()
    token.revoked_by = actor.name
    record_event(session, action=AuditAction.API_TOKEN_REVOKED, actor=actor,
                 target=_target(token, token.operator), detail={"name": token.name})
    return True


def token_status(token: ApiToken, *, now: datetime | None = None) -> str:
    """``active``, ``expired`` or ``revoked``."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


@dataclass(frozen=True)
class BearerCheck:
    """The outcome of checking a presented token: the token if it may act, else why not."""

    token: ApiToken | None  # the row found (also when refused for expiry, revocation or its owner)
    refusal: TokenRefusal | None = None
    wrote: bool = False  # the last use was recorded: the caller commits

    @property
    def ok(self) -> bool:
        return self.token is not None and self.refusal is None


# One statement per request: the token, its owner and tenant, and the owner's lock (built once).
_BY_HASH = (select(ApiToken, OperatorLoginState.locked_until)
            .outerjoin(OperatorLoginState, OperatorLoginState.operator_pk == ApiToken.operator_pk)
            .options(joinedload(ApiToken.operator).joinedload(Operator.tenant))
            .where(ApiToken.token_sha256 == bindparam("token_sha256")))


def check_bearer(session: Session, *, secret: str, source: str, now: datetime | None = None) -> BearerCheck:
    """Resolve a presented bearer token (nothing is audited here: see ``record_refusal``)."""
    if not _TOKEN.match(secret):
        return BearerCheck(None, TokenRefusal.MALFORMED)
    row = session.execute(_BY_HASH, {"token_sha256": token_sha256(secret)}).first()
    if row is None:
        return BearerCheck(None, TokenRefusal.UNKNOWN)
    token, owner_locked_until = row
    now = now or utcnow()
    owner = token.operator
    if token.revoked_at is not None:
        return BearerCheck(token, TokenRefusal.REVOKED)
    if token.expires_at <= now:
        return BearerCheck(token, TokenRefusal.EXPIRED)
    if owner.revoked_at is not None or password_change_required(owner) \
            or (owner_locked_until is not None and owner_locked_until > now):
        return BearerCheck(token, TokenRefusal.OWNER_DISABLED)
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION \
            or token.last_used_from != source[:64]:
        token.last_used_at = now
        token.last_used_from = source[:64]
        return BearerCheck(token, wrote=True)
    return BearerCheck(token)


def record_refusal(session: Session, check: BearerCheck, *, source: str) -> None:
    """Audit a refused token (``api_token.refused``) in ``session``; the caller commits."""
    token = check.token
    if token is None:
        actor = Actor(name="anonymous", source=source)
        target = ""
    else:
        actor = Actor(name=token.operator.operator_id, tenant=token.operator.tenant.code, source=source)
        target = _target(token, token.operator)
    record_event(session, action=AuditAction.API_TOKEN_REFUSED, actor=actor, result=AuditResult.FAILURE,
                 target=target, detail={"reason": str(check.refusal)})


def token_permits(token: ApiToken, permission: Permission) -> bool:
    """True when ``permission`` is in the token's scopes (the owner's role is checked separately)."""
    return str(permission) in token.scopes


def permits(operator: Operator, token: ApiToken | None, permission: Permission) -> bool:
    """True when ``operator`` may do ``permission`` now: their role grants it and the token they call with,
    if any, has it in its scopes. The one rule for a caller's permissions (``requires`` and ``may``)."""
    return has_permission(operator, permission) and (token is None or token_permits(token, permission))
