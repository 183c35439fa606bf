"""プリセット of the operator's tenant (``ap.manage``)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from apdl import presets
from apdl.auth import current_operator, require
from apdl.db import get_session
from apdl.errors import InvalidInput
from apdl.models import Preset
from apdl.permissions import Permission
from apdl.tenancy import Operator, TenantScope, scope_for

bp = Blueprint("presets", __name__, url_prefix="/presets")


def _context() -> tuple[Operator, TenantScope]:
    operator = current_operator()
    assert operator is not None
    return operator, scope_for(get_session(), operator)


@bp.get("")
@require(Permission.AP_MANAGE)
def index() -> ResponseReturnValue:
    """The tenant's presets and the form for a new one."""
    _operator, scope = _context()
    aps = list(get_session().scalars(scope.visible_aps()))
    return render_template("presets.html", presets=presets.presets(scope), aps=aps,
                           names={ap.id: ap.name for ap in aps})


@bp.post("")
@require(Permission.AP_MANAGE)
def create() -> ResponseReturnValue:
    """Save a preset."""
    operator, scope = _context()
    raw = request.form.getlist("ap_ids")
    if not all(v.isascii() and v.isdigit() and len(v) < 10 for v in raw):
        raise InvalidInput(_("カードAPを選択してください。"))
    presets.save(scope, name=request.form.get("name", ""), ap_ids=[int(v) for v in raw],
                 auto_load=request.form.get("auto_load") == "on", operator=operator)
    get_session().commit()
    return redirect(url_for("presets.index"))


@bp.post("/<int:preset_id>/delete")
@require(Permission.AP_MANAGE)
def delete(preset_id: int) -> ResponseReturnValue:
    """Delete a preset."""
    operator, scope = _context()
    presets.remove(scope, scope.get_or_404(Preset, preset_id), operator=operator)
    get_session().commit()
    return redirect(url_for("presets.index"))
