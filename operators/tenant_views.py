"""Web UI: 市町村・任意団体設定, 表示順変更, 共同利用業務設定 and 業務内ID管理 (thin views)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from db import get_session
from kernel.audit import AuditAction
from kernel.errors import InvalidInput, OpauthError
from kernel.web import page_arg
from operators.business_systems import get_by_business_id, list_business_systems
from operators.in_business import delete_in_business_id, list_mappings, parse_permissions, set_in_business_id
from operators.login.auth import current_actor, requires, requires_recent_auth
from operators.models import TenantKind
from operators.permissions import Permission
from operators.tenancy import (
    administered_systems,
    get_operator,
    get_tenant,
    in_business_system,
    well_formed_business_id,
)
from operators.tenants import (
    KIND_LABELS,
    TenantData,
    create_tenant,
    get_tenant_by_code,
    list_tenants,
    permitted_tenants,
    reorder_tenants,
    set_joint_use,
    update_tenant,
)
from operators.web import ca_settings, scope, unit_of_work

bp = Blueprint("tenants_admin", __name__, url_prefix="/admin")


@bp.route("/tenants", methods=["GET", "POST"])
@requires(Permission.MANAGE_TENANTS)
def tenant_list() -> Any:
    """市町村・任意団体設定: list and create."""
    session = get_session()
    error, status = None, 200
    values = {k: request.form.get(k, "")[:200] for k in ("code", "name", "kind")}
    if request.method == "POST":
        try:
            unit_of_work(lambda: create_tenant(session, data=TenantData.from_mapping(values), actor=current_actor()),
                         failure=AuditAction.TENANT_REJECTED, target=f"tenant:{values['code'][:20]}")
            flash(_("%(name)s を登録しました。", name=values["name"]))
            return redirect(url_for("tenants_admin.tenant_list"))
        except OpauthError as exc:
            error, status = exc.message, exc.status
    return render_template("operators/tenants.html", tenants=list_tenants(session), kinds=KIND_LABELS,
                           values=values, error=error, system_kind=TenantKind.SYSTEM), status


@bp.route("/tenants/<code>/edit", methods=["GET", "POST"])
@requires(Permission.MANAGE_TENANTS)
def tenant_edit(code: str) -> Any:
    """Change a tenant's name and kind (the code stays)."""
    session = get_session()
    tenant = get_tenant_by_code(session, code)
    error, status = None, 200
    values = {"code": tenant.code, "name": tenant.name, "kind": tenant.kind.value}
    if request.method == "POST":
        values.update(name=request.form.get("name", "")[:300], kind=request.form.get("kind", "")[:40])
        try:
            def work() -> Any:
                kind = values["kind"] if tenant.kind is not TenantKind.SYSTEM else TenantKind.MUNICIPALITY.value
                data = TenantData.from_mapping(dict(values, kind=kind), code=tenant.code)
                return update_tenant(session, tenant=tenant, data=data, actor=current_actor())

            unit_of_work(work, failure=AuditAction.TENANT_REJECTED, target=f"tenant:{tenant.code}")
            return redirect(url_for("tenants_admin.tenant_list"))
        except OpauthError as exc:
            error, status = exc.message, exc.status
    return render_template("operators/tenant_edit.html", tenant=tenant, values=values, kinds=KIND_LABELS,
                           error=error, system_kind=TenantKind.SYSTEM), status


@bp.route("/tenants/order", methods=["GET", "POST"])
@requires(Permission.MANAGE_TENANTS)
def tenant_order() -> Any:
    """市町村・任意団体表示順変更: each tenant gets a number; the list is sorted by it."""
    session = get_session()
    tenants = list_tenants(session)
    if request.method == "POST":
        entered = {t.code: request.form.get(f"order-{t.code}", "")[:20].strip() for t in tenants}
        bad = [t for t in tenants if not _order_number(entered[t.code])]
        if bad:  # refuse, keep what was typed and say which
            blank = _("空欄")
            names = "、".join(f"{t.name}（{entered[t.code] or blank}）" for t in bad)
            return render_template("operators/tenant_order.html", tenants=tenants, entered=entered,
                                   invalid={t.code for t in bad},
                                   error=_("表示順には 1 から 99999 までの整数を入力してください: %(names)s",
                                           names=names)), 400
        ordered = [t.code for _i, t in sorted(enumerate(tenants),
                                              key=lambda it: (int(entered[it[1].code]), it[0]))]
        unit_of_work(lambda: reorder_tenants(session, codes=ordered, actor=current_actor()),
                     failure=AuditAction.TENANT_REJECTED, target="tenants")
        flash(_("表示順を変更しました。"))
        return redirect(url_for("tenants_admin.tenant_order"))
    return render_template("operators/tenant_order.html", tenants=tenants, entered={}, invalid=set(), error=None)


def _order_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 99_999


