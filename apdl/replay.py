"""Back-channel logout tokens are accepted once and only while fresh.

opauth signs each delivery attempt afresh (``iat`` = now), so a token older than
``APDL_LOGOUT_TOKEN_MAX_AGE`` seconds is a copy kept by someone, not a delivery.
A token's ``jti`` is remembered until it would be too old anyway (plus the clock leeway); the same
``jti`` again is a replay.
Refusals of tokens whose signature verified are written to the operation log (they mean a copy of a
genuine token is in someone's hands); tokens that fail verification go to the application log only,
since anyone can post those.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from apdl import oplog
from apdl.db import utcnow
from apdl.models import LogoutTokenSeen
from apdl.oidc_client import LEEWAY_SECONDS, LogoutToken


def refusal(session: Session, token: LogoutToken, *, max_age: int) -> str | None:
    """Why ``token`` must be refused (logged and committed), or None once its ``jti`` is recorded as seen.

    The caller commits the accepted token's effects together with the recorded ``jti``."""
    now = utcnow()
    issued = datetime.fromtimestamp(token.iat, UTC)
    reason = None
    if issued < now - timedelta(seconds=max_age):
        reason = "too old"
    elif session.get(LogoutTokenSeen, token.jti) is not None:
        reason = "replayed jti"
    else:
        session.execute(delete(LogoutTokenSeen).where(LogoutTokenSeen.forget_after < now))
        session.add(LogoutTokenSeen(jti=token.jti, seen_at=now,
                                    forget_after=issued + timedelta(seconds=max_age + LEEWAY_SECONDS)))
        try:
            session.flush()
        except IntegrityError:  # the same token delivered twice at once: the other request recorded it first
            reason = "replayed jti"
    if reason is None:
        return None
    session.rollback()
    oplog.record(session, tenant_code="", actor="opauth", action=oplog.Action.LOGOUT_TOKEN_REFUSED,
                 detail={"reason": reason, "jti": token.jti[:64], "iat": token.iat, "sid": token.sid[:40],
                         "sub": token.sub[:16]})
    session.commit()
    return reason
