"""Login, logout and back-channel logout; the current operator and the permission check for views.

The module's session is a database row (:class:`apdl.models.OperatorSession`) named by a random id in the
signed cookie, so a back-channel logout from opauth ends it on the very next request.
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, abort, current_app, g, jsonify, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import select, update

from apdl import oplog, replay
from apdl.db import get_session, utcnow
from apdl.models import OperatorSession
from apdl.oidc_client import ClientSettings, LoginError, Provider
from apdl.permissions import Permission, granted
from apdl.tenancy import Operator

bp = Blueprint("auth", __name__)
PROVIDER_KEY = "apdl.provider"
PENDING_KEY = "apdl_login"
SESSION_KEY = "apdl_session"
NEXT_KEY = "apdl_next"
F = TypeVar("F", bound=Callable[..., Any])


def provider() -> Provider:
    """The app's view of opauth (one per app, caching discovery and keys)."""
    found = current_app.extensions.get(PROVIDER_KEY)
    if found is None:
        found = current_app.extensions[PROVIDER_KEY] = Provider(ClientSettings.from_config(current_app.config))
    return cast(Provider, found)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def current_operator() -> Operator | None:
    """The operator of this request's live session, or None."""
    if "apdl_operator" in g:
        return cast(Operator | None, g.apdl_operator)
    operator = None
    session_id = session.get(SESSION_KEY)
    if isinstance(session_id, str):
        row = get_session().get(OperatorSession, session_id)
        if row is not None and row.ended_at is None and _aware(row.expires_at) > utcnow():
            operator = Operator(session_id=row.id, sub=row.sub, sid=row.sid, name=row.name,
                                tenant_code=row.tenant_code, tenant_name=row.tenant_name,
                                in_business_id=row.in_business_id, permissions=granted(row.permissions),
                                is_admin_tenant=row.tenant_code == current_app.config["ADMIN_TENANT"])
        else:
            session.pop(SESSION_KEY, None)
    g.apdl_operator = operator
    return operator


def safe_next(raw: object) -> str:
    """``raw`` when it is a path on this module (``/residents/5?x=1``), else "": never another origin."""
    if not isinstance(raw, str) or not 0 < len(raw) <= 1000 or not raw.startswith("/") or raw.startswith("//"):
        return ""
    if "\\" in raw or any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw):
        return ""  # "/\\evil" is another host to some browsers; controls have no place in a path
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme or parts.netloc or raw.split("?", 1)[0] in ("/login", "/logout", "/auth/callback"):
        return ""
    return raw


def _to_login() -> ResponseReturnValue:
    """Send the browser to the login, remembering the page it asked for (GET only: a POST is not replayed)."""
    if request.method == "GET":
        target = safe_next(request.full_path.rstrip("?"))
        if target:
            session[NEXT_KEY] = target
    return redirect(url_for("auth.login"))


