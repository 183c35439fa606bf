"""Request input, decoded and checked once where it enters, before any view runs (kernel).

- **JSON bodies** go through ``decode_json`` (Flask's ``request.get_json`` included, see
  ``StrictJson``): a size limit, a nesting depth limit, strict UTF-8, no lone surrogates,
  no NUL or other control characters in strings or keys, no duplicate keys, no NaN or
  Infinity, integers within ±2**53 (RFC 7493 I-JSON).
- **Text fields** follow one rule, ``text``: a string, no control characters (line breaks only
  where a field is multi-line), the length checked and refused, never silently cut.
- **Path, query string and form fields** are refused before any view when they carry control
  characters, a query string or form also when it is not UTF-8 (``guard_request``; 404 for the path,
  400 otherwise); a NUL would otherwise reach
  the database (PostgreSQL refuses it, SQLite stores it). HTTP Basic credentials are judged by
  the login rules (a NUL is a failed, audited login: 401).
- **Integer path segments** use ``IdConverter``: out of the database's range is 404, not an
  overflow.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

import flask
from flask import Flask, current_app, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from werkzeug.exceptions import ClientDisconnected
from werkzeug.routing import IntegerConverter, Map
from werkzeug.wsgi import LimitedStream

from kernel.errors import InvalidInput, NotFound, OpauthError

MAX_JSON_DEPTH = 32
MAX_JSON_INT = 2**53 - 1
# PostgreSQL INTEGER, the type of every primary key and CRL number.
MAX_DB_INT = 2**31 - 1

# C0 controls except TAB, LF and CR, plus DEL: never part of text a person typed. Also the bidirectional
# embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): Japanese text never needs them, and
# they make a name display as something else ("Trojan Source").
_CONTROL_MULTILINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
# Single-line text: TAB, LF and CR are refused too.
_CONTROL = re.compile("[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# JSON strings (possessive, so a long string costs one pass) and the brackets outside them.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


class BodyTooLarge(OpauthError):
    """A request body over its size limit (413)."""

    status = 413
    code = "too_large"


class UnsafeText(InvalidInput):
    """Text carrying control characters or unpaired surrogates."""


# --- JSON -------------------------------------------------------------------------------------------

def _nesting_depth(data: bytes, limit: int) -> int:
    """Deepest bracket nesting outside strings; stops counting once past ``limit``."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise InvalidInput(_("JSON の数値 %(value)s は使用できません。", value=name))


def _bounded_int(literal: str) -> int:
    if len(literal) > 16:  # more digits than 2**53 has; int() of thousands of digits is itself costly
        raise InvalidInput(_("JSON の整数が大きすぎます(絶対値 %(limit)d 以下)。", limit=MAX_JSON_INT))
    value = int(literal)
    if abs(value) > MAX_JSON_INT:
        raise InvalidInput(_("JSON の整数が大きすぎます(絶対値 %(limit)d 以下)。", limit=MAX_JSON_INT))
    return value


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise InvalidInput(_("JSON の数値が範囲外です。"))
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise InvalidInput(_("JSON のオブジェクトに同じキーが重複しています。"))
    return result


