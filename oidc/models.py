"""Tables of the business login provider: client settings, codes, issued tokens, signing keys."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db import Base, UtcDateTime, str_enum, utcnow
from operators.models import BusinessSystem


class OidcClient(Base):
    """業務ログイン認証の設定: a business system's settings as an OpenID Connect client.

    The client is the business system itself (client_id ``biz-<業務ID>``); it has no secret and
    authenticates with the SSL通信証明書 opauth issued for it (RFC 8705 tls_client_auth).
    """

    __tablename__ = "oidc_client"

    business_system_id: Mapped[int] = mapped_column(ForeignKey("business_system.id", ondelete="CASCADE"),
                                                    primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=False)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    backchannel_logout_uri: Mapped[str] = mapped_column(String(2000), default="")
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    initiate_login_uri: Mapped[str] = mapped_column(String(2000), default="")  # third-party initiated login
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    business_system: Mapped[BusinessSystem] = relationship()


class OidcAuthorizationCode(Base):
    """An authorization code: single use, short-lived, bound to client, redirect URI and PKCE.

    Only the code's SHA-256 is stored; the login facts (time, method, certificate) are copied from
    the opauth session that approved it, so the token endpoint needs no browser session.
    """

    __tablename__ = "oidc_authorization_code"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    business_system_id: Mapped[int] = mapped_column(ForeignKey("business_system.id", ondelete="CASCADE"),
                                                    index=True)
    operator_pk: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), index=True)
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    scope: Mapped[str] = mapped_column(String(200))
    nonce: Mapped[str] = mapped_column(String(255))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(10))
    auth_time: Mapped[int] = mapped_column()
    login_method: Mapped[str] = mapped_column(String(40))
    sid: Mapped[str] = mapped_column(String(64), index=True)
    operator_cert_sha256: Mapped[str] = mapped_column(String(64), default="")  # hex, biometric logins only
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OidcToken(Base):
    """An access token issued (by its ``jti``), so a replayed code can revoke what it produced."""

    __tablename__ = "oidc_token"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    code_id: Mapped[int | None] = mapped_column(ForeignKey("oidc_authorization_code.id", ondelete="SET NULL"),
                                                index=True)
    business_system_id: Mapped[int] = mapped_column(ForeignKey("business_system.id", ondelete="CASCADE"),
                                                    index=True)
    operator_pk: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), index=True)
    client_cert_sha256: Mapped[str] = mapped_column(String(64))  # hex; the cnf binding
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SigningKeyState(enum.StrEnum):
    """Where a token-signing key is in its life: published first, then used, then kept for verification."""

    NEXT = "next"  # in the JWKS, not yet signing
    ACTIVE = "active"  # signs new tokens
    RETIRED = "retired"  # in the JWKS until ``keep_until``, no longer signing


class OidcSigningKey(Base):
    """An ES256 token-signing key: the private key lives in the key store, only its URI and public JWK here."""

    __tablename__ = "oidc_signing_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)  # RFC 7638 thumbprint
    key_uri: Mapped[str] = mapped_column(String(400))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[SigningKeyState] = mapped_column(str_enum(SigningKeyState), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    keep_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OidcLogoutDelivery(Base):
    """バックチャネルログアウト: one logout token owed to one business system for one ended opauth session.

    Written in the transaction that ends the session (an outbox); ``flask oidc deliver-logouts`` sends it
    with a short timeout and retries later, so a slow or dead business system never delays the operator.
    """

    __tablename__ = "oidc_logout_delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_system_id: Mapped[int] = mapped_column(ForeignKey("business_system.id", ondelete="CASCADE"),
                                                    index=True)
    operator_pk: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), index=True)
    sid: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    gave_up_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str] = mapped_column(String(400), default="")
