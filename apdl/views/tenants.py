"""利用機関 profiles and 利用機関別ダウンロード可能AP (admin tenant, ``ap.manage``; 404 for others)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from sqlalchemy import select

from apdl import registry
from apdl.auth import current_operator, require
from apdl.db import get_session
from apdl.errors import InvalidInput
from apdl.models import CardAp, TenantKind, TenantProfile
from apdl.permissions import Permission
from apdl.tenancy import Operator, TenantScope, scope_for

bp = Blueprint("tenants", __name__, url_prefix="/tenants")


def _admin_scope(tenant_code: str | None = None) -> tuple[Operator, TenantScope]:
    operator = current_operator()
    assert operator is not None
    scope = scope_for(get_session(), operator)
    scope.require_admin_tenant()
    if tenant_code is not None and not registry.TENANT_CODE.match(tenant_code):
        abort(404)
    return operator, scope


@bp.get("")
@require(Permission.AP_MANAGE)
def index() -> ResponseReturnValue:
    """Tenant profiles."""
    _admin_scope()
    profiles = list(get_session().scalars(select(TenantProfile).order_by(TenantProfile.tenant_code)))
    return render_template("tenants.html", profiles=profiles, kinds=list(TenantKind))


@bp.post("")
@require(Permission.AP_MANAGE)
def save() -> ResponseReturnValue:
    """Create or change a tenant profile."""
    operator, _scope = _admin_scope()
    session = get_session()
    profile = registry.set_profile(session, request.form, operator=operator)
    session.commit()
    return redirect(url_for("tenants.show", tenant_code=profile.tenant_code))


@bp.get("/<tenant_code>")
@require(Permission.AP_MANAGE)
def show(tenant_code: str) -> ResponseReturnValue:
    """The two lists: APs this tenant may download and the others."""
    _admin_scope(tenant_code)
    session = get_session()
    profile = session.get(TenantProfile, tenant_code)
    if profile is None:
        abort(404)
    chosen = registry.available_ids(session, tenant_code)
    aps = list(session.scalars(select(CardAp).where(CardAp.withdrawn_at.is_(None)).order_by(CardAp.aid)))
    return render_template("tenant.html", profile=profile, kinds=list(TenantKind),
                           available=[a for a in aps if a.id in chosen],
                           others=[a for a in aps if a.id not in chosen])


@bp.post("/<tenant_code>/availability")
@require(Permission.AP_MANAGE)
def availability(tenant_code: str) -> ResponseReturnValue:
    """選択>>> adds the APs picked on the left, <<<取消 removes those picked on the right."""
    operator, _scope = _admin_scope(tenant_code)
    session = get_session()
    if session.get(TenantProfile, tenant_code) is None:
        abort(404)
    action = request.form.get("action")
    if action not in ("add", "remove"):
        raise InvalidInput(_("「選択>>>」か「<<<取消」を押してください。"))
    add = action == "add"
    raw = request.form.getlist("add_ids" if add else "remove_ids")
    if not all(v.isascii() and v.isdigit() and len(v) < 10 for v in raw):
        raise InvalidInput(_("カードAPを選択してください。"))
    registry.change_availability(session, tenant_code, [int(v) for v in raw], add=add, operator=operator)
    session.commit()
    if not raw:
        flash(_("カードAPが選択されていないため、変更はありません。"), "done")
    elif add:
        flash(_("選択したカードAPをダウンロード可能にしました。"), "done")
    else:
        flash(_("選択したカードAPをダウンロード可能APから外しました。"), "done")
    return redirect(url_for("tenants.show", tenant_code=tenant_code))
