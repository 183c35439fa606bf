"""Request helpers every surface shares: query arguments, JSON bodies, one-time responses.

The body of a request was decoded and checked once where it entered (``kernel.webinput``); these read it.
"""

from __future__ import annotations

import base64
from typing import Any

from flask import Response, request
from flask_babel import gettext as _

from kernel.errors import InvalidInput, UnsupportedMediaType


def page_arg() -> int:
    """The ``page`` query argument, clamped to a sane range."""
    try:
        return max(1, min(int(request.args.get("page", "1")), 100_000))
    except ValueError:
        return 1


def data_url(data: bytes, media_type: str) -> str:
    """A data: URL holding ``data``, for a download that never touches the server again."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def no_store(body: str) -> Response:
    """An HTML response that caches must not keep (one-time secrets)."""
    response = Response(body, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"  # one-time secrets must not stay in caches
    return response


def json_body() -> dict[str, Any]:
    """The JSON object sent; ``UnsupportedMediaType`` (415) for a body of another type, ``InvalidInput`` for
    no body or JSON that is not an object.

    The body was decoded and checked by the kernel (``kernel.webinput.decode_json``) before the view ran.
    """
    if not request.is_json and (request.mimetype or request.get_data(cache=True)):
        raise UnsupportedMediaType(_("Content-Type が application/json ではありません。JSON のオブジェクトを "
                                     "Content-Type: application/json で送ってください。"))
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise InvalidInput(_("JSON のオブジェクトを送ってください(Content-Type: application/json)。"))
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


def attachment(body: bytes | str, media_type: str, filename: str, *, no_store: bool = False) -> Response:
    """A download: ``body`` as ``filename`` (``no_store`` for one-time secrets that caches must not keep)."""
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if no_store:
        headers["Cache-Control"] = "no-store"
    return Response(body, mimetype=media_type, headers=headers)
