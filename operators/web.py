"""Helpers of the operators' web views and API that know the logged-in operator.

The tenancy scope, the audited unit of work, the CSRF rule for API calls and the CSV export response.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Response, current_app, jsonify, request
from flask_babel import gettext as _
from flask_wtf.csrf import validate_csrf
from sqlalchemy.orm import Session
from wtforms import ValidationError

from ca.authority import CaSettings
from db import get_session, new_session
from kernel.audit import AuditAction, AuditResult, audited_unit_of_work, record_event_separately
from kernel.errors import NotFound
from kernel.web import attachment
from kernel.webinput import query_text
from operators import csv_io
from operators.login.auth import current_actor, current_operator, session_operator
from operators.models import Tenant
from operators.tenancy import Scope, scope_of

T = TypeVar("T")


def scope() -> Scope:
    """The tenancy scope of the logged-in user (or API caller)."""
    operator = current_operator()
    if operator is None:  # pragma: no cover - @requires runs first
        raise NotFound("not logged in")
    return scope_of(operator)


def unit_of_work(work: Callable[[], T], *, failure: AuditAction, target: str) -> T:
    """Run ``work`` and commit once; refusals are rolled back and audited (kernel.audit)."""
    return audited_unit_of_work(get_session(), new_session, work=work, failure_action=failure,
                                actor=current_actor(), target=target)


def ca_settings() -> CaSettings:
    """The CA settings of the running app."""
    return CaSettings.from_config(current_app.config)



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
        return None  # the API authenticates these credentials themselves (operators.login.auth)
    if session_operator() is None:
        return None  # no ambient credential: the view answers 401
    try:
        validate_csrf(request.headers.get("X-CSRFToken"))
    except ValidationError:
        return _refuse_api_call("csrf", _("セッションの Cookie で API を呼ぶときは CSRF トークン"
                                          "(X-CSRFToken ヘッダ)が必要です。"))
    return None


def export_filters() -> dict[str, str]:
    """オペレータ情報出力's filters from the query string (each a substring match, under the text rule)."""
    return {k: query_text(k, max_length=200) for k in csv_io.EXPORT_FILTERS}


def operators_csv(session: Session, s: Scope, tenant: Tenant, filters: dict[str, str]) -> Response:
    """オペレータ情報出力: the tenant's operators as a CSV download (UTF-8, or CP932 with ``encoding=cp932``)."""
    encoding = "cp932" if request.args.get("encoding") == "cp932" else "utf-8"
    body = unit_of_work(lambda: csv_io.export_csv(session, scope=s, tenant=tenant, filters=filters,
                                                  actor=current_actor(), encoding=encoding),
                        failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{tenant.code}")
    return attachment(body, "text/csv", f"operators-{tenant.code}.csv")
