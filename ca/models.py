"""CA data: certificate authorities and every certificate they issued."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db import Base, UtcDateTime, str_enum, utcnow


class CaKind(enum.StrEnum):
    ROOT = "root"
    ISSUING = "issuing"


class CertificateProfile(enum.StrEnum):
    """Certificate types; ``ca/profiles.py`` decides each one's extensions."""

    ROOT_CA = "root_ca"
    ISSUING_CA = "issuing_ca"
    BUSINESS_SERVER = "business_server"  # 業務サーバ証明書
    OPERATOR = "operator"  # オペレータ証明書
    TLS = "tls"  # SSL通信証明書
    OCSP_SIGNING = "ocsp_signing"


class RevocationReason(enum.StrEnum):
    """RFC 5280 CRLReason names (cryptography's ReasonFlags values)."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    CA_COMPROMISE = "cACompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    CERTIFICATE_HOLD = "certificateHold"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"



class CertificateAuthority(Base):
    """A CA of the two-level hierarchy; its private key lives behind ``key_uri``."""

    __tablename__ = "certificate_authority"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[CaKind] = mapped_column(str_enum(CaKind))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("certificate_authority.id"))
    subject: Mapped[str] = mapped_column(Text)
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    key_uri: Mapped[str] = mapped_column(String(500))
    not_before: Mapped[datetime] = mapped_column(UtcDateTime)
    not_after: Mapped[datetime] = mapped_column(UtcDateTime)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    parent: Mapped[CertificateAuthority | None] = relationship(remote_side=[id])


class Certificate(Base):
    """Every certificate signed by an opauth CA, recorded in the same transaction as its signature."""

    __tablename__ = "certificate"
    __table_args__ = (
        Index("ix_certificate_profile_created", "profile", "created_at"),
        # CRL production streams one CA's revoked certificates through this index.
        Index("ix_certificate_authority_revoked", "authority_id", "revoked_at"),
        # A re-issue names the business system's newest certificate: one index probe however many came before.
        Index("ix_certificate_business_system_latest", "business_system_id", "profile", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(String(40), unique=True)  # lowercase hex, no leading zeros
    authority_id: Mapped[int] = mapped_column(ForeignKey("certificate_authority.id"), index=True)
    profile: Mapped[CertificateProfile] = mapped_column(str_enum(CertificateProfile))
    subject: Mapped[str] = mapped_column(Text)
    common_name: Mapped[str] = mapped_column(String(200), default="", index=True)
    sans: Mapped[list[str]] = mapped_column(JSON, default=list)
    not_before: Mapped[datetime] = mapped_column(UtcDateTime)
    not_after: Mapped[datetime] = mapped_column(UtcDateTime)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    spki_sha256: Mapped[str] = mapped_column(String(64), index=True)
    # Whom a certificate was issued for, by id. The engine knows no business systems or tenants: their
    # foreign keys and ``Certificate.business_system`` are declared by operators.models, which owns them.
    business_system_id: Mapped[int | None] = mapped_column(index=True)
    tenant_id: Mapped[int | None] = mapped_column(index=True)
    issued_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("certificate.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revocation_reason: Mapped[RevocationReason | None] = mapped_column(str_enum(RevocationReason))
    invalidity_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    authority: Mapped[CertificateAuthority] = relationship()

    @property
    def status(self) -> str:
        """valid / expired / revoked / on_hold, as shown in lists."""
        if self.revoked_at is not None:
            if self.revocation_reason == RevocationReason.CERTIFICATE_HOLD:
                return "on_hold"
            return "revoked"
        if self.not_after < utcnow():
            return "expired"
        return "valid"


class RevocationState(Base):
    """Per CA: a counter bumped by every status change, and the last CRL number handed out.

    Writing this row is the lock that serialises CRL production per CA (a row lock
    on PostgreSQL, the write lock on SQLite), which keeps CRL numbers monotonic.
    """

    __tablename__ = "revocation_state"

    authority_id: Mapped[int] = mapped_column(ForeignKey("certificate_authority.id"), primary_key=True)
    status_version: Mapped[int] = mapped_column(Integer, default=0)
    crl_number: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Crl(Base):
    """A signed CRL, kept for good so earlier CRLs stay retrievable by number."""

    __tablename__ = "crl"
    __table_args__ = (UniqueConstraint("authority_id", "number", name="uq_crl_authority_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    authority_id: Mapped[int] = mapped_column(ForeignKey("certificate_authority.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    this_update: Mapped[datetime] = mapped_column(UtcDateTime)
    next_update: Mapped[datetime] = mapped_column(UtcDateTime)
    status_version: Mapped[int] = mapped_column(Integer)  # RevocationState.status_version it reflects
    entries: Mapped[int] = mapped_column(Integer)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class OcspResponse(Base):
    """A pre-signed OCSP response for one certificate and one CertID hash algorithm."""

    __tablename__ = "ocsp_response"
    __table_args__ = (UniqueConstraint("certificate_id", "hash_algorithm", name="uq_ocsp_response_cert_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificate.id"))
    hash_algorithm: Mapped[str] = mapped_column(String(16))  # of the CertID: sha1, sha256 ...
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the status it states
    revocation_reason: Mapped[RevocationReason | None] = mapped_column(str_enum(RevocationReason))
    responder_id: Mapped[int] = mapped_column(ForeignKey("certificate.id"))  # the OCSP signing certificate
    this_update: Mapped[datetime] = mapped_column(UtcDateTime)
    next_update: Mapped[datetime] = mapped_column(UtcDateTime)
    der: Mapped[bytes] = mapped_column(LargeBinary)