def _check_strings(value: Any) -> None:
    """Every string and key of a decoded document is clean text (iterative: depth is already bounded)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item) or _CONTROL_MULTILINE.search(item):
                raise UnsafeText(_("JSON の文字列に使用できない文字(制御文字又は対になっていないサロゲート)が"
                                   "含まれています。"))
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def decode_json(data: bytes, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON document in ``data``, checked (see the module docstring); ``InvalidInput`` or 413 otherwise."""
    if len(data) > max_bytes:
        raise BodyTooLarge(_("リクエスト本文が大きすぎます(最大 %(limit)d バイト)。", limit=max_bytes))
    try:
        text_ = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(_("リクエスト本文が正しい UTF-8 ではありません。")) from None
    if _nesting_depth(data, max_depth) > max_depth:
        raise InvalidInput(_("JSON の入れ子が深すぎます(最大 %(depth)d 段)。", depth=max_depth))
    try:
        value = json.loads(text_, parse_constant=_refuse_constant, parse_int=_bounded_int,
                           parse_float=_finite_float, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        raise InvalidInput(_("リクエスト本文を JSON として解釈できません。")) from None
    _check_strings(value)
    return value


class StrictJson:
    """Stands in for ``flask.json`` as ``Request.json_module``: every ``get_json`` goes through ``decode_json``."""

    @staticmethod
    def loads(data: str | bytes, **_kwargs: Any) -> Any:
        raw = data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
        return decode_json(raw, max_bytes=int(current_app.config["MAX_UPLOAD_BYTES"]))

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        return current_app.json.dumps(obj, **kwargs)


# --- text -------------------------------------------------------------------------------------------

def has_control_characters(value: str, *, multiline: bool = False) -> bool:
    """True when ``value`` holds a control character (TAB/LF/CR allowed if ``multiline``) or a lone surrogate."""
    pattern = _CONTROL_MULTILINE if multiline else _CONTROL
    return bool(pattern.search(value) or _SURROGATE.search(value))


def text(value: object, *, field: str, max_length: int, multiline: bool = False, required: bool = False) -> str:
    """The one rule for a text field: a string without control characters, at most ``max_length`` after strip.

    ``None`` counts as empty. Over-long text is refused, never cut.
    """
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(_("%(field)s は文字列で指定してください。", field=field))
    value = value.strip()
    if has_control_characters(value, multiline=multiline):
        raise UnsafeText(_("%(field)s に使用できない文字(制御文字)が含まれています。", field=field))
    if len(value) > max_length:
        raise InvalidInput(_("%(field)s は %(max)d 文字以内で入力してください。", field=field, max=max_length))
    if required and not value:
        raise InvalidInput(_("%(field)s を入力してください。", field=field))
    return value


def query_text(name: str, *, max_length: int, default: str = "") -> str:
    """A query-string argument under the text rule (``text``)."""
    return text(request.args.get(name, default), field=name, max_length=max_length)


# --- the request guard ------------------------------------------------------------------------------

def _check_pairs(pairs: Iterable[tuple[str, list[Any]]], *, where: Any, multiline: bool) -> None:
    # ``where`` is a lazy string: translated only when something is refused, not on every request.
    for key, values in pairs:
        for value in (key, *values):
            if isinstance(value, str) and has_control_characters(value, multiline=multiline):
                raise UnsafeText(_("%(where)sに使用できない文字(制御文字)が含まれています。", where=str(where)))


def utf8_query(raw: bytes) -> bool:
    """Whether a raw query string or urlencoded form body decodes (percent escapes included) as UTF-8."""
    if raw.isascii() and b"%" not in raw:
        return True  # the common case, without a copy
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_form_encoding() -> None:
    """Refuse a form whose fields are not UTF-8, as a query string is.

    werkzeug keeps undecodable escapes of a urlencoded body as literal text ("%ED%A0%80" would be stored as a
    name) and reads bad bytes in a multipart field as U+FFFD, which nobody types.
    """
    if request.mimetype == "application/x-www-form-urlencoded":
        valid = utf8_query(request.get_data(cache=True))  # the form is parsed from this cached copy
    else:
        valid = not any("\ufffd" in value for values in request.form.listvalues() for value in values)
    if not valid:
        raise InvalidInput(_("フォームの入力が正しい UTF-8 ではありません。"))


def guard_request() -> None:
    """``before_request``: refuse control characters in the path, query and form fields; decode JSON bodies.

    Runs for every request, authenticated or not, so no view ever sees such input.
    """
    if has_control_characters(request.path):
        # Like any other malformed identifier: nothing by that name exists.
        raise NotFound(_("URL に使用できない文字(制御文字)が含まれています。"))
    if not utf8_query(request.query_string):
        # werkzeug would read the bad bytes as U+FFFD: a search would run for something nobody typed.
        raise InvalidInput(_("クエリ文字列が正しい UTF-8 ではありません。"))
    # Lazy labels: every request passes here, and the words are needed only for a refusal.
    _check_pairs(request.args.lists(), where=lazy_gettext("クエリ文字列"), multiline=False)
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            _check_form_encoding()
            # Text areas (a pasted PEM, notes) keep their line breaks; every other control character is refused.
            _check_pairs(request.form.lists(), where=lazy_gettext("フォームの入力"), multiline=True)
        elif request.is_json and request.content_length != 0 and request.get_data(cache=True):
            request.get_json()  # decoded and checked once here; views get the cached result


_STRICT_JSON = StrictJson()


class Request(flask.Request):
    """The app's request class: JSON bodies are decoded by ``decode_json``."""

    @property
    def json_module(self) -> Any:
        return _STRICT_JSON

    @json_module.setter
    def json_module(self, value: Any) -> None:
        """Flask assigns ``app.json`` to every request; the body decoder stays the strict one."""


class IdConverter(IntegerConverter):
    """``<id:name>``: a database ID in a URL, 0..2**31-1; anything longer or larger is 404, not an overflow."""

    regex = r"[0-9]{1,10}"

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(map, min=0, max=MAX_DB_INT)


def init_app(app: Flask) -> None:
    """Install the strict JSON decoder, the ``id`` converter and the request guard (before any blueprint)."""
    app.request_class = Request
    app.url_map.converters["id"] = IdConverter
    app.before_request(guard_request)


# Up to this much of a body an app refused unread (413) is read off the socket: nginx accepts 20 MiB.
DRAIN_LIMIT = 32 * 1024 * 1024


class DrainUnreadBody:
    """WSGI wrapper: what an app left unread of a request body is read off the socket before the answer goes.

    A body over the size limit is refused (413) without being read. gunicorn then closes a socket with data still
    unread, which resets it, and nginx, still sending the body it buffered, gets a broken pipe and answers 502
    instead of the application's 413. Reading the rest first lets nginx finish sending and pass the 413 on.
    Never past the body (PEP 3333: a server's ``wsgi.input`` need not stop at CONTENT_LENGTH, werkzeug's does
    not, and reading on would wait for the next request); a body read to its end costs nothing more.
    """

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = None
        if 0 < length <= DRAIN_LIMIT:
            body = environ["wsgi.input"] = LimitedStream(environ["wsgi.input"], length)
        answer = self.wsgi_app(environ, start_response)
        if body is not None:
            with contextlib.suppress(OSError, ClientDisconnected):  # the client went away: the answer goes nowhere
                body.exhaust()
        return answer
