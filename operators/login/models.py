"""Login state kept beside the operator: failures and locks, password history, per-address throttle.

These are separate tables (not columns on ``Operator``) so the login flow owns
its own state and the operator registration model stays about the operator.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from db import Base, UtcDateTime, utcnow


class LoginMethod(enum.StrEnum):
    """How someone tried to authenticate (recorded in audit entries)."""

    PASSWORD = "password"
    BIOMETRIC = "biometric"
    API_BASIC = "api_basic"
    REAUTH_PASSWORD = "reauth_password"
    REAUTH_BIOMETRIC = "reauth_biometric"


class OperatorLoginState(Base):
    """Consecutive failures and the lock of one operator (one row per operator, created on demand)."""

    __tablename__ = "operator_login_state"

    operator_pk: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), primary_key=True)
    failed_count: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    locked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_login_method: Mapped[str] = mapped_column(String(40), default="")


class PasswordHistory(Base):
    """A previous password hash of an operator, so it cannot be chosen again."""

    __tablename__ = "password_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_pk: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), index=True)
    password_hash: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class LoginThrottle(Base):
    """Failed logins from one source address in the current window."""

    __tablename__ = "login_throttle"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UtcDateTime)
    failures: Mapped[int] = mapped_column(default=0)
