"""Tenants, business systems, operators and the audit log."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db import Base, UtcDateTime, str_enum, utcnow


class TenantKind(enum.StrEnum):
    SYSTEM = "system"  # システム管理
    MUNICIPALITY = "municipality"  # 市町村
    PREFECTURE = "prefecture"  # 都道府県
    VOLUNTARY = "voluntary"  # 任意団体


class Tenant(Base):
    """市町村・任意団体: a municipality or voluntary organisation sharing the installation."""

    __tablename__ = "tenant"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[TenantKind] = mapped_column(str_enum(TenantKind))
    display_order: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class BusinessSystem(Base):
    """業務システム: a business system protected by opauth (業務ID is two digits)."""

    __tablename__ = "business_system"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[str] = mapped_column(String(2), unique=True)  # 業務ID
    name: Mapped[str] = mapped_column(String(200))  # 業務システム名
    admin_org: Mapped[str] = mapped_column(String(200), default="")  # 管理組織名
    top_url: Mapped[str] = mapped_column(String(2000))  # 業務トップURL
    operator_admin_url: Mapped[str] = mapped_column(String(2000))  # オペレータ管理URL
    personalize_url: Mapped[str] = mapped_column(String(2000))  # パーソナライズURL
    phone: Mapped[str] = mapped_column(String(40), default="")  # 連絡先電話
    email: Mapped[str] = mapped_column(String(320), default="")  # E-mail
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    @property
    def image_name(self) -> str:
        """業務画像: derived from the business ID, as the seed screen shows."""
        return f"file_{self.business_id}.png"


class Role(enum.StrEnum):
    SYSTEM_ADMIN = "system_admin"  # システム管理者
    TENANT_MANAGER = "tenant_manager"  # 運用管理部門
    BUSINESS_ADMIN = "business_admin"  # 業務システムの管理者
    OPERATOR = "operator"  # 操作者


class AuthMethod(enum.StrEnum):
    PASSWORD = "password"
    BIOMETRIC = "biometric"


class Operator(Base):
    """操作者: a person who logs in; identified by (tenant, operator_id)."""

    __tablename__ = "operator"
    __table_args__ = (UniqueConstraint("tenant_id", "operator_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id"), index=True)
    operator_id: Mapped[str] = mapped_column(String(64))  # オペレータID
    name: Mapped[str] = mapped_column(String(200))  # 氏名・組織名
    role: Mapped[Role] = mapped_column(str_enum(Role))
    auth_method: Mapped[AuthMethod] = mapped_column(str_enum(AuthMethod), default=AuthMethod.PASSWORD)
    password_hash: Mapped[str] = mapped_column(String(400), default="")
    must_change_password: Mapped[bool] = mapped_column(default=True)
    session_version: Mapped[int] = mapped_column(default=1)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    tenant: Mapped[Tenant] = relationship()


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
