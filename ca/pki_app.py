"""The public PKI endpoints (/pki/: CA certificates, CRLs, OCSP) served by a lean Flask app of their own.

Relying parties fetch these without logging in, and OCSP is asked on every certificate check, so a
request under /pki/ skips what only the operator-facing app needs: the cookie session (no
``Set-Cookie``, no signed-cookie parsing), flask-login and its session timeouts, the certificate-bound
session check, the OIDC login resume, the form-token check and the per-request probe of the stored
settings (re-read here at most once per ``SETTINGS_PROBE_SECONDS``; a change made in this process
applies at once, because both apps share one config). What it keeps is what a /pki/ answer shows:
the same blueprint and views, the request guard (control characters, bounded IDs), the JSON error
answers in the request's language, the security headers, the database session per request and the
trusted-proxy handling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, g
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy.orm import Session

import i18n
import webinput
from ca import pki_views
from ca.mtls import TrustedProxyMiddleware
from config import instance as instance_settings
from config.serving import app_socket_path

PREFIX = "/pki"
SETTINGS_PROBE_SECONDS = 1.0


class _NoSession(SessionInterface):
    """No cookie session under /pki/: nothing is read from a cookie, nothing is ever set."""

    def open_session(self, app: Flask, request: Any) -> SessionMixin | None:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session: SessionMixin, response: Any) -> None:
        return None


class _Dispatch:
    """WSGI: paths under /pki/ go to the PKI app, everything else to the main app."""

    def __init__(self, main: Callable[..., Iterable[bytes]], pki: Callable[..., Iterable[bytes]]) -> None:
        self.main = main
        self.pki = pki

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return self.pki(environ, start_response)
        return self.main(environ, start_response)


def _settings_probe(main: Flask) -> Callable[[], None]:
    lock = threading.Lock()
    last = [time.monotonic()]

    def probe() -> None:
        now = time.monotonic()
        if now - last[0] < SETTINGS_PROBE_SECONDS or not lock.acquire(blocking=False):
            return
        try:
            last[0] = now
            instance_settings.refresh(main)
        finally:
            lock.release()

    return probe


def _close_session(exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        if exc is not None:
            session.rollback()
        session.close()


def mount(main: Flask, *, error_handlers: Callable[[Flask], None], after_request: Callable[[Any], Any]) -> Flask:
    """Serve /pki/ of ``main`` from a lean app sharing its config, database engine and settings."""
    pki = Flask(main.import_name, instance_path=main.instance_path, static_folder=None,
                template_folder=main.template_folder)
    pki.config = main.config  # one dict: a settings change applied by either app is seen by both
    pki.json.ensure_ascii = False  # type: ignore[attr-defined]
    pki.session_interface = _NoSession()
    for key in ("opauth.engine", "opauth.sessionmaker", "opauth.trusted_proxies"):
        pki.extensions[key] = main.extensions[key]
    webinput.init_app(pki)  # first, as in the main app: the request guard runs before anything reads the request
    pki.before_request(_settings_probe(main))
    pki.teardown_appcontext(_close_session)
    i18n.init_app(pki)
    pki.register_blueprint(pki_views.bp)
    error_handlers(pki)
    pki.after_request(after_request)
    pki_wsgi = TrustedProxyMiddleware(pki.wsgi_app, main.extensions["opauth.trusted_proxies"],
                                      str(app_socket_path(main.config).resolve()))
    main.wsgi_app = _Dispatch(main.wsgi_app, pki_wsgi)  # type: ignore[method-assign]
    main.extensions["opauth.pki_app"] = pki
    return pki
