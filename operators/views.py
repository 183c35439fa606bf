"""Web UI for operator management of one tenant (seed 001 I.2.1(5), I.2.2(5)(6)); thin views.

Every tenant and operator is obtained through ``operators.tenancy``; a tenant
or operator outside the user's scope is a 404 like a missing one.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from sqlalchemy import func, or_, select

from ca.inquiry import export_certificate
from ca.models import RevocationReason
from db import get_session
from kernel.audit import AuditAction
from kernel.errors import InvalidInput, NotFound, OpauthError
from kernel.web import attachment, data_url, no_store, page_arg
from kernel.webinput import query_text
from operators import bulk_views
from operators.in_business import mappings_of
from operators.login.auth import current_actor, current_operator, requires, requires_recent_auth
from operators.login.passwords import generate_password
from operators.models import Operator, Tenant
from operators.operator_certs import (
    issue_operator_certificate,
    operator_certificates,
    release_operator_certificate_hold,
    revoke_operator_certificate,
)
from operators.operator_data import AUTH_METHOD_NAMES, GENDER_NAMES, LABELS, ROLE_NAMES, OperatorData
from operators.permissions import Permission, has_permission
from operators.registration import (
    administered_business_id,
    issue_staged,
    revoke_operator,
    stage_operator,
    unstage,
    update_operator,
)
from operators.tenancy import (
    get_staged,
    joint_use_systems,
    managed_operator,
    managed_tenant,
    operators_of,
    staged_of,
    visible_tenants,
)
from operators.web import ca_settings, scope, unit_of_work

bp = Blueprint("operators_admin", __name__, url_prefix="/admin")
bp.register_blueprint(bulk_views.bp)  # 一括登録, 出力, パスワード一括変更, 証明書未発行 (operators_admin.bulk.*)
FORM_FIELDS = ("operator_id", "name", "department", "gender", "phone", "extension", "email", "info",
               "extra_info", "auth_method", "in_business_id", "role", "administers_business_id")


def _form_data() -> dict[str, Any]:
    # Whole values: OperatorData checks each field's length and refuses, never a silently cut value.
    values: dict[str, Any] = {k: request.form.get(k, "") for k in FORM_FIELDS}
    values["business_ids"] = request.form.getlist("business_ids")[:100]
    return values


def _form_context(tenant: Tenant, values: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    return {"tenant": tenant, "values": values, "labels": LABELS, "genders": GENDER_NAMES,
            "auth_methods": AUTH_METHOD_NAMES, "roles": ROLE_NAMES, "scope": scope(),
            "systems": joint_use_systems(session, tenant),
            "staged": list(session.scalars(staged_of(scope(), tenant)))}


# --- tenant selection and menu ----------------------------------------------------------------------

@bp.route("/operators")
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def home() -> Any:
    """市町村・任意団体選択: the tenants the user may manage, and the menus."""
    s = scope()
    tenants = list(get_session().scalars(visible_tenants(s)))
    return render_template("operators/home.html", tenants=tenants, scope=s)


@bp.route("/operator-certificates")
@requires(Permission.MANAGE_OPERATORS)
def certificates_home() -> Any:
    """オペレータ証明書 (top menu): choose the tenant, then issue, inquire or revoke its operators' certificates."""
    s = scope()
    tenants = [t for t in get_session().scalars(visible_tenants(s)) if s.all_tenants or t.id == s.tenant_id]
    return render_template("operators/certificates_home.html", tenants=tenants)


@bp.route("/t/<code>/")
@requires(Permission.MANAGE_OPERATORS)
def tenant_menu(code: str) -> Any:
    """The tenant's menu: オペレータ証明書, オペレータ管理 and 生体情報管理 (seed screen ①)."""
    tenant = managed_tenant(get_session(), scope(), code)
    operator = current_operator()
    return render_template("operators/menu.html", tenant=tenant,
                           manages_biometrics=operator is not None
                           and has_permission(operator, Permission.MANAGE_BIOMETRICS))


