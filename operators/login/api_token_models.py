"""API トークン: credentials for machine clients (scripts, business servers) of the REST API."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db import Base, UtcDateTime, utcnow
from operators.models import Operator


class ApiToken(Base):
    """A bearer token acting as its owner, limited to ``scopes``; only the SHA-256 of the secret is stored.

    The secret has 256 bits of entropy, so a plain SHA-256 suffices for storage: no slow password hash is
    needed and a request costs one indexed lookup.
    """

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(16))  # "opa_" and the first characters, for lists
    name: Mapped[str] = mapped_column(String(100))  # what the token is for (名称)
    operator_pk: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)  # Permission values
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_by: Mapped[str] = mapped_column(String(200), default="")
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_from: Mapped[str] = mapped_column(String(64), default="")

    operator: Mapped[Operator] = relationship()
