"""利用者登録 and the tenant's own 利用者 items (``user.register``)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from apdl import presets, residents
from apdl.auth import current_operator, login_required, require
from apdl.db import get_session
from apdl.models import CardAp, Installation, InstallState, Resident
from apdl.permissions import Permission
from apdl.tenancy import Operator, scope_for

bp = Blueprint("residents", __name__, url_prefix="/residents")


def _operator() -> Operator:
    operator = current_operator()
    assert operator is not None
    return operator


@bp.get("")
@login_required
def index() -> ResponseReturnValue:
    """The tenant's 利用者 and the registration form."""
    operator = _operator()
    scope = scope_for(get_session(), operator)
    people = residents.search(scope, request.args.get("card", ""))
    return render_template("residents.html", residents=people, fields=residents.custom_fields(scope),
                           operator=operator, Permission=Permission, statuses=residents.CARD_STATUSES,
                           genders=residents.GENDERS)


@bp.post("")
@require(Permission.USER_REGISTER)
def create() -> ResponseReturnValue:
    """Register a 利用者."""
    operator = _operator()
    session = get_session()
    resident = residents.register(scope_for(session, operator), request.form, operator=operator)
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
    offered = [ap for ap in session.scalars(scope.visible_aps()) if ap.id not in on_card]
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


