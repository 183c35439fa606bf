"""端末管理: register, disable and enable the terminals whose card agents may connect (``ap.manage``).

A tenant's administrator manages its own terminals; the admin tenant (``APDL_ADMIN_TENANT``) manages every
tenant's. Another tenant's terminal is as missing as none (404), through :class:`apdl.tenancy.TenantScope`.
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from sqlalchemy import func, select

from apdl import registry, terminal_registry, validation
from apdl.auth import current_operator, require
from apdl.db import get_session
from apdl.errors import InvalidInput
from apdl.permissions import Permission
from apdl.tenancy import Operator, TenantScope, scope_for

bp = Blueprint("terminals", __name__, url_prefix="/terminals")
PAGE_SIZE = 50


def _context() -> tuple[Operator, TenantScope]:
    operator = current_operator()
    assert operator is not None
    return operator, scope_for(get_session(), operator)


@bp.get("")
@require(Permission.AP_MANAGE)
def index() -> ResponseReturnValue:
    """The terminals this operator's tenant manages, a page at a time, and the form for a new one."""
    operator, scope = _context()
    page = validation.page_number(request.args.get("page"))
    db = get_session()
    total = db.scalar(select(func.count()).select_from(scope.terminals().subquery())) or 0
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(page, pages)  # past the end: the last page, as the operation log does
    rows = list(db.scalars(scope.terminals().offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)))
    return render_template("terminals.html", terminals=rows, page=page, pages=pages, total=total,
                           values={"tenant_code": operator.tenant_code, "organization": operator.tenant_name})


@bp.post("")
@require(Permission.AP_MANAGE)
def create() -> ResponseReturnValue:
    """Register a terminal: for the operator's own tenant, or (admin tenant) for the tenant named."""
    operator, scope = _context()
    tenant_code = (request.form.get("tenant_code") or operator.tenant_code).strip()
    if not registry.TENANT_CODE.match(tenant_code):
        raise InvalidInput(_("利用機関コードが正しくありません。"))
    scope.require_terminals_of(tenant_code)
    db = get_session()
    terminal_registry.register(db, request.form, tenant_code=tenant_code, actor=operator.actor)
    db.commit()
    return redirect(url_for("terminals.index"))


@bp.get("/<int:terminal_id>/disable")
@require(Permission.AP_MANAGE)
def confirm_disable(terminal_id: int) -> ResponseReturnValue:
    """The confirmation before disabling: what stops when the terminal is disabled."""
    _operator, scope = _context()
    return render_template("terminal_disable.html", terminal=scope.terminal_or_404(terminal_id))


@bp.post("/<int:terminal_id>/disable")
@require(Permission.AP_MANAGE)
def disable(terminal_id: int) -> ResponseReturnValue:
    """Disable a terminal (confirmed): its agent is refused from its next poll on, its pairings end."""
    operator, scope = _context()
    row = scope.terminal_or_404(terminal_id)
    if request.form.get("confirm") != "yes":
        raise InvalidInput(_("無効にする確認にチェックを入れてください。"))
    db = get_session()
    terminal_registry.set_enabled(db, row, False, actor=operator.actor)
    db.commit()
    return redirect(url_for("terminals.index"))


@bp.post("/<int:terminal_id>/enable")
@require(Permission.AP_MANAGE)
def enable(terminal_id: int) -> ResponseReturnValue:
    """Enable a disabled terminal again (its operators pair anew)."""
    operator, scope = _context()
    row = scope.terminal_or_404(terminal_id)
    db = get_session()
    terminal_registry.set_enabled(db, row, True, actor=operator.actor)
    db.commit()
    return redirect(url_for("terminals.index"))
