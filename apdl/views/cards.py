"""カードAP搭載 / カードAP削除 / 地域住民向け領域設定 for one 利用者, on the card in the server's reader."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from apdl import cardops, presets, residents
from apdl.auth import current_operator, require
from apdl.db import get_session
from apdl.errors import InvalidInput
from apdl.models import CardAp, Installation, InstallState, Resident
from apdl.permissions import Permission
from apdl.tenancy import Operator, TenantScope, scope_for

bp = Blueprint("cards", __name__, url_prefix="/residents/<int:resident_id>/card")


def _flash_contact(view: cardops.CardView) -> None:
    """What this contact changed besides the operation asked for, by name: a move's regional APs deleted, and
    this tenant's records closed because the card no longer holds their APs (reset, replaced, changed elsewhere)."""
    if view.purged:
        flash(_("転出のため、地域住民向け領域のカードAPを削除しました: %(names)s", names="、".join(view.purged)),
              "moved")
    if view.closed:
        flash(_("次のカードAPはカードにないため、搭載記録を削除済みにしました: %(names)s",
                names="、".join(view.closed)), "warning")


def _context(resident_id: int) -> tuple[Operator, TenantScope, Resident]:
    operator = current_operator()
    assert operator is not None
    scope = scope_for(get_session(), operator)
    return operator, scope, scope.get_or_404(Resident, resident_id)


@bp.post("/read")
@require(Permission.AP_DOWNLOAD)
def read(resident_id: int) -> ResponseReturnValue:
    """再読み込み: read the card (GET STATUS) and show what it holds."""
    operator, scope, resident = _context(resident_id)
    with cardops.open_card() as card:
        view = cardops.contact(scope, card, resident, operator=operator)
    _flash_contact(view)
    flash(_("カードを読み取りました。"), "done")
    session = get_session()
    installed = session.execute(scope.select(Installation).join(CardAp, CardAp.id == Installation.card_ap_id)
                                .add_columns(CardAp).where(Installation.resident_id == resident.id,
                                                           Installation.state == InstallState.INSTALLED)
                                .order_by(Installation.id)).all()
    on_card = {ap.id for _row, ap in installed}
    offered = [ap for ap in session.scalars(scope.visible_aps(loadable=True)) if ap.id not in on_card
               and cardops.may_offer(scope, view, ap)]
    return render_template("resident.html", resident=resident, installed=installed, offered=offered,
                           fields=residents.custom_fields(scope), operator=operator, Permission=Permission,
                           card=view, auto=presets.auto_preset(scope))


@bp.post("/regional-area")
@require(Permission.AP_DOWNLOAD)
def regional_area(resident_id: int) -> ResponseReturnValue:
    """地域住民向け領域設定."""
    operator, scope, resident = _context(resident_id)
    with cardops.open_card() as card:
        view, created = cardops.create_regional_area(scope, card, resident, operator=operator)
    _flash_contact(view)
    flash(_("地域住民向け領域を設定しました。") if created else _("地域住民向け領域は設定済みです。"), "done")
    return redirect(url_for("residents.show", resident_id=resident.id))


@bp.post("/download")
@require(Permission.AP_DOWNLOAD)
def download(resident_id: int) -> ResponseReturnValue:
    """カードAPダウンロード of the selected APs."""
    operator, scope, resident = _context(resident_id)
    raw = request.form.getlist("ap_ids")
    if not all(v.isascii() and v.isdigit() and len(v) < 10 for v in raw):
        raise InvalidInput(_("搭載するカードAPを選択してください。"))
    ap_ids = [int(v) for v in raw]
    auto = presets.auto_preset(scope)
    if request.form.get("preset") == "auto" and auto is not None:
        visible = {ap.id for ap in get_session().scalars(scope.visible_aps(loadable=True))}
        ap_ids = [ap_id for ap_id in auto.card_ap_ids if ap_id in visible]
    with cardops.open_card() as card:
        view, done = cardops.download(scope, card, resident, ap_ids, pin=request.form.get("pin", ""),
                                      operator=operator)
    _flash_contact(view)
    loaded = [ap.name for ap in (get_session().get(CardAp, row.card_ap_id) for row in done) if ap is not None]
    flash(_("カードAPを搭載しました: %(names)s", names="、".join(loaded)), "done")
    return redirect(url_for("residents.show", resident_id=resident.id))


@bp.post("/installations/<int:installation_id>/delete")
@require(Permission.AP_DELETE)
def delete(resident_id: int, installation_id: int) -> ResponseReturnValue:
    """カードAP削除 on the holder's request: the first POST shows what will be deleted, one carrying
    ``confirm=yes`` deletes it."""
    operator, scope, resident = _context(resident_id)
    installation = scope.get_or_404(Installation, installation_id)
    if request.form.get("confirm") != "yes":
        ap = cardops.check_delete(scope, resident, installation, operator=operator)
        return confirm_page(resident, title=_("カードAP削除の確認"),
                            items=[(_("カードAP名"), ap.name), ("AID", ap.aid)],
                            message=_("本人の申出により、このカードAPをカードから削除します。"),
                            action=url_for("cards.delete", resident_id=resident.id, installation_id=installation.id))
    with cardops.open_card() as card:
        view, ap = cardops.delete(scope, card, resident, installation, operator=operator)
    _flash_contact(view)
    flash(_("カードAP「%(name)s」を削除しました。", name=ap.name), "done")
    return redirect(url_for("residents.show", resident_id=resident.id))


def confirm_page(resident: Resident, *, title: str, items: list[tuple[str, str]], message: str, action: str,
                 fields: dict[str, str] | None = None) -> str:
    """The shared confirmation of a destructive card action: what will happen to whose card; 「実行する」 posts
    ``action`` again with ``confirm=yes`` (and ``fields``), 「戻る」 returns to the 利用者 without a change."""
    return render_template("confirm.html", resident=resident, title=title, items=items, message=message,
                           action=action, fields=fields or {})
