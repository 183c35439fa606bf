"""カードステータス: the feed's import screen (admin tenant, ``ap.manage``) and 即時停止 of a 利用者's card."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import ngettext
from werkzeug.exceptions import RequestEntityTooLarge

from apdl import cardstatus
from apdl.auth import current_operator, login_required, require
from apdl.db import get_session
from apdl.errors import Conflict, InvalidInput
from apdl.models import Resident
from apdl.permissions import Permission
from apdl.tenancy import Operator, TenantScope, actor_label, scope_for

bp = Blueprint("status", __name__)


def _context() -> tuple[Operator, TenantScope]:
    operator = current_operator()
    assert operator is not None
    return operator, scope_for(get_session(), operator)


def _page(**extra: object) -> str:
    session = get_session()
    return render_template("card_status.html", feed=cardstatus.feed_state(
        session, current_app.config["STATUS_FEED_MAX_AGE_HOURS"]), batches=cardstatus.recent_batches(session),
        stops=cardstatus.stops(session, None), actor_label=actor_label, **extra)


def _outcome(result: cardstatus.ImportResult) -> str:
    """What an import did, for the flash message after the redirect."""
    if result.repeated:
        return str(_("バッチ %(batch)s は取込済みです。何も変更していません。", batch=result.batch_id))
    return str(ngettext("バッチ %(batch)s を取り込みました（%(num)d件、変更 %(changed)d件）。",
                        "バッチ %(batch)s を取り込みました（%(num)d件、変更 %(changed)d件）。",
                        result.rows, batch=result.batch_id, changed=result.changed))


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
    if upload is None or not upload.filename:
        return _page(error=_("ファイルを選択してください。")), 400
    data = upload.read()
    try:
        result = cardstatus.import_feed(get_session(), data, fmt=cardstatus.format_of(upload.filename, data),
                                        batch_id=request.form.get("batch_id", ""), actor=operator.actor,
                                        tenant_code=operator.tenant_code)
    except cardstatus.FeedRejected as exc:
        return _page(rejected=exc), 400
    except (InvalidInput, Conflict) as exc:
        return _page(error=str(exc)), exc.status
    flash(_outcome(result), "import-result")
    return redirect(url_for("status.index"))  # a reload of the page does not post the file again


@bp.errorhandler(RequestEntityTooLarge)
def too_large(_exc: RequestEntityTooLarge) -> ResponseReturnValue:
    """A file over the upload limit: the feed page (to those who may see it) saying the limit."""
    if request.endpoint != "status.upload":
        return render_template("error.html", message=_("リクエストが大きすぎます。")), 413
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    message = _("ファイルが大きすぎます（上限 %(limit)s）。大きなファイルはコマンド（flask --app apdl.app apdl "
                "import-status）で取り込んでください。", limit=f"{limit / (1024 * 1024):g} MiB")
    operator = current_operator()
    if operator is not None and operator.is_admin_tenant and Permission.AP_MANAGE in operator.permissions:
        return _page(error=message), 413
    return render_template("error.html", message=message), 413


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
