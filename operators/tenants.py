"""市町村・任意団体設定, 表示順変更 and 共同利用業務設定 (システム管理者 only; see permissions.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flask_babel import lazy_gettext
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import Conflict, InvalidInput, NotFound
from operators.models import BusinessSystem, JointUse, Tenant, TenantKind

TENANT_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
KIND_LABELS = {TenantKind.MUNICIPALITY: lazy_gettext("市町村"), TenantKind.PREFECTURE: lazy_gettext("都道府県"),
               TenantKind.VOLUNTARY: lazy_gettext("任意団体"), TenantKind.SYSTEM: lazy_gettext("システム管理")}


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
                raise InvalidInput(lazy_gettext("%(field)s は文字列で指定してください。", field=key))
        code_value, name, kind_value = (str(raw[k]).strip() for k in ("code", "name", "kind"))
        if not TENANT_CODE.match(code_value):
            raise InvalidInput(lazy_gettext(
                "団体コード (code) は半角英小文字・数字・ハイフンの1〜20文字で指定してください。"))
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise InvalidInput(lazy_gettext("団体名 (name) に制御文字は使えません。"))
        if not name or len(name) > 200:
            raise InvalidInput(lazy_gettext("団体名 (name) は必須です（200文字以内）。"))
        try:
            kind = TenantKind(kind_value)
        except ValueError:
            raise InvalidInput(lazy_gettext(
                "種別 (kind) は municipality、prefecture、voluntary のいずれかです。")) from None
        if kind is TenantKind.SYSTEM:
            raise InvalidInput(lazy_gettext("システム管理の団体は一つだけです。作成できません。"))
        return cls(code=code_value, name=name, kind=kind)


def list_tenants(session: Session) -> list[Tenant]:
    """Every tenant in display order (システム管理者 screens only)."""
    return list(session.scalars(select(Tenant).order_by(Tenant.display_order, Tenant.code)))


def get_tenant_by_code(session: Session, code: str) -> Tenant:
    """A tenant by code for システム管理者 screens; ``NotFound`` otherwise."""
    if not TENANT_CODE.match(code):
        raise NotFound(lazy_gettext("指定された市町村・任意団体はありません。"))
    tenant = session.scalar(select(Tenant).where(Tenant.code == code))
    if tenant is None:
        raise NotFound(lazy_gettext("指定された市町村・任意団体はありません。"))
    return tenant


def create_tenant(session: Session, *, data: TenantData, actor: Actor) -> Tenant:
    """市町村・任意団体設定: add a tenant at the end of the display order."""
    if session.scalar(select(Tenant.id).where(Tenant.code == data.code)) is not None:
        raise Conflict(lazy_gettext("団体コード %(code)s は既に使われています。", code=data.code))
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
            raise InvalidInput(lazy_gettext("団体名 (name) は必須です。"))
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
        raise InvalidInput(lazy_gettext("すべての市町村・任意団体をちょうど一度ずつ指定してください。"))
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
        raise InvalidInput(lazy_gettext("不明な団体コード: %(codes)s", codes=", ".join(sorted(unknown))[:200]))
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
