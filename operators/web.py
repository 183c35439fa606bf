"""Helpers shared by the tenancy web views and API (operators/views.py, bulk_views.py, tenant_views.py, api.py)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, current_app, request

from ca.authority import CaSettings
from ca.errors import InvalidInput, NotFound
from db import get_session, new_session
from operators.audit import AuditAction, audited_unit_of_work
from operators.auth import current_actor, current_operator
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
    """The JSON object sent; ``InvalidInput`` for anything else."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("send a JSON object (Content-Type: application/json)")
    return body


def optional_json_body() -> dict[str, Any]:
    """The JSON object sent, or {} when there is no body; anything else is refused."""
    if not request.get_data(cache=True):
        return {}
    return json_body()


def int_arg(name: str, default: int, *, low: int = 1, high: int = 100_000) -> int:
    """An integer query argument within [low, high]; ``InvalidInput`` otherwise."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}")
    return value
