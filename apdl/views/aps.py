"""カードAP管理: the AP registry (admin tenant, ``ap.manage``); other tenants see their available APs."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from apdl import registry
from apdl.auth import current_operator, login_required, require
from apdl.db import get_session
from apdl.models import Area
from apdl.permissions import Permission
from apdl.tenancy import Operator, scope_for

bp = Blueprint("aps", __name__, url_prefix="/aps")


def _operator() -> Operator:
    operator = current_operator()
    assert operator is not None  # the decorators sent anonymous requests to the login
    return operator


@bp.get("")
@login_required
def index() -> ResponseReturnValue:
    """APs this tenant may see (all of them for the admin tenant)."""
    operator = _operator()
    scope = scope_for(get_session(), operator)
    aps = list(get_session().scalars(scope.visible_aps(include_withdrawn=operator.is_admin_tenant)))
    return render_template("aps.html", aps=aps, operator=operator, Area=Area, Permission=Permission)


@bp.post("")
@require(Permission.AP_MANAGE)
def create() -> ResponseReturnValue:
    """Register an AP."""
    operator = _operator()
    session = get_session()
    scope_for(session, operator).require_admin_tenant()
    registry.register_ap(session, request.form, operator=operator)
    session.commit()
    return redirect(url_for("aps.index"))


@bp.get("/<int:ap_id>")
@login_required
def show(ap_id: int) -> ResponseReturnValue:
    """One AP."""
    operator = _operator()
    ap = scope_for(get_session(), operator).ap_or_404(ap_id, include_withdrawn=operator.is_admin_tenant)
    return render_template("ap.html", ap=ap, operator=operator, Permission=Permission)


@bp.post("/<int:ap_id>/withdraw")
@require(Permission.AP_MANAGE)
def withdraw(ap_id: int) -> ResponseReturnValue:
    """Withdraw an AP."""
    operator = _operator()
    session = get_session()
    scope = scope_for(session, operator)
    scope.require_admin_tenant()
    registry.withdraw_ap(session, scope.ap_or_404(ap_id, include_withdrawn=True), operator=operator)
    session.commit()
    return redirect(url_for("aps.show", ap_id=ap_id))
