"""カードステータス: the feed's import screen (admin tenant, ``ap.manage``) and 即時停止 of a 利用者's card."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from apdl import cardstatus
from apdl.auth import current_operator, login_required, require
from apdl.db import get_session
from apdl.models import Resident
from apdl.permissions import Permission
from apdl.tenancy import Operator, TenantScope, scope_for

bp = Blueprint("status", __name__)


def _context() -> tuple[Operator, TenantScope]:
    operator = current_operator()
    assert operator is not None
    return operator, scope_for(get_session(), operator)


def _page(**extra: object) -> str:
    session = get_session()
    return render_template("card_status.html", feed=cardstatus.feed_state(
        session, current_app.config["STATUS_FEED_MAX_AGE_HOURS"]), batches=cardstatus.recent_batches(session),
        stops=cardstatus.stops(session, None), **extra)


@bp.get("/card-status")
@require(Permission.AP_MANAGE)
def index() -> ResponseReturnValue:
    """The feed's last imports, the upload form and the 即時停止 in force."""
    _context()[1].require_admin_tenant()
    return _page()


@bp.post("/card-status/import")
@require(Permission.AP_MANAGE)
def upload() -> ResponseReturnValue:
    """Import one batch from an uploaded CSV or JSON file."""
    operator, scope = _context()
    scope.require_admin_tenant()
    upload = request.files.get("feed")
    data = upload.read() if upload is not None else b""
    name = (upload.filename or "") if upload is not None else ""
    try:
        result = cardstatus.import_feed(get_session(), data, fmt=cardstatus.format_of(name, data),
                                        batch_id=request.form.get("batch_id", ""), actor=operator.actor,
                                        tenant_code=operator.tenant_code)
    except cardstatus.FeedRejected as exc:
        return _page(rejected=exc), 400
    return _page(result=result)


def _resident_then_manage(resident_id: int, action: Callable[[Operator, Resident], object]) -> ResponseReturnValue:
    """The 利用者 first (another tenant's is a 404, as on every per-利用者 route), then ``ap.manage`` (403)."""
    operator, scope = _context()
    resident = scope.get_or_404(Resident, resident_id)

    @require(Permission.AP_MANAGE)
    def permitted() -> ResponseReturnValue:
        action(operator, resident)
        get_session().commit()
        return redirect(url_for("residents.show", resident_id=resident.id))

    return permitted()


@bp.post("/residents/<int:resident_id>/card/stop")
@login_required
def stop(resident_id: int) -> ResponseReturnValue:
    """即時停止 of the 利用者's card (``ap.manage``): the next card operation on it is refused."""
    return _resident_then_manage(resident_id, lambda operator, resident: cardstatus.stop(
        get_session(), resident.card_identifier, request.form.get("reason", ""), actor=operator.actor,
        tenant_code=operator.tenant_code))


@bp.post("/residents/<int:resident_id>/card/stop/cancel")
@login_required
def cancel(resident_id: int) -> ResponseReturnValue:
    """Lift this tenant's 即時停止 of the 利用者's card (``ap.manage``; audited)."""
    return _resident_then_manage(resident_id, lambda operator, resident: cardstatus.cancel_stop(
        get_session(), resident.card_identifier, request.form.get("reason", ""), actor=operator.actor,
        tenant_code=operator.tenant_code, any_tenant=operator.is_admin_tenant))
