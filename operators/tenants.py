"""市町村・任意団体設定, 表示順変更 and 共同利用業務設定 (システム管理者 only; see permissions.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from ca.errors import Conflict, InvalidInput, NotFound
from operators.audit import Actor, AuditAction, record_event
from operators.models import BusinessSystem, JointUse, Tenant, TenantKind

TENANT_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
KIND_LABELS = {TenantKind.MUNICIPALITY: "市町村", TenantKind.PREFECTURE: "都道府県",
               TenantKind.VOLUNTARY: "任意団体", TenantKind.SYSTEM: "システム管理"}


@dataclass(frozen=True)
class TenantData:
    """Validated tenant input."""

    code: str
    name: str
    kind: TenantKind

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, code: str | None = None) -> TenantData:
        raw = {k: data.get(k, "") for k in ("code", "name", "kind")}
        if code is not None:
            raw["code"] = code
        for key, value in raw.items():
            if not isinstance(value, str):
                raise InvalidInput(f"{key} must be a string")
        code_value, name, kind_value = (str(raw[k]).strip() for k in ("code", "name", "kind"))
        if not TENANT_CODE.match(code_value):
            raise InvalidInput("団体コード (code) must be 1-20 lower-case letters, digits or hyphens")
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise InvalidInput("団体名 (name) contains control characters")
        if not name or len(name) > 200:
            raise InvalidInput("団体名 (name) is required (at most 200 characters)")
        try:
            kind = TenantKind(kind_value)
        except ValueError:
            raise InvalidInput("種別 (kind) must be municipality, prefecture or voluntary") from None
        if kind is TenantKind.SYSTEM:
            raise InvalidInput("there is exactly one system tenant; it cannot be created")
        return cls(code=code_value, name=name, kind=kind)


def list_tenants(session: Session) -> list[Tenant]:
    """Every tenant in display order (システム管理者 screens only)."""
    return list(session.scalars(select(Tenant).order_by(Tenant.display_order, Tenant.code)))


def get_tenant_by_code(session: Session, code: str) -> Tenant:
    """A tenant by code for システム管理者 screens; ``NotFound`` otherwise."""
    if not TENANT_CODE.match(code):
        raise NotFound("no such tenant (市町村・任意団体)")
    tenant = session.scalar(select(Tenant).where(Tenant.code == code))
    if tenant is None:
        raise NotFound("no such tenant (市町村・任意団体)")
    return tenant


def create_tenant(session: Session, *, data: TenantData, actor: Actor) -> Tenant:
    """市町村・任意団体設定: add a tenant at the end of the display order."""
    if session.scalar(select(Tenant.id).where(Tenant.code == data.code)) is not None:
        raise Conflict(f"団体コード {data.code} is already used")
    last = session.scalar(select(Tenant.display_order).order_by(Tenant.display_order.desc()).limit(1)) or 0
    tenant = Tenant(code=data.code, name=data.name, kind=data.kind, display_order=last + 1)
    session.add(tenant)
    session.flush()
    record_event(session, action=AuditAction.TENANT_CREATED, actor=actor, target=f"tenant:{tenant.code}",
                 detail={"name": data.name, "kind": data.kind.value})
    return tenant


def update_tenant(session: Session, *, tenant: Tenant, data: TenantData, actor: Actor) -> Tenant:
    """Change name and kind (the code names the tenant everywhere and stays)."""
    if tenant.kind is TenantKind.SYSTEM:
        if not data.name:
            raise InvalidInput("団体名 (name) is required")
        tenant.name = data.name
    else:
        tenant.name, tenant.kind = data.name, data.kind
    session.flush()
    record_event(session, action=AuditAction.TENANT_UPDATED, actor=actor, target=f"tenant:{tenant.code}",
                 detail={"name": tenant.name, "kind": tenant.kind.value})
    return tenant


def reorder_tenants(session: Session, *, codes: Sequence[str], actor: Actor) -> list[Tenant]:
    """表示順変更: ``codes`` lists every tenant once, in the new order."""
    tenants = {t.code: t for t in list_tenants(session)}
    if sorted(codes) != sorted(tenants) or len(set(codes)) != len(codes):
        raise InvalidInput("list every tenant exactly once")
    for position, code in enumerate(codes):
        tenants[code].display_order = position
    session.flush()
    record_event(session, action=AuditAction.TENANTS_REORDERED, actor=actor, target="tenants",
                 detail={"order": list(codes)})
    return [tenants[c] for c in codes]


def permitted_tenants(session: Session, system: BusinessSystem) -> list[Tenant]:
    """共同利用許可団体 of ``system``, in display order."""
    return list(session.scalars(
        select(Tenant).join(JointUse, JointUse.tenant_id == Tenant.id)
        .where(JointUse.business_system_id == system.id).order_by(Tenant.display_order, Tenant.code)))


def set_joint_use(session: Session, *, settings: CaSettings, system: BusinessSystem, tenant_codes: Sequence[str],
                  actor: Actor) -> list[Tenant]:
    """共同利用業務設定 登録: exactly ``tenant_codes`` may use ``system`` from now on.

    The operators of a tenant that loses the system lose their permission for it
    (in-business IDs removed, certificates re-issued without it).
    """
    from operators.registration import withdraw_business_system

    tenants = {t.code: t for t in list_tenants(session)}
    unknown = [c for c in tenant_codes if c not in tenants]
    if unknown:
        raise InvalidInput(f"unknown tenant code(s): {', '.join(sorted(unknown))[:200]}")
    before = {t.code for t in permitted_tenants(session, system)}
    after = set(tenant_codes)
    if before - after:
        session.execute(delete(JointUse).where(
            JointUse.business_system_id == system.id,
            JointUse.tenant_id.in_([tenants[c].id for c in before - after])))
    for code in sorted(after - before):
        session.add(JointUse(tenant_id=tenants[code].id, business_system_id=system.id))
    session.flush()
    record_event(session, action=AuditAction.JOINT_USE_CHANGED, actor=actor,
                 target=f"business_system:{system.business_id}",
                 detail={"added": sorted(after - before), "removed": sorted(before - after)})
    for code in sorted(before - after):
        withdraw_business_system(session, settings=settings, tenant=tenants[code], system=system, actor=actor)
    return permitted_tenants(session, system)