@bp.route("/joint-use", methods=["GET", "POST"])
@requires(Permission.MANAGE_JOINT_USE)
@requires_recent_auth  # changing permissions needs a fresh login
def joint_use() -> Any:
    """共同利用業務設定: two lists (未許可 / 許可) moved with 選択>>> and <<<取消, saved with 登録."""
    session = get_session()
    systems = list_business_systems(session)
    business_id = request.values.get("business_id") or (systems[0].business_id if systems else "")
    if not systems:
        return render_template("operators/joint_use.html", systems=[], system=None, permitted=[], others=[])
    system = get_by_business_id(session, well_formed_business_id(business_id))
    tenants = list_tenants(session)
    if request.method == "POST":
        chosen = set(request.form.getlist("permitted"))
        action = request.form.get("action")
        if action == "select":
            chosen |= set(request.form.getlist("add"))
        elif action == "cancel":
            chosen -= set(request.form.getlist("remove"))
        elif action == "save":
            unit_of_work(lambda: set_joint_use(session, settings=ca_settings(), system=system,
                                               tenant_codes=sorted(chosen), actor=current_actor()),
                         failure=AuditAction.TENANT_REJECTED, target=f"business_system:{system.business_id}")
            flash(_("共同利用業務設定を登録しました。"))
            return redirect(url_for("tenants_admin.joint_use", business_id=system.business_id))
        codes = chosen
    else:
        codes = {t.code for t in permitted_tenants(session, system)}
    permitted = [t for t in tenants if t.code in codes]
    others = [t for t in tenants if t.code not in codes]
    return render_template("operators/joint_use.html", systems=systems, system=system, permitted=permitted,
                           others=others, changed=request.method == "POST")


@bp.route("/in-business-ids")
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def in_business_home() -> Any:
    """業務内ID管理: choose the business system and tenant."""
    session, s = get_session(), scope()
    systems = administered_systems(session, s)
    return render_template("operators/in_business_home.html", systems=systems,
                           tenants_of={sys.id: [t for t in permitted_tenants(session, sys)
                                                if _visible(s, t.code)] for sys in systems})


def _visible(s: Any, code: str) -> bool:
    try:
        get_tenant(get_session(), s, code)
        return True
    except OpauthError:
        return False


@bp.route("/t/<code>/in-business-ids/<business_id>", methods=["GET"])
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def in_business_list(code: str, business_id: str) -> Any:
    """業務内ID管理: the operators of a tenant permitted the business system (paginated)."""
    session, s = get_session(), scope()
    tenant = get_tenant(session, s, code)
    system = in_business_system(session, s, tenant, business_id)
    per_page = current_app.config["PAGE_SIZE"]
    page = page_arg()
    rows, total = list_mappings(session, scope=s, tenant=tenant, system=system, page=page, per_page=per_page)
    return render_template("operators/in_business_list.html", tenant=tenant, system=system, rows=rows, page=page,
                           pages=max(1, -(-total // per_page)), error=None, failed=None)


@bp.route("/t/<code>/in-business-ids/<business_id>/<operator_id>", methods=["POST"])
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
@requires_recent_auth  # changing permissions needs a fresh login
def in_business_set(code: str, business_id: str, operator_id: str) -> Any:
    """操作者権限登録: set (or with ``action=delete``, remove) one operator's in-business ID."""
    session, s = get_session(), scope()
    tenant = get_tenant(session, s, code)
    system = in_business_system(session, s, tenant, business_id)
    operator = get_operator(session, s, tenant, operator_id)
    target = f"operator:{tenant.code}/{operator.operator_id}"
    if request.form.get("action") == "delete":
        if request.form.get("confirmed") != "1":
            return render_template(
                "operators/confirm.html", tenant=tenant, title=_("業務内IDの削除"),
                message=_("%(id)s の業務 %(business_id)s の業務内IDと業務権限を削除します。よろしいですか。",
                          id=operator.operator_id, business_id=system.business_id),
                back=url_for("tenants_admin.in_business_list", code=tenant.code, business_id=system.business_id),
                hidden={"action": "delete", "confirmed": "1"})
        unit_of_work(lambda: delete_in_business_id(session, operator=operator, system=system, actor=current_actor()),
                     failure=AuditAction.OPERATOR_REJECTED, target=target)
    else:
        entered = {"in_business_id": request.form.get("in_business_id", ""),
                   "permissions": request.form.get("permissions", "")}
        try:
            unit_of_work(lambda: set_in_business_id(
                session, operator=operator, system=system, in_business_id=entered["in_business_id"],
                permissions=parse_permissions(entered["permissions"]), actor=current_actor()),
                failure=AuditAction.OPERATOR_REJECTED, target=target)
        except InvalidInput as exc:  # back to the list, the row as typed and the reason above it
            per_page = current_app.config["PAGE_SIZE"]
            page = page_arg()
            rows, total = list_mappings(session, scope=s, tenant=tenant, system=system, page=page,
                                        per_page=per_page)
            return render_template("operators/in_business_list.html", tenant=tenant, system=system, rows=rows,
                                   page=page, pages=max(1, -(-total // per_page)), error=exc.message,
                                   failed=dict(entered, operator_id=operator.operator_id)), exc.status
    flash(_("業務内IDを更新しました。"))
    page = page_arg()
    return redirect(url_for("tenants_admin.in_business_list", code=tenant.code, business_id=system.business_id,
                            page=page if page > 1 else None))
