"""REST API for tenants, joint use and in-business IDs (/api/v1; documented in static/openapi.json).

Routes are added to ``operators.api.bp`` (imported at the end of operators/api.py).
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from flask_babel import lazy_gettext

from db import get_session
from kernel.audit import AuditAction
from kernel.errors import InvalidInput
from kernel.web import int_arg, json_body
from operators.api import bp
from operators.business_systems import get_by_business_id
from operators.in_business import delete_in_business_id, list_mappings, parse_permissions, set_in_business_id
from operators.login.auth import current_actor, requires
from operators.models import InBusinessId, Tenant
from operators.permissions import Permission
from operators.tenancy import get_operator, get_tenant, in_business_system, visible_tenants, well_formed_business_id
from operators.tenants import (
    TenantData,
    create_tenant,
    get_tenant_by_code,
    permitted_tenants,
    reorder_tenants,
    set_joint_use,
    update_tenant,
)
from operators.web import ca_settings, scope, unit_of_work


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    """A tenant as the API shows it."""
    return {"code": tenant.code, "name": tenant.name, "kind": tenant.kind.value,
            "display_order": tenant.display_order}


# --- tenants and joint use ------------------------------------------------------------------------

@bp.route("/tenants")
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def tenants() -> Any:
    """The tenants the caller may see."""
    return jsonify(items=[tenant_json(t) for t in get_session().scalars(visible_tenants(scope()))])


@bp.route("/tenants", methods=["POST"])
@requires(Permission.MANAGE_TENANTS)
def tenant_create() -> Any:
    """市町村・任意団体設定: create a tenant."""
    session = get_session()
    tenant = unit_of_work(lambda: create_tenant(session, data=TenantData.from_mapping(json_body()),
                                                actor=current_actor()),
                          failure=AuditAction.TENANT_REJECTED, target="tenant")
    return jsonify(tenant_json(tenant)), 201


@bp.route("/tenants/<code>")
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def tenant(code: str) -> Any:
    """One tenant the caller may see."""
    return jsonify(tenant_json(get_tenant(get_session(), scope(), code)))


@bp.route("/tenants/<code>", methods=["PUT"])
@requires(Permission.MANAGE_TENANTS)
def tenant_update(code: str) -> Any:
    """Change a tenant's name and kind."""
    session = get_session()
    found = get_tenant_by_code(session, code)

    def work() -> Tenant:
        body = json_body()
        body.setdefault("kind", found.kind.value if found.kind.value != "system" else "municipality")
        return update_tenant(session, tenant=found, data=TenantData.from_mapping(body, code=found.code),
                             actor=current_actor())

    return jsonify(tenant_json(unit_of_work(work, failure=AuditAction.TENANT_REJECTED, target=f"tenant:{found.code}")))


@bp.route("/tenant-order", methods=["PUT"])
@requires(Permission.MANAGE_TENANTS)
def tenant_order() -> Any:
    """表示順変更: ``{"codes": [...every tenant code in the new order]}``."""
    session = get_session()

    def work() -> list[Tenant]:
        codes = json_body().get("codes")
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise InvalidInput(lazy_gettext("%(field)s は団体コードのリストで指定してください。", field="codes"))
        return reorder_tenants(session, codes=codes, actor=current_actor())

    ordered = unit_of_work(work, failure=AuditAction.TENANT_REJECTED, target="tenants")
    return jsonify(items=[tenant_json(t) for t in ordered])


@bp.route("/business-systems/<business_id>/joint-use")
@requires(Permission.MANAGE_JOINT_USE)
def joint_use(business_id: str) -> Any:
    """共同利用業務設定: the tenants permitted to use the business system."""
    session = get_session()
    system = get_by_business_id(session, well_formed_business_id(business_id))
    return jsonify(business_id=system.business_id, tenants=[t.code for t in permitted_tenants(session, system)])


@bp.route("/business-systems/<business_id>/joint-use", methods=["PUT"])
@requires(Permission.MANAGE_JOINT_USE)
def joint_use_put(business_id: str) -> Any:
    """共同利用業務設定: ``{"tenants": [codes]}`` replaces the permitted tenants."""
    session = get_session()
    system = get_by_business_id(session, well_formed_business_id(business_id))

    def work() -> list[Tenant]:
        codes = json_body().get("tenants")
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise InvalidInput(lazy_gettext("%(field)s は団体コードのリストで指定してください。", field="tenants"))
        return set_joint_use(session, settings=ca_settings(), system=system, tenant_codes=codes, actor=current_actor())

    result = unit_of_work(work, failure=AuditAction.TENANT_REJECTED, target=f"business_system:{system.business_id}")
    return jsonify(business_id=system.business_id, tenants=[t.code for t in result])


# --- in-business IDs ------------------------------------------------------------------------------

@bp.route("/tenants/<code>/business-systems/<business_id>/in-business-ids")
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def in_business_ids(code: str, business_id: str) -> Any:
    """業務内ID管理: operators permitted the business system and their in-business IDs."""
    session, s = get_session(), scope()
    found = get_tenant(session, s, code)
    system = in_business_system(session, s, found, business_id)
    page = int_arg("page", 1)
    per_page = int_arg("per_page", current_app.config["PAGE_SIZE"], high=500)
    rows, total = list_mappings(session, scope=s, tenant=found, system=system, page=page, per_page=per_page)
    return jsonify(items=[{"operator_id": r.operator.operator_id, "name": r.operator.name,
                           "in_business_id": r.mapping.in_business_id if r.mapping else None,
                           "permissions": r.mapping.permissions if r.mapping else []} for r in rows],
                   page=page, per_page=per_page, total=total)


@bp.route("/tenants/<code>/business-systems/<business_id>/in-business-ids/<operator_id>", methods=["PUT"])
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def in_business_id_put(code: str, business_id: str, operator_id: str) -> Any:
    """操作者権限登録: ``{"in_business_id": "U001", "permissions": ["read", ...]}``."""
    session, s = get_session(), scope()
    found = get_tenant(session, s, code)
    system = in_business_system(session, s, found, business_id)
    op = get_operator(session, s, found, operator_id)

    def work() -> InBusinessId:
        body = json_body()
        value = body.get("in_business_id")
        if not isinstance(value, str):
            raise InvalidInput(lazy_gettext("%(field)s は文字列で指定してください。", field="in_business_id"))
        return set_in_business_id(session, operator=op, system=system, in_business_id=value,
                                  permissions=parse_permissions(body.get("permissions")), actor=current_actor())

    mapping = unit_of_work(work, failure=AuditAction.OPERATOR_REJECTED,
                           target=f"operator:{found.code}/{op.operator_id}")
    return jsonify(operator_id=op.operator_id, business_id=system.business_id, in_business_id=mapping.in_business_id,
                   permissions=mapping.permissions)


@bp.route("/tenants/<code>/business-systems/<business_id>/in-business-ids/<operator_id>", methods=["DELETE"])
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def in_business_id_delete(code: str, business_id: str, operator_id: str) -> Any:
    """Remove an operator's in-business ID."""
    session, s = get_session(), scope()
    found = get_tenant(session, s, code)
    system = in_business_system(session, s, found, business_id)
    op = get_operator(session, s, found, operator_id)
    unit_of_work(lambda: delete_in_business_id(session, operator=op, system=system, actor=current_actor()),
                 failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{found.code}/{op.operator_id}")
    return Response(status=204)
