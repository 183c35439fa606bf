"""利用者登録 and the tenant's own 利用者 items (``user.register``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import pgettext

from apdl import cardops, presets, residents
from apdl.auth import current_operator, login_required, require
from apdl.db import get_session
from apdl.errors import Conflict, InvalidInput
from apdl.models import Area, CardAp, Installation, InstallState, Resident
from apdl.permissions import Permission
from apdl.tenancy import Operator, TenantScope, scope_for

bp = Blueprint("residents", __name__, url_prefix="/residents")


@bp.app_template_filter("card_status")
def card_status_label(value: str) -> str:
    """カード運用状態 in words of the UI's language (an unknown code as it is)."""
    labels: dict[str, str] = {"active": _("運用中"), "suspended": _("一時停止"),
                              "abolished": pgettext("カード運用状態", "廃止")}  # not the 廃止 of an AP (withdrawn)
    return labels.get(value, value)


@bp.app_template_filter("local_datetime")
def local_datetime(value: datetime | None) -> str:
    """A stored time (UTC; naive from SQLite) in Japan's time to the minute: ``2026-11-30 09:05 JST``."""
    if value is None:
        return ""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(residents.LOCAL_TZ).strftime("%Y-%m-%d %H:%M JST")


def _operator() -> Operator:
    operator = current_operator()
    assert operator is not None
    return operator


def _index(operator: Operator, scope: TenantScope, *, values: Mapping[str, str] | None = None,
           error: str = "", status: int = 200) -> ResponseReturnValue:
    card = request.args.get("card", "").strip()
    search_error = ""
    if card and not re.fullmatch(r"[0-9]{1,32}", card):  # never "no search" (everyone) for a mistyped FID
        search_error, status = str(_("カードFIDは半角数字で入力してください。")), 400
    people = [] if search_error else residents.search(scope, card)
    return render_template("residents.html", residents=people, fields=residents.custom_fields(scope),
                           operator=operator, Permission=Permission, statuses=residents.CARD_STATUSES,
                           genders=residents.GENDERS, values=values or {}, error=error,
                           search_error=search_error), status


@bp.get("")
@login_required
def index() -> ResponseReturnValue:
    """The tenant's 利用者 and the registration form."""
    operator = _operator()
    return _index(operator, scope_for(get_session(), operator))


@bp.post("")
@require(Permission.USER_REGISTER)
def create() -> ResponseReturnValue:
    """Register a 利用者; a refused value shows the form again with what was typed and the reason."""
    operator = _operator()
    session = get_session()
    scope = scope_for(session, operator)
    try:
        resident = residents.register(scope, request.form, operator=operator)
    except (InvalidInput, Conflict) as exc:
        session.rollback()
        return _index(operator, scope, values=request.form, error=str(exc), status=exc.status)
    session.commit()
    flash(_("利用者を登録しました（カードFID: %(card)s）。", card=resident.card_identifier), "done")
    return redirect(url_for("residents.show", resident_id=resident.id))


def _edit_form(operator: Operator, scope: TenantScope, resident: Resident, *, values: Mapping[str, str],
               error: str = "", status: int = 200) -> ResponseReturnValue:
    return render_template("resident_edit.html", resident=resident, fields=residents.custom_fields(scope),
                           operator=operator, genders=residents.GENDERS, values=values, error=error), status


def _current_values(resident: Resident) -> dict[str, str]:
    values = {name: str(getattr(resident, name) or "") for name in residents.EDITABLE if name != "custom"}
    values.update({f"custom_{key}": str(value) for key, value in (resident.custom or {}).items()})
    if resident.holder_request_at is not None:
        values["holder_request"] = "on"
    return values


@bp.get("/<int:resident_id>/edit")
@require(Permission.USER_REGISTER)
def edit(resident_id: int) -> ResponseReturnValue:
    """The 利用者's items in a form (the カードFID shown, not editable)."""
    operator = _operator()
    scope = scope_for(get_session(), operator)
    resident = scope.get_or_404(Resident, resident_id)
    return _edit_form(operator, scope, resident, values=_current_values(resident))


@bp.post("/<int:resident_id>/edit")
@require(Permission.USER_REGISTER)
def update(resident_id: int) -> ResponseReturnValue:
    """Save the 利用者's items; withdrawing the holder's request needs its own confirmation."""
    operator = _operator()
    session = get_session()
    scope = scope_for(session, operator)
    resident = scope.get_or_404(Resident, resident_id)
    try:
        residents.update(scope, resident, request.form, operator=operator)
    except (InvalidInput, Conflict) as exc:
        session.rollback()
        resident = scope.get_or_404(Resident, resident_id)
        return _edit_form(operator, scope, resident, values=request.form, error=str(exc), status=exc.status)
    session.commit()
    return redirect(url_for("residents.show", resident_id=resident.id))


@bp.get("/<int:resident_id>")
@login_required
def show(resident_id: int) -> ResponseReturnValue:
    """One 利用者: their APs on the card, and the APs this tenant may load."""
    operator = _operator()
    session = get_session()
    scope = scope_for(session, operator)
    resident = scope.get_or_404(Resident, resident_id)
    installed = session.execute(scope.select(Installation).join(CardAp, CardAp.id == Installation.card_ap_id)
                                .add_columns(CardAp).where(Installation.resident_id == resident.id,
                                                           Installation.state.in_([InstallState.INSTALLED,
                                                                                   InstallState.PENDING]))
                                .order_by(Installation.id)).all()
    on_card = {ap.id for _row, ap in installed}
    moved = cardops.moved_away(scope, resident)  # the former municipality's regional area is not offered
    offered = [ap for ap in session.scalars(scope.visible_aps(loadable=True)) if ap.id not in on_card
               and not (moved and ap.area == Area.REGIONAL.value)]
    return render_template("resident.html", resident=resident, installed=installed, offered=offered,
                           fields=residents.custom_fields(scope), operator=operator, Permission=Permission,
                           card=None, auto=presets.auto_preset(scope))


@bp.get("/fields")
@require(Permission.USER_REGISTER)
def fields() -> ResponseReturnValue:
    """The tenant's own items."""
    operator = _operator()
    scope = scope_for(get_session(), operator)
    return render_template("fields.html", fields=residents.custom_fields(scope), limit=residents.MAX_CUSTOM_FIELDS)


@bp.post("/fields")
@require(Permission.USER_REGISTER)
def add_field() -> ResponseReturnValue:
    """Add one item (at most 20)."""
    operator = _operator()
    session = get_session()
    residents.add_custom_field(scope_for(session, operator), request.form, operator=operator)
    session.commit()
    return redirect(url_for("residents.fields"))


