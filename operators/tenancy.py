"""The one tenancy guard: every read and write of tenant data goes through here.

A tenant's information must never be reachable from another tenant (seed 001
I.1.3(1)). Services take a ``Scope`` (who acts, and what they may reach) and
obtain tenants, operators, staged entries and business systems only through
the functions below. Anything outside the scope is reported as ``NotFound``
(404), exactly as if it did not exist, so IDs of other tenants cannot be probed.

- システム管理者 (``Permission.ALL_TENANTS``): every tenant.
- 運用管理部門 (tenant manager): their own tenant only.
- 業務システムの管理者 (business admin): operators of tenants permitted to use
  (共同利用) the one business system they administer, for in-business IDs only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask_babel import lazy_gettext
from sqlalchemy import Select, bindparam, exists, select
from sqlalchemy.orm import Session

from kernel.errors import NotFound
from operators.models import BusinessSystem, JointUse, Operator, Role, StagedOperator, Tenant, operator_business_system
from operators.permissions import Permission, has_permission


@dataclass(frozen=True)
class Scope:
    """What the acting operator may reach."""

    actor_id: int
    actor_name: str
    tenant_id: int
    all_tenants: bool
    manages_operators: bool
    business_system_id: int | None  # set for business system administrators


# The scope of a shell user running `flask --app app ...` on the server: every tenant.
CLI_SCOPE = Scope(actor_id=0, actor_name="cli", tenant_id=0, all_tenants=True, manages_operators=True,
                  business_system_id=None)


def scope_of(operator: Operator) -> Scope:
    """The scope of a logged-in operator (revoked operators reach nothing)."""
    active = operator.revoked_at is None
    return Scope(
        actor_id=operator.id,
        actor_name=operator.operator_id,
        tenant_id=operator.tenant_id,
        all_tenants=active and has_permission(operator, Permission.ALL_TENANTS),
        manages_operators=active and has_permission(operator, Permission.MANAGE_OPERATORS),
        business_system_id=operator.administers_business_system_id
        if active and operator.role is Role.BUSINESS_ADMIN else None,
    )


# Identifiers are checked for shape before any query: a tampered value (NUL bytes, 10 kB, path
# tricks) is simply "not found", never a database error.
_TENANT_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
_OPERATOR_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
_BUSINESS_ID = re.compile(r"^[0-9]{2}$")


def well_formed_business_id(business_id: str) -> str:
    """``business_id`` if it is two digits; ``NotFound`` otherwise."""
    if not _BUSINESS_ID.match(business_id):
        raise NotFound(lazy_gettext("指定された業務システムはありません。"))
    return business_id


def _not_found_tenant() -> NotFound:
    return NotFound(lazy_gettext("指定された市町村・任意団体はありません。"))


def _joint_use_exists(tenant_id: int, business_system_id: int) -> object:
    return exists().where(JointUse.tenant_id == tenant_id, JointUse.business_system_id == business_system_id)


# --- tenants -------------------------------------------------------------------------------------

def visible_tenants(scope: Scope) -> Select[Tenant]:
    """Tenants the scope may see, in display order."""
    query = select(Tenant).order_by(Tenant.display_order, Tenant.code)
    if scope.all_tenants:
        return query
    if scope.business_system_id is not None:
        return query.where((Tenant.id == scope.tenant_id) | Tenant.id.in_(
            select(JointUse.tenant_id).where(JointUse.business_system_id == scope.business_system_id)))
    return query.where(Tenant.id == scope.tenant_id)


def get_tenant(session: Session, scope: Scope, code: str) -> Tenant:
    """The tenant with ``code`` if the scope may see it; ``NotFound`` otherwise."""
    if not _TENANT_CODE.match(code):
        raise _not_found_tenant()
    tenant = session.scalar(visible_tenants(scope).where(Tenant.code == code))
    if tenant is None:
        raise _not_found_tenant()
    return tenant


def ensure_can_manage_operators(scope: Scope, tenant: Tenant) -> None:
    """Operator registration, revocation, export, passwords: own tenant, or any for システム管理者."""
    if scope.all_tenants:
        return
    if not scope.manages_operators or tenant.id != scope.tenant_id:
        raise _not_found_tenant()


def managed_tenant(session: Session, scope: Scope, code: str) -> Tenant:
    """The tenant whose operators the scope manages; ``NotFound`` otherwise."""
    tenant = get_tenant(session, scope, code)
    ensure_can_manage_operators(scope, tenant)
    return tenant


# --- operators -----------------------------------------------------------------------------------

def operators_of(scope: Scope, tenant: Tenant) -> Select[Operator]:
    """The operators of ``tenant`` the scope may see (call after obtaining ``tenant`` here)."""
    query = select(Operator).where(Operator.tenant_id == tenant.id)
    if scope.all_tenants:
        return query
    # System administrators are out of reach of everyone else (a manager of the system tenant
    # must not reset their passwords or issue their certificates).
    query = query.where(Operator.role != Role.SYSTEM_ADMIN)
    if scope.manages_operators and tenant.id == scope.tenant_id:
        return query
    if scope.business_system_id is not None:
        return query.where(
            _joint_use_exists(tenant.id, scope.business_system_id),  # type: ignore[arg-type]
            Operator.permitted_systems.any(BusinessSystem.id == scope.business_system_id))
    return query.where(Operator.id == -1)


def get_operator(session: Session, scope: Scope, tenant: Tenant, operator_id: str) -> Operator:
    """One operator of ``tenant`` by オペレータID; ``NotFound`` when outside the scope."""
    if not _OPERATOR_ID.match(operator_id):
        raise NotFound(lazy_gettext("この団体に指定された操作者はいません。"))
    operator = session.scalar(operators_of(scope, tenant).where(Operator.operator_id == operator_id))
    if operator is None:
        raise NotFound(lazy_gettext("この団体に操作者 %(id)s はいません。", id=operator_id[:64]))
    return operator


def managed_operator(session: Session, scope: Scope, tenant: Tenant, operator_id: str) -> Operator:
    """An operator the scope may register, modify or revoke."""
    ensure_can_manage_operators(scope, tenant)
    return get_operator(session, scope, tenant, operator_id)


# --- business systems and joint use --------------------------------------------------------------

def joint_use_systems(session: Session, tenant: Tenant) -> list[BusinessSystem]:
    """The business systems ``tenant`` may use (共同利用), by 業務ID."""
    return list(session.scalars(
        select(BusinessSystem).join(JointUse, JointUse.business_system_id == BusinessSystem.id)
        .where(JointUse.tenant_id == tenant.id).order_by(BusinessSystem.business_id)))


def in_business_system(session: Session, scope: Scope, tenant: Tenant, business_id: str) -> BusinessSystem:
    """A business system whose in-business IDs the scope may manage for ``tenant``.

    The tenant must be permitted to use it; business admins only reach their own system;
    tenant managers only their own tenant.
    """
    well_formed_business_id(business_id)
    system = session.scalar(select(BusinessSystem).where(BusinessSystem.business_id == business_id))
    if system is None or session.get(JointUse, (tenant.id, system.id)) is None:
        raise NotFound(lazy_gettext(
            "業務 %(business_id)s はこの団体の共同利用業務ではありません。", business_id=business_id[:2]))
    if scope.all_tenants:
        return system
    if scope.business_system_id is not None and scope.business_system_id == system.id:
        return system
    if scope.manages_operators and tenant.id == scope.tenant_id:
        return system
    raise NotFound(lazy_gettext(
        "業務 %(business_id)s はこの団体の共同利用業務ではありません。", business_id=business_id[:2]))


def administered_systems(session: Session, scope: Scope) -> list[BusinessSystem]:
    """Business systems the scope may open the 業務内ID管理 screen for."""
    query = select(BusinessSystem).order_by(BusinessSystem.business_id)
    if scope.all_tenants:
        return list(session.scalars(query))
    if scope.business_system_id is not None:
        return list(session.scalars(query.where(BusinessSystem.id == scope.business_system_id)))
    if scope.manages_operators:
        return list(session.scalars(query.join(JointUse, JointUse.business_system_id == BusinessSystem.id)
                                    .where(JointUse.tenant_id == scope.tenant_id)))
    return []


# --- the registration target list ----------------------------------------------------------------

def staged_of(scope: Scope, tenant: Tenant) -> Select[StagedOperator]:
    """The acting manager's own 登録対象リスト for ``tenant``."""
    ensure_can_manage_operators(scope, tenant)
    return (select(StagedOperator)
            .where(StagedOperator.manager_id == scope.actor_id, StagedOperator.tenant_id == tenant.id)
            .order_by(StagedOperator.id))


