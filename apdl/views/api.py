"""The business-system API (JSON, /api/v1/): mutual TLS with the business system's SSL通信証明書.

Every route passes :func:`_caller` first (the one client-certificate check, then the 業務ID from the
certificate); what it reads or writes is scoped by :class:`apdl.tenancy.BusinessScope`. Errors are JSON
(``{"error": ...}``, see ``apdl.app``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from apdl import bizapi, clientcert, oplog
from apdl.db import get_session
from apdl.errors import InvalidInput
from apdl.tenancy import BusinessScope

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _caller() -> tuple[bizapi.BusinessSystem, BusinessScope]:
    """The calling business system and its scope; a refused certificate is logged and answered 403."""
    try:
        system = bizapi.authenticate()
    except clientcert.CertificateRefused as exc:
        db = get_session()
        db.rollback()
        oplog.record(db, tenant_code="", actor="business-system", action=oplog.Action.BUSINESS_API_REFUSED,
                     target=request.path[:200], detail={"reason": str(exc),
                                                        "certificate": clientcert.presented_summary()})
        db.commit()
        raise
    return system, BusinessScope(get_session(), system.business_id)


def _reason() -> str:
    body = request.get_json(silent=True, force=True)  # curl -d without a Content-Type is JSON too
    if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
        raise InvalidInput(_("本文は reason（理由）を持つ JSON オブジェクトで指定してください。"))
    reason = str(body["reason"])
    if "\x00" in reason:
        raise InvalidInput(_("リクエストに使えない文字が含まれています。"))
    return reason


@bp.get("/users")
def users() -> ResponseReturnValue:
    """利用者情報連携: this system's 利用者, one entry per installed AP of its own (``limit``, ``cursor``)."""
    _, scope = _caller()
    limit = bizapi.parse_limit(request.args.get("limit"))
    cursor = bizapi.parse_cursor(request.args.get("cursor"))
    return jsonify(bizapi.users(scope, limit=limit, cursor=cursor))


@bp.get("/users/<user_id>")
def user(user_id: str) -> ResponseReturnValue:
    """One 利用者 by the 利用者ID numbered into one of this system's APs; 404 for any other."""
    _, scope = _caller()
    found = bizapi.user(scope, user_id)
    if found is None:
        abort(404)
    return jsonify(found)


@bp.get("/card-status")
def changes() -> ResponseReturnValue:
    """Status changes (feed, 即時停止 and its cancel) since ``since`` of the cards holding this system's APs."""
    _, scope = _caller()
    since = bizapi.parse_since(request.args.get("since"))
    return jsonify(bizapi.changes(scope, since, limit=bizapi.parse_limit(request.args.get("limit"))))


@bp.get("/cards/<card>/status")
def card_status(card: str) -> ResponseReturnValue:
    """One card's status; 404 when it holds none of this system's APs (as when it does not exist)."""
    _, scope = _caller()
    found = bizapi.card_status(scope, bizapi.parse_card(card))
    if found is None:
        abort(404)
    return jsonify(found)


def _stop_or_cancel(card: str, action: Any) -> ResponseReturnValue:
    system, scope = _caller()
    identifier = bizapi.parse_card(card)
    reason = _reason()
    if not action(scope, system, identifier, reason):
        abort(404)
    get_session().commit()
    found = bizapi.card_status(scope, identifier)
    return jsonify(found)


@bp.post("/cards/<card>/stop")
def stop(card: str) -> ResponseReturnValue:
    """即時停止 (``{"reason": ...}``): the next card operation on it is refused; logged with this system as actor."""
    return _stop_or_cancel(card, bizapi.stop)


@bp.post("/cards/<card>/stop/cancel")
def cancel(card: str) -> ResponseReturnValue:
    """Lift a 即時停止 this system made (``{"reason": ...}``); logged."""
    return _stop_or_cancel(card, bizapi.cancel)
