"""業務内ID管理 / 操作者権限登録: per business system, operator ID → in-business ID + permissions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from flask_babel import gettext as _
from flask_babel import lazy_gettext
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import InvalidInput, NotFound
from operators.models import BusinessSystem, InBusinessId, Operator, Tenant
from operators.operator_data import IN_BUSINESS_ID
from operators.tenancy import Scope, operators_of

PERMISSION = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_PERMISSIONS = 50


@dataclass(frozen=True)
class MappingRow:
    """An operator permitted a business system and their in-business ID there, if any."""

    operator: Operator
    mapping: InBusinessId | None


def parse_permissions(raw: object) -> list[str]:
    """Permissions from a list or from text separated by commas, semicolons or whitespace."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        items = [p for p in re.split(r"[;,\s]+", raw.strip()) if p]
    elif isinstance(raw, list) and all(isinstance(p, str) for p in raw):
        items = [p.strip() for p in raw if p.strip()]
    else:
        raise InvalidInput(_("業務権限は文字列のリストで指定してください。"))
    if len(items) > MAX_PERMISSIONS:
        raise InvalidInput(_("業務権限は %(max)d 個までです。", max=MAX_PERMISSIONS))
    for item in items:
        if not PERMISSION.match(item):
            raise InvalidInput(_("業務権限「%(permission)s」に使えるのは半角英数字と _ . : - だけです（1〜64文字）。",
                                 permission=item[:40]))
    return sorted(set(items))


def list_mappings(session: Session, *, scope: Scope, tenant: Tenant, system: BusinessSystem, page: int,
                  per_page: int) -> tuple[list[MappingRow], int]:
    """Operators of ``tenant`` permitted ``system`` and their in-business IDs (paginated)."""
    query = operators_of(scope, tenant).where(
        Operator.revoked_at.is_(None), Operator.permitted_systems.any(BusinessSystem.id == system.id))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    operators = list(session.scalars(query.order_by(Operator.operator_id)
                                     .offset((page - 1) * per_page).limit(per_page)))
    mappings = {m.operator_id: m for m in session.scalars(select(InBusinessId).where(
        InBusinessId.business_system_id == system.id,
        InBusinessId.operator_id.in_([o.id for o in operators])))}
    return [MappingRow(o, mappings.get(o.id)) for o in operators], total


def mappings_of(session: Session, operator: Operator) -> list[InBusinessId]:
    """The operator's in-business IDs, by 業務ID (``operator`` comes from the tenancy guard)."""
    return sorted(session.scalars(select(InBusinessId).where(InBusinessId.operator_id == operator.id)),
                  key=lambda m: m.business_system.business_id)


def _require_permitted(operator: Operator, system: BusinessSystem) -> None:
    if system.id not in {s.id for s in operator.permitted_systems} or operator.revoked_at is not None:
        raise NotFound(lazy_gettext(
            "操作者 %(id)s は業務 %(business_id)s を許可されていません。", id=operator.operator_id,
                                     business_id=system.business_id))


def set_in_business_id(session: Session, *, operator: Operator, system: BusinessSystem, in_business_id: str,
                       permissions: Sequence[str], actor: Actor) -> InBusinessId:
    """Map the operator to ``in_business_id`` with ``permissions`` inside ``system`` (create or change).

    ``operator`` and ``system`` must come from ``operators.tenancy`` (the guard).
    """
    _require_permitted(operator, system)
    value = in_business_id.strip()
    if not IN_BUSINESS_ID.match(value):
        raise InvalidInput(_("業務内IDは半角英数字と _ . @ - の1〜64文字で入力してください。"))
    mapping = session.scalar(select(InBusinessId).where(InBusinessId.operator_id == operator.id,
                                                        InBusinessId.business_system_id == system.id))
    if mapping is None:
        mapping = InBusinessId(operator_id=operator.id, business_system_id=system.id)
        session.add(mapping)
    mapping.in_business_id = value
    mapping.permissions = list(permissions)
    session.flush()
    record_event(session, action=AuditAction.IN_BUSINESS_ID_SET, actor=actor,
                 target=f"operator:{operator.tenant.code}/{operator.operator_id}",
                 detail={"business_id": system.business_id, "in_business_id": value,
                         "permissions": list(permissions)})
    return mapping


def delete_in_business_id(session: Session, *, operator: Operator, system: BusinessSystem, actor: Actor) -> None:
    """Remove the operator's in-business ID in ``system`` (``NotFound`` if there is none)."""
    mapping = session.scalar(select(InBusinessId).where(InBusinessId.operator_id == operator.id,
                                                        InBusinessId.business_system_id == system.id))
    if mapping is None:
        raise NotFound(lazy_gettext("この操作者とこの業務の業務内IDはありません。"))
    session.delete(mapping)
    session.flush()
    record_event(session, action=AuditAction.IN_BUSINESS_ID_DELETED, actor=actor,
                 target=f"operator:{operator.tenant.code}/{operator.operator_id}",
                 detail={"business_id": system.business_id, "in_business_id": mapping.in_business_id})