def get_staged(session: Session, scope: Scope, tenant: Tenant, staged_id: int) -> StagedOperator:
    """One entry of the acting manager's own registration target list; ``NotFound`` otherwise."""
    staged = session.scalar(staged_of(scope, tenant).where(StagedOperator.id == staged_id))
    if staged is None:
        raise NotFound(lazy_gettext("指定された登録対象は登録対象リストにありません。"))
    return staged


def usable_business_systems(session: Session, operator: Operator) -> list[BusinessSystem]:
    """The systems the operator may use: permitted to them (許可業務), permitted to their tenant
    by joint use (共同利用) and enabled. Revoked operators get none."""
    if operator.revoked_at is not None:
        return []
    query = (select(BusinessSystem)
             .join(operator_business_system, operator_business_system.c.business_system_id == BusinessSystem.id)
             .join(JointUse, (JointUse.business_system_id == BusinessSystem.id)
                   & (JointUse.tenant_id == operator.tenant_id))
             .where(operator_business_system.c.operator_id == operator.id, BusinessSystem.enabled.is_(True))
             .order_by(BusinessSystem.business_id))
    return list(session.scalars(query))


# usable_business_systems for one system, asked on every business login: one prepared, table-level statement
# run on the session's connection (no ORM entities for a yes/no).
_JOINT_USE = JointUse.__table__.c
_PERMITTED = (select(operator_business_system.c.business_system_id)
              .join(JointUse.__table__, _JOINT_USE.business_system_id == operator_business_system.c.business_system_id)
              .where(operator_business_system.c.operator_id == bindparam("operator"),
                     operator_business_system.c.business_system_id == bindparam("system"),
                     _JOINT_USE.tenant_id == bindparam("tenant")))


def may_use_business_system(session: Session, operator: Operator, system: BusinessSystem) -> bool:
    """Whether ``system`` is among ``usable_business_systems(session, operator)``, with one indexed read."""
    if operator.revoked_at is not None or not system.enabled:
        return False
    return session.connection().execute(_PERMITTED, {"operator": operator.id, "system": system.id,
                                                     "tenant": operator.tenant_id}).first() is not None
