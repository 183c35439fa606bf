"""Lean Flask apps for machine endpoints, sharing the main app's config, database engine and settings.

Relying parties and business systems call some paths on every certificate check or login (OCSP, the
OIDC token endpoint). A lean app serves them without what only the operator-facing app needs: the cookie
session (nothing read from a cookie, no ``Set-Cookie``), flask-login and its session timeouts, the
certificate-bound session check, the OIDC login resume, the form-token check, and the per-request probe of
the stored settings (re-read at most once per interval; a change made in this process applies at once,
because the apps share one config dict). It keeps the request guard (control characters, bounded IDs),
the JSON error answers in the request's language, the security headers and the database session per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Flask
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import Authorization

from config import instance as instance_settings
from db import close_request_session
from kernel import i18n, webinput

# The extension naming how the app's errors are answered: "json" (a lean app has no pages), or "oauth" (the OIDC
# endpoints: RFC 6749 5.2 ``{error, error_description}``); the main app has none and answers pages or JSON by path.
ERROR_FORM = "opauth.error_form"


class NoSession(SessionInterface):
    """No cookie session: nothing is read from a cookie, nothing is ever set."""

    def open_session(self, app: Flask, request: Any) -> SessionMixin | None:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session: SessionMixin, response: Any) -> None:
        return None


def settings_probe(main: Flask, interval: Callable[[], float]) -> Callable[[], None]:
    """A ``before_request`` that re-reads the stored settings at most once per ``interval()`` seconds."""
    lock = threading.Lock()
    last = [time.monotonic()]

    def probe() -> None:
        now = time.monotonic()
        if now - last[0] < interval() or not lock.acquire(blocking=False):
            return
        try:
            last[0] = now
            instance_settings.refresh(main)
        finally:
            lock.release()

    return probe


def lean_app(main: Flask, *, blueprints: Iterable[Blueprint], probe: Callable[[], None],
             error_handlers: Callable[[Flask], None], after_request: Callable[[Any], Any]) -> Flask:
    """A Flask app serving ``blueprints`` with ``main``'s config, engine and error answers, and nothing else."""
    lean = Flask(main.import_name, instance_path=main.instance_path, static_folder=None,
                 template_folder=main.template_folder)
    lean.config = main.config  # one dict: a settings change applied by either app is seen by both
    lean.json.ensure_ascii = False  # type: ignore[attr-defined]
    lean.session_interface = NoSession()
    lean.extensions[ERROR_FORM] = "json"
    lean.extensions[i18n.MACHINE_APP] = True  # machine clients: Accept-Language chooses the language
    for key in ("opauth.engine", "opauth.sessionmaker", "opauth.trusted_proxies", instance_settings.GIVEN):
        lean.extensions[key] = main.extensions[key]
    webinput.init_app(lean)  # first, as in the main app: the request guard runs before anything reads the request
    lean.before_request(probe)
    lean.teardown_appcontext(close_request_session)
    i18n.init_app(lean)
    for blueprint in blueprints:
        lean.register_blueprint(blueprint)
    error_handlers(lean)
    lean.after_request(after_request)
    return lean


def carries_bearer_token(environ: dict[str, Any]) -> bool:
    """True when the request's ``Authorization`` is a bearer token, read as ``request.authorization`` reads it."""
    auth = Authorization.from_header(environ.get("HTTP_AUTHORIZATION"))
    return auth is not None and auth.type == "bearer"


class Dispatch:
    """WSGI: the requests ``wants(environ)`` picks go to ``lean``, everything else to ``main``."""

    def __init__(self, main: Callable[..., Iterable[bytes]], lean: Callable[..., Iterable[bytes]],
                 wants: Callable[[dict[str, Any]], bool]) -> None:
        self.main = main
        self.lean = lean
        self.wants = wants

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if self.wants(environ):
            return self.lean(environ, start_response)
        return self.main(environ, start_response)


def bearer_calls_under(prefix: str) -> Callable[[dict[str, Any]], bool]:
    """Calls under ``prefix`` that carry a bearer token. A bearer token authenticates the call by itself, so
    nothing of the browser's session (cookie, login, timeouts, form token) takes part in it; other credentials
    (HTTP Basic, a session cookie) stay on the main app."""
    return lambda environ: environ.get("PATH_INFO", "").startswith(prefix) and carries_bearer_token(environ)


def exact_paths(paths: frozenset[str]) -> Callable[[dict[str, Any]], bool]:
    """Requests for exactly one of ``paths``."""
    return lambda environ: environ.get("PATH_INFO", "") in paths