def login_required(view: F) -> F:
    """Send a browser without a live session to the login."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_operator() is None:
            return _to_login()
        return view(*args, **kwargs)
    return cast(F, wrapper)


def require(permission: Permission, *alternatives: Permission) -> Callable[[F], F]:
    """The view needs ``permission`` (or one of ``alternatives``) in the operator's 業務内ID permissions
    (403 otherwise, logged)."""
    accepted = (permission, *alternatives)
    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            operator = current_operator()
            if operator is None:
                return _to_login()
            if not any(p in operator.permissions for p in accepted):
                db = get_session()
                db.rollback()
                oplog.record(db, tenant_code=operator.tenant_code, actor=operator.actor, action=oplog.Action.REFUSED,
                             target=request.path[:200],
                             detail={"missing_permission": " | ".join(p.value for p in accepted)})
                db.commit()
                abort(403)
            return view(*args, **kwargs)
        return cast(F, wrapper)
    return decorator


@bp.get("/login")
def login() -> ResponseReturnValue:
    """Start the OIDC login at opauth."""
    remembered = session.pop(NEXT_KEY, None)
    target = safe_next(request.args.get("next")) or safe_next(remembered)
    try:
        started = provider().start(ui_locales=str(get_locale() or "ja"))
    except LoginError as exc:
        current_app.logger.warning("login could not start: %s", exc.reason)
        return render_template("error.html",
                               message=_("opauth に接続できません。しばらくしてからやり直してください。")), 503
    session[PENDING_KEY] = {"state": started.state, "nonce": started.nonce, "verifier": started.verifier,
                            "next": target}
    return redirect(started.url)


@bp.get("/auth/callback")
def callback() -> ResponseReturnValue:
    """Finish the login: check ``state``, exchange the code over mutual TLS, verify the ID token."""
    pending = session.pop(PENDING_KEY, None)
    db = get_session()
    if not isinstance(pending, dict) or not secrets.compare_digest(str(request.args.get("state", "")),
                                                                   str(pending.get("state", ""))):
        return render_template("error.html",
                               message=_("ログインの要求が見つかりません。最初からやり直してください。")), 400
    if "error" in request.args or "code" not in request.args:
        oplog.record(db, tenant_code="", actor="-", action=oplog.Action.LOGIN_FAILED,
                     detail={"error": request.args.get("error", "no code")[:100]})
        db.commit()
        return render_template("error.html",
                               message=_("opauth でのログインが拒否されました。")), 403
    try:
        identity = provider().finish(code=request.args["code"], verifier=pending["verifier"], nonce=pending["nonce"])
    except LoginError as exc:
        oplog.record(db, tenant_code="", actor="-", action=oplog.Action.LOGIN_FAILED, detail={"reason": exc.reason})
        db.commit()
        return render_template("error.html",
                               message=_("ログインを完了できませんでした。")), 403
    row = OperatorSession(id=secrets.token_urlsafe(32), sid=identity.sid, sub=identity.sub,
                          tenant_code=identity.tenant_code, tenant_name=identity.tenant_name, name=identity.name,
                          in_business_id=identity.in_business_id, permissions=identity.permissions, acr=identity.acr,
                          id_token=identity.id_token,
                          expires_at=utcnow() + timedelta(hours=current_app.config["SESSION_HOURS"]))
    db.add(row)
    oplog.record(db, tenant_code=identity.tenant_code, actor=f"{identity.in_business_id}@{identity.tenant_code}",
                 action=oplog.Action.LOGIN, detail={"sid": identity.sid, "acr": identity.acr,
                                                    "permissions": identity.permissions})
    db.commit()
    session.clear()
    session[SESSION_KEY] = row.id
    return redirect(safe_next(pending.get("next")) or url_for("main.top"))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the module's session, then opauth's (RP-initiated logout with ``id_token_hint``), back to the top.

    A counter terminal is shared: without ending opauth's session, the next "login" would need no password.
    """
    operator = current_operator()
    id_token = ""
    if operator is not None:
        db = get_session()
        row = db.get(OperatorSession, operator.session_id)
        id_token = row.id_token if row is not None else ""
        db.execute(update(OperatorSession).where(OperatorSession.id == operator.session_id)
                   .values(ended_at=utcnow(), end_reason="logout"))
        oplog.record(db, tenant_code=operator.tenant_code, actor=operator.actor, action=oplog.Action.LOGOUT)
        db.commit()
    session.clear()
    if operator is None:
        return redirect(url_for("main.top"))
    try:
        url = provider().end_session_url(id_token_hint=id_token,
                                         post_logout_redirect_uri=current_app.config["PUBLIC_BASE_URL"] + "/",
                                         ui_locales=str(get_locale() or "ja"))
    except LoginError as exc:
        current_app.logger.warning("opauth logout not reached: %s", exc.reason)
        message = _("ログアウトしました。opauth に接続できないため、opauth でもログアウトしてください。")
        return render_template("error.html", message=message), 503
    return redirect(url)


@bp.post("/backchannel-logout")
def backchannel_logout() -> ResponseReturnValue:
    """OIDC Back-Channel Logout: end every live session of the token's ``sid`` (or, without one, ``sub``)."""
    token = request.form.get("logout_token", "")
    headers = {"Cache-Control": "no-store"}
    if not token or len(token) > 8192:
        return jsonify(error="invalid_request"), 400, headers
    try:
        logout = provider().verify_logout_token(token)
    except LoginError as exc:
        current_app.logger.warning("logout token refused: %s", exc.reason)
        return jsonify(error="invalid_request"), 400, headers
    db = get_session()
    reason = replay.refusal(db, logout, max_age=current_app.config["LOGOUT_TOKEN_MAX_AGE"])
    if reason is not None:
        current_app.logger.warning("logout token refused: %s", reason)
        return jsonify(error="invalid_request"), 400, headers
    sid, sub = logout.sid, logout.sub
    match = (OperatorSession.sid == sid) if sid else (OperatorSession.sub == sub)
    if sid and sub:
        match = match & (OperatorSession.sub == sub)
    rows = db.scalars(select(OperatorSession).where(match, OperatorSession.ended_at.is_(None))).all()
    for row in rows:
        row.ended_at, row.end_reason = utcnow(), "backchannel"
        oplog.record(db, tenant_code=row.tenant_code, actor="opauth", action=oplog.Action.BACKCHANNEL_LOGOUT,
                     target=f"session:{row.sid[:40]}", detail={"sub": row.sub[:16]})
    db.commit()
    return "", 200, headers