@bp.route("/t/<code>/operators")
@requires(Permission.MANAGE_OPERATORS)
def operator_list(code: str) -> Any:
    """照会: the tenant's operators, filtered and paginated."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    text = query_text("q", max_length=100)
    status = request.args.get("status", "active")
    query = operators_of(s, tenant)
    if status == "active":
        query = query.where(Operator.revoked_at.is_(None))
    elif status == "revoked":
        query = query.where(Operator.revoked_at.is_not(None))
    if text:
        query = query.where(or_(Operator.operator_id.contains(text, autoescape=True),
                                Operator.name.contains(text, autoescape=True)))
    per_page = current_app.config["PAGE_SIZE"]
    page = page_arg()
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    operators = list(session.scalars(query.order_by(Operator.operator_id)
                                     .offset((page - 1) * per_page).limit(per_page)))
    return render_template("operators/list.html", tenant=tenant, operators=operators, total=total, page=page,
                           pages=max(1, -(-total // per_page)), q=text, status=status)


# --- registration: form, 登録対象リスト, 証明書発行 ------------------------------------------------

@bp.route("/t/<code>/register", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
def register(code: str) -> Any:
    """オペレータ証明書発行 ①: enter an operator; 生成 makes a password, 登録 adds to the target list."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    if request.method == "GET":
        return render_template("operators/register.html", **_form_context(tenant, {}), generated=None, error=None)
    values = _form_data()
    password = request.form.get("password", "")
    if request.form.get("action") == "generate":
        generated = generate_password()
        return render_template("operators/register.html", **_form_context(tenant, values), generated=generated,
                               error=None)
    try:
        unit_of_work(lambda: stage_operator(session, scope=s, tenant=tenant, data=OperatorData.from_mapping(values),
                                            password=password, actor=current_actor()),
                     failure=AuditAction.OPERATOR_REJECTED,
                     target=f"operator:{tenant.code}/{values['operator_id'][:64]}")
    except OpauthError as exc:
        # The password stays in the form (it may be the one 生成 just showed, seen nowhere else).
        return render_template("operators/register.html", **_form_context(tenant, values), generated=None,
                               password=password, error=exc.message), exc.status
    flash(_("%(id)s を登録対象リストに追加しました。", id=values["operator_id"]))
    return redirect(url_for("operators_admin.register", code=tenant.code))


