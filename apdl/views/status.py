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
from apdl.views.cards import confirm_page

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


def _resident_then_manage(resident_id: int, check: Callable[[Operator, Resident, str], object],
                          action: Callable[[Operator, Resident, str], object], *, confirm: dict[str, str],
                          done: str) -> ResponseReturnValue:
    """The 利用者 first (another tenant's is a 404, as on every per-利用者 route), then ``ap.manage`` (403), then
    ``check`` (400/409); a POST without ``confirm=yes`` shows the confirmation, one with it runs ``action``."""
    operator, scope = _context()
    resident = scope.get_or_404(Resident, resident_id)

    @require(Permission.AP_MANAGE)
    def permitted() -> ResponseReturnValue:
        reason = request.form.get("reason", "")
        check(operator, resident, reason)
        if request.form.get("confirm") != "yes":
            return confirm_page(resident, title=confirm["title"], message=confirm["message"], action=request.path,
                                items=[(confirm["reason_label"], reason.strip())], fields={"reason": reason})
        action(operator, resident, reason)
        get_session().commit()
        flash(done, "done")
        return redirect(url_for("residents.show", resident_id=resident.id))

    return permitted()


@bp.post("/residents/<int:resident_id>/card/stop")
@login_required
def stop(resident_id: int) -> ResponseReturnValue:
    """即時停止 of the 利用者's card (``ap.manage``), once confirmed: the next card operation on it is refused."""
    return _resident_then_manage(
        resident_id,
        lambda _operator, resident, reason: cardstatus.check_stop(get_session(), resident.card_identifier, reason),
        lambda operator, resident, reason: cardstatus.stop(
            get_session(), resident.card_identifier, reason, actor=operator.actor, tenant_code=operator.tenant_code),
        confirm={"title": _("即時停止の確認"), "reason_label": _("停止の理由"),
                 "message": _("このカードを即時停止します。解除するまで、どの利用機関もこのカードを操作できません。")},
        done=_("カードを即時停止しました。"))


@bp.post("/residents/<int:resident_id>/card/stop/cancel")
@login_required
def cancel(resident_id: int) -> ResponseReturnValue:
    """Lift this tenant's 即時停止 of the 利用者's card (``ap.manage``; audited), once confirmed."""
    return _resident_then_manage(
        resident_id,
        lambda operator, resident, reason: cardstatus.check_cancel(
            get_session(), resident.card_identifier, reason, tenant_code=operator.tenant_code,
            any_tenant=operator.is_admin_tenant),
        lambda operator, resident, reason: cardstatus.cancel_stop(
            get_session(), resident.card_identifier, reason, actor=operator.actor,
            tenant_code=operator.tenant_code, any_tenant=operator.is_admin_tenant),
        confirm={"title": _("即時停止解除の確認"), "reason_label": _("解除の理由"),
                 "message": _("このカードの即時停止を解除します。解除すると、カードの操作ができるようになります。")},
        done=_("即時停止を解除しました。"))
