"""生体情報: WebAuthn credentials of operators, their random user handles, challenges and enrolment codes."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db import Base, UtcDateTime, str_enum, utcnow
from operators.models import Operator


class WebAuthnUser(Base):
    """The random WebAuthn user handle of an operator (never the operator ID: authenticators may show it)."""

    __tablename__ = "webauthn_user"

    operator_pk: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), primary_key=True)
    user_handle: Mapped[bytes] = mapped_column(LargeBinary(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WebAuthnCredential(Base):
    """A registered authenticator credential (one operator may have several)."""

    __tablename__ = "webauthn_credential"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_pk: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1023), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key
    sign_count: Mapped[int] = mapped_column(default=0)
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    aaguid: Mapped[str] = mapped_column(String(36), default="")
    attestation_format: Mapped[str] = mapped_column(String(40), default="none")
    nickname: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Set when an assertion's signature counter went backwards: a possible cloned authenticator.
    clone_suspected_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    operator: Mapped[Operator] = relationship()


class ChallengePurpose(enum.StrEnum):
    REGISTRATION = "registration"
    AUTHENTICATION = "authentication"


class WebAuthnChallenge(Base):
    """A server-side challenge: single use (``used_at``) and short-lived (``expires_at``)."""

    __tablename__ = "webauthn_challenge"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenge: Mapped[bytes] = mapped_column(LargeBinary(64), unique=True)
    purpose: Mapped[ChallengePurpose] = mapped_column(str_enum(ChallengePurpose))
    operator_pk: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EnrolmentCode(Base):
    """A single-use, expiring code a manager issues so an operator can enrol their own biometric.

    Only the code's SHA-256 is stored; the code itself is shown once to the manager.
    """

    __tablename__ = "enrolment_code"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    operator_pk: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), index=True)
    issued_by_pk: Mapped[int | None] = mapped_column(ForeignKey("operator.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
