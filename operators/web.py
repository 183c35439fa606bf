"""Helpers shared by the tenancy web views and API (operators/views.py, bulk_views.py, tenant_views.py, api.py)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Response, current_app, jsonify, request
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import validate_csrf
from wtforms import ValidationError

from ca.authority import CaSettings
from ca.errors import InvalidInput, NotFound
from db import get_session, new_session
from operators.audit import AuditAction, audited_unit_of_work, record_event_separately
from operators.auth import current_actor, current_operator
from operators.models import AuditResult
from operators.tenancy import Scope, scope_of

T = TypeVar("T")


def scope() -> Scope:
    """The tenancy scope of the logged-in user (or API caller)."""
    operator = current_operator()
    if operator is None:  # pragma: no cover - @requires runs first
        raise NotFound("not logged in")
    return scope_of(operator)


def unit_of_work(work: Callable[[], T], *, failure: AuditAction, target: str) -> T:
    """Run ``work`` and commit once; refusals are rolled back and audited (operators.audit)."""
    return audited_unit_of_work(get_session(), new_session, work=work, failure_action=failure,
                                actor=current_actor(), target=target)


def page_arg() -> int:
    """The ``page`` query argument, clamped to a sane range."""
    try:
        return max(1, min(int(request.args.get("page", "1")), 100_000))
    except ValueError:
        return 1


def ca_settings() -> CaSettings:
    """The CA settings of the running app."""
    return CaSettings.from_config(current_app.config)


def data_url(data: bytes, media_type: str) -> str:
    """A data: URL holding ``data``, for a download that never touches the server again."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def no_store(body: str) -> Response:
    """An HTML response that caches must not keep (one-time secrets)."""
    response = Response(body, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"  # one-time secrets must not stay in caches
    return response


# --- JSON API ---------------------------------------------------------------------------------------

def json_body() -> dict[str, Any]:
    """The JSON object sent; ``InvalidInput`` for anything else.

    The body was decoded and checked by the kernel (``webinput.decode_json``) before the view ran.
    """
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise InvalidInput(_("JSON のオブジェクトを送ってください(Content-Type: application/json)。"))
    return body


def optional_json_body() -> dict[str, Any]:
    """The JSON object sent, or {} when there is no body; anything else is refused."""
    if not request.get_data(cache=True):
        return {}
    return json_body()


def _cross_site() -> bool:
    """True when a browser says the request comes from another site (a page there made it)."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in ("cross-site", "same-site")
    origin = request.headers.get("Origin")
    # "null": a sandboxed frame or a redirect chain across sites; never the app's own page.
    return bool(origin) and (origin == "null" or urlsplit(origin).netloc != request.host)


def _refuse_api_call(reason: str, message: str) -> Any:
    record_event_separately(new_session, action=AuditAction.ACCESS_DENIED, actor=current_actor(),
                            result=AuditResult.FAILURE, target=request.path[:200],
                            detail={"reason": reason, "method": request.method})
    return jsonify(error="csrf", message=message), 403


def refuse_ambient_api_calls() -> Any:
    """``before_request``: state-changing API calls must not ride on credentials a browser adds by itself.

    A page on another site can make the browser send its session cookie (a form post, a multipart
    upload), and HTTP Basic credentials the browser remembers from a login prompt. So a call
    authenticated by the cookie must carry ``X-CSRFToken``, which such a page cannot read, and a call
    a browser marks as coming from another site (``Sec-Fetch-Site``, else ``Origin``) is refused
    whatever it carries: 403, audited. Machine clients (HTTP Basic, client certificates) send neither.
    """
    if not request.path.startswith("/api/") or request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
        return None
    if _cross_site():
        return _refuse_api_call("cross_site", _("他のサイトのページからの API 呼び出しは受け付けません。"))
    auth = request.authorization
    if auth is not None and (auth.type == "bearer" or (auth.type == "basic" and auth.username and auth.password)):
        return None  # the API authenticates these credentials themselves (operators.auth)
    if not current_user.is_authenticated:
        return None  # no ambient credential: the view answers 401
    try:
        validate_csrf(request.headers.get("X-CSRFToken"))
    except ValidationError:
        return _refuse_api_call("csrf", _("セッションの Cookie で API を呼ぶときは CSRF トークン"
                                          "(X-CSRFToken ヘッダ)が必要です。"))
    return None


def int_arg(name: str, default: int, *, low: int = 1, high: int = 100_000) -> int:
    """An integer query argument within [low, high]; ``InvalidInput`` otherwise."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if len(raw) > 12:  # int() of a long digit string is itself costly; no valid value is this long
        raise InvalidInput(_("%(name)s は %(low)d 以上 %(high)d 以下で指定してください。", name=name, low=low,
                             high=high))
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(_("%(name)s は整数で指定してください。", name=name)) from None
    if not low <= value <= high:
        raise InvalidInput(_("%(name)s は %(low)d 以上 %(high)d 以下で指定してください。", name=name, low=low,
                             high=high))
    return value