@bp.route("/t/<code>/staged/<id:staged_id>/edit", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
def staged_edit(code: str, staged_id: int) -> Any:
    """Change an entry of the registration target list (blank password keeps the staged one)."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    staged = get_staged(session, s, tenant, staged_id)
    if request.method == "GET":
        return render_template("operators/register.html", **_form_context(tenant, dict(staged.fields)),
                               generated=None, error=None, editing=staged)
    values = _form_data()
    password = request.form.get("password", "")
    try:
        unit_of_work(lambda: stage_operator(session, scope=s, tenant=tenant, data=OperatorData.from_mapping(values),
                                            password=password, actor=current_actor(), staged=staged),
                     failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{tenant.code}/{staged.operator_id}")
    except OpauthError as exc:
        return render_template("operators/register.html", **_form_context(tenant, values), generated=None,
                               password=password, error=exc.message, editing=staged), exc.status
    return redirect(url_for("operators_admin.register", code=tenant.code))


@bp.route("/t/<code>/staged/<id:staged_id>/delete", methods=["POST"])
@requires(Permission.MANAGE_OPERATORS)
def staged_delete(code: str, staged_id: int) -> Any:
    """選択データを削除する."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    staged = get_staged(session, s, tenant, staged_id)
    unit_of_work(lambda: unstage(session, scope=s, tenant=tenant, staged=staged, actor=current_actor()),
                 failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{tenant.code}/{staged.operator_id}")
    return redirect(url_for("operators_admin.register", code=tenant.code))


@bp.route("/t/<code>/staged/issue", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
@requires_recent_auth  # issuing keys, revoking and resetting passwords need a fresh login
def staged_issue(code: str) -> Any:
    """証明書発行: confirmation (GET), then register everyone on the list and show each PKCS#12 once."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    if request.method == "GET":
        return render_template("operators/issue_confirm.html", tenant=tenant,
                               staged=list(session.scalars(staged_of(s, tenant))))
    results = unit_of_work(lambda: issue_staged(session, scope=s, settings=ca_settings(), tenant=tenant,
                                                actor=current_actor()),
                           failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{tenant.code}")
    return no_store(render_template("operators/issued.html", tenant=tenant, results=results, data_url=data_url))


# --- one operator: 照会・修正, certificates, 失効 ---------------------------------------------------

@bp.route("/t/<code>/operators/<operator_id>")
@requires(Permission.MANAGE_OPERATORS)
def operator_detail(code: str, operator_id: str) -> Any:
    """照会: the operator's fields, in-business IDs and certificates."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    operator = managed_operator(session, s, tenant, operator_id)
    return render_template("operators/detail.html", tenant=tenant, operator=operator,
                           certificates=operator_certificates(session, operator), genders=GENDER_NAMES,
                           mappings=mappings_of(session, operator),
                           auth_methods=AUTH_METHOD_NAMES, roles=ROLE_NAMES)


def _operator_values(operator: Operator) -> dict[str, Any]:
    values: dict[str, Any] = {k: getattr(operator, k) for k in FORM_FIELDS
                              if k not in ("in_business_id", "administers_business_id")}
    values["business_ids"] = [b.business_id for b in operator.permitted_systems]
    values["administers_business_id"] = administered_business_id(get_session(), operator)
    return values


@bp.route("/t/<code>/operators/<operator_id>/edit", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
@requires_recent_auth  # changing permissions needs a fresh login
def operator_edit(code: str, operator_id: str) -> Any:
    """修正: a change of 許可業務 re-issues the certificates and revokes the old ones (superseded)."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    operator = managed_operator(session, s, tenant, operator_id)
    if request.method == "GET":
        return render_template("operators/edit.html", **_form_context(tenant, _operator_values(operator)),
                               operator=operator, error=None)
    values = _form_data()
    try:
        result = unit_of_work(lambda: update_operator(
            session, scope=s, settings=ca_settings(), operator=operator,
            data=OperatorData.from_mapping(values, operator_id=operator.operator_id), actor=current_actor()),
            failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{tenant.code}/{operator.operator_id}")
    except OpauthError as exc:
        return render_template("operators/edit.html", **_form_context(tenant, values), operator=operator,
                               error=exc.message), exc.status
    message = _("操作者情報を更新しました。")
    if result.reissued:
        message += " " + _("許可業務の変更により証明書を %(count)s 件再発行しました（旧証明書は失効）。",
                           count=len(result.reissued))
    flash(message)
    return redirect(url_for("operators_admin.operator_detail", code=tenant.code, operator_id=operator.operator_id))


@bp.route("/t/<code>/operators/<operator_id>/certificates/new", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
@requires_recent_auth  # issuing keys, revoking and resetting passwords need a fresh login
def certificate_new(code: str, operator_id: str) -> Any:
    """オペレータ証明書発行 for a registered operator: PKCS#12 (key made here) or from a CSR."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    operator = managed_operator(session, s, tenant, operator_id)
    if request.method == "GET":
        return render_template("operators/certificate_new.html", tenant=tenant, operator=operator, error=None)
    csr_bytes = None
    if request.form.get("delivery") == "csr":
        limit = current_app.config["MAX_CSR_BYTES"]
        upload = request.files.get("csr")
        csr_bytes = upload.stream.read(limit + 1) if upload is not None and upload.filename else b""
    try:
        issued = unit_of_work(lambda: issue_operator_certificate(
            session, settings=ca_settings(), operator=operator, actor=current_actor(), csr_bytes=csr_bytes),
            failure=AuditAction.ISSUANCE_REJECTED, target=f"operator:{tenant.code}/{operator.operator_id}")
    except OpauthError as exc:
        return render_template("operators/certificate_new.html", tenant=tenant, operator=operator,
                               error=exc.message), exc.status
    return no_store(render_template("operators/issued.html", tenant=tenant, results=None, single=issued,
                                     operator=operator, data_url=data_url))


@bp.route("/t/<code>/operators/<operator_id>/certificates/<serial>/<fmt>")
@requires(Permission.MANAGE_OPERATORS)
def certificate_download(code: str, operator_id: str, serial: str, fmt: str) -> Any:
    """Download one of the operator's certificates (PEM, DER, chain); public data."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    operator = managed_operator(session, s, tenant, operator_id)
    for cert in operator_certificates(session, operator):
        if cert.serial == serial.lower():
            return attachment(*export_certificate(session, cert, fmt))
    raise NotFound(lazy_gettext("この操作者の指定された証明書はありません。"))


@bp.route("/t/<code>/operators/<operator_id>/certificates/<serial>/revoke", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
@requires_recent_auth  # issuing keys, revoking and resetting passwords need a fresh login
def certificate_revoke(code: str, operator_id: str, serial: str) -> Any:
    """オペレータ証明書失効 (with confirmation)."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    operator = managed_operator(session, s, tenant, operator_id)
    if request.method == "GET":
        return render_template("operators/confirm.html", tenant=tenant,
                               title=_("オペレータ証明書失効"),
                               message=_("証明書 %(serial)s を失効します。よろしいですか。", serial=serial[:40]),
                               back=url_for("operators_admin.operator_detail", code=tenant.code,
                                            operator_id=operator.operator_id))
    try:
        reason = RevocationReason(request.form.get("reason", "unspecified"))
    except ValueError:
        raise InvalidInput(lazy_gettext("失効理由が正しくありません。")) from None
    unit_of_work(lambda: revoke_operator_certificate(session, operator=operator, serial=serial,
                                                     actor=current_actor(), reason=reason),
                 failure=AuditAction.REVOCATION_REJECTED, target=f"certificate:{serial[:40]}")
    flash(_("証明書を失効しました。"))
    return redirect(url_for("operators_admin.operator_detail", code=tenant.code, operator_id=operator.operator_id))


@bp.route("/t/<code>/operators/<operator_id>/certificates/<serial>/release-hold", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
@requires_recent_auth
def certificate_release_hold(code: str, operator_id: str, serial: str) -> Any:
    """保留解除 of an operator certificate on hold (with confirmation): it is good again (removeFromCRL)."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    operator = managed_operator(session, s, tenant, operator_id)
    back = url_for("operators_admin.operator_detail", code=tenant.code, operator_id=operator.operator_id)
    if request.method == "GET":
        return render_template("operators/confirm.html", tenant=tenant, title=_("証明書の保留解除"),
                               message=_("証明書 %(serial)s の保留（certificateHold）を解除します。解除後、この証明書"
                                         "は再び有効になります（OCSP は good、次の CRL には載りません）。"
                                         "よろしいですか。", serial=serial[:40]),
                               back=back)
    unit_of_work(lambda: release_operator_certificate_hold(session, operator=operator, serial=serial,
                                                           actor=current_actor()),
                 failure=AuditAction.REVOCATION_REJECTED, target=f"certificate:{serial[:40]}")
    flash(_("証明書の保留を解除しました。"))
    return redirect(back)


@bp.route("/t/<code>/operators/<operator_id>/revoke", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
@requires_recent_auth  # issuing keys, revoking and resetting passwords need a fresh login
def operator_revoke(code: str, operator_id: str) -> Any:
    """操作者失効 (with confirmation): no login anywhere, certificates revoked, biometrics removed."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    operator = managed_operator(session, s, tenant, operator_id)
    if request.method == "GET":
        return render_template(
            "operators/confirm.html", tenant=tenant, title=_("操作者失効"),
            message=_("%(id)s（%(name)s）を失効します。ログインできなくなり、"
                      "すべてのオペレータ証明書が失効し、生体情報が削除されます。よろしいですか。",
                      id=operator.operator_id, name=operator.name),
            back=url_for("operators_admin.operator_detail", code=tenant.code, operator_id=operator.operator_id))
    result = unit_of_work(lambda: revoke_operator(session, scope=s, operator=operator, actor=current_actor()),
                          failure=AuditAction.OPERATOR_REJECTED,
                          target=f"operator:{tenant.code}/{operator.operator_id}")
    flash(_("%(id)s を失効しました（証明書 %(count)s 件失効）。", id=operator.operator_id,
            count=len(result.certificates)))
    return redirect(url_for("operators_admin.operator_detail", code=tenant.code, operator_id=operator.operator_id))


