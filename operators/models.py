"""Tenants, business systems, operators and the audit log."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Column, ForeignKey, ForeignKeyConstraint, Integer, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from ca.models import Certificate
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
    # Certificates issued for this system. The PKI engine (ca/) keeps only ``Certificate.business_system_id``;
    # the backref gives each certificate its ``business_system`` for screens and exports.
    certificates: Mapped[list[Certificate]] = relationship(
        Certificate, primaryjoin="BusinessSystem.id == foreign(Certificate.business_system_id)",
        backref=backref("business_system", viewonly=True), viewonly=True)

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


class Gender(enum.StrEnum):
    """性別 as the registration screen offers it."""

    UNSPECIFIED = "unspecified"  # 指定なし
    MALE = "male"  # 男性
    FEMALE = "female"  # 女性


# 許可業務: the business systems an operator may use (a subset of the tenant's joint use).
operator_business_system = Table(
    "operator_business_system", Base.metadata,
    Column("operator_id", ForeignKey("operator.id", ondelete="CASCADE"), primary_key=True),
    Column("business_system_id", ForeignKey("business_system.id"), primary_key=True, index=True),
)


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
    # Operator registration fields of seed 001 I.2.1(5).
    department: Mapped[str] = mapped_column(String(200), default="")  # 部門
    gender: Mapped[Gender] = mapped_column(str_enum(Gender), default=Gender.UNSPECIFIED)  # 性別
    phone: Mapped[str] = mapped_column(String(40), default="")  # 連絡先電話
    extension: Mapped[str] = mapped_column(String(20), default="")  # 内線
    email: Mapped[str] = mapped_column(String(320), default="")  # E-Mail
    info: Mapped[str] = mapped_column(String(1000), default="")  # 情報
    extra_info: Mapped[str] = mapped_column(String(1000), default="")  # 付帯情報
    # For Role.BUSINESS_ADMIN: the one business system whose in-business IDs they manage.
    administers_business_system_id: Mapped[int | None] = mapped_column(ForeignKey("business_system.id"))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, onupdate=utcnow)

    tenant: Mapped[Tenant] = relationship()
    permitted_systems: Mapped[list[BusinessSystem]] = relationship(
        secondary=operator_business_system, order_by="BusinessSystem.business_id")


class JointUse(Base):
    """共同利用: a tenant permitted to use a business system."""

    __tablename__ = "joint_use"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id"), primary_key=True)
    business_system_id: Mapped[int] = mapped_column(ForeignKey("business_system.id"), primary_key=True,
                                                    index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class InBusinessId(Base):
    """業務内ID: an operator's identity and permission set inside one business system."""

    __tablename__ = "in_business_id"
    __table_args__ = (UniqueConstraint("operator_id", "business_system_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), index=True)
    business_system_id: Mapped[int] = mapped_column(ForeignKey("business_system.id"), index=True)
    in_business_id: Mapped[str] = mapped_column(String(64))
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    operator: Mapped[Operator] = relationship()
    business_system: Mapped[BusinessSystem] = relationship()


class OperatorCertificate(Base):
    """Links an operator to each operator certificate (オペレータ証明書) issued for them."""

    __tablename__ = "operator_certificate"

    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificate.id"), primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operator.id"), index=True)


class StagedOperator(Base):
    """登録対象リスト: an operator entered by a manager and waiting for 証明書発行.

    Holds the validated fields (JSON) and the password's hash only, never the password.
    """

    __tablename__ = "staged_operator"
    __table_args__ = (UniqueConstraint("manager_id", "tenant_id", "operator_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    manager_id: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id"), index=True)
    operator_id: Mapped[str] = mapped_column(String(64))
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    password_hash: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# The certificate table's links to its owners, which the PKI engine's model leaves to the owners' side.
_certificate_table = cast(Table, Certificate.__table__)
_certificate_table.append_constraint(ForeignKeyConstraint(["business_system_id"], ["business_system.id"]))
_certificate_table.append_constraint(ForeignKeyConstraint(["tenant_id"], ["tenant.id"]))
