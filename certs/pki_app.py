"""The public PKI endpoints (/pki/: CA certificates, CRLs, OCSP) served by a lean Flask app of their own.

Relying parties fetch these without logging in, and OCSP is asked on every certificate check, so a
request under /pki/ skips what only the operator-facing app needs: the cookie session (no
``Set-Cookie``, no signed-cookie parsing), flask-login and its session timeouts, the certificate-bound
session check, the OIDC login resume, the form-token check and the per-request probe of the stored
settings (re-read here at most once per ``SETTINGS_PROBE_SECONDS``; a change made in this process
applies at once, because both apps share one config). What it keeps is what a /pki/ answer shows:
the same blueprint and views, the request guard (control characters, bounded IDs), the JSON error
answers in the request's language, the security headers, the database session per request and the
trusted-proxy handling. In front of it, a plain OCSP request whose pre-signed answer is reusable is
answered with one query and no framework at all (``_PreSigned``); anything else reaches the PKI app.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from sqlalchemy import Engine
from werkzeug.http import http_date

from ca import ocsp
from ca.authority import CaSettings
from certs import pki_views
from db import utcnow
from kernel import lean_app
from operators.login.mtls import behind_trusted_proxies

PREFIX = "/pki"
SETTINGS_PROBE_SECONDS = 1.0


_GET_PREFIX = PREFIX + "/ocsp/"
_PLAIN_GET = re.compile(r"[A-Za-z0-9+/=%_-]+")  # what base64 in a path looks like; anything else: the full app
_CONDITIONAL = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_MATCH", "HTTP_IF_UNMODIFIED_SINCE",
                "HTTP_IF_RANGE", "HTTP_RANGE")  # werkzeug's make_conditional answers these (304, 412, 206)
_SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "same-origin"),
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")]


class _PreSigned:
    """WSGI: a plain OCSP request whose pre-signed answer is stored is answered with one read and no framework.

    A POST to /pki/ocsp with a body of at most ``ocsp.MAX_REQUEST_BYTES``, or a GET of /pki/ocsp/<base64>
    without query string or conditional headers, is looked up with ``ocsp.stored_answer`` on a connection of
    its own; a reusable answer goes out with the headers the PKI app gives it (RFC 5019 caching for GET,
    ``no-store`` for POST, the security headers). Everything else (nonces, unknown or stale answers,
    malformed requests, errors) returns None and the PKI app answers as it always does.
    """

    def __init__(self, pki: Flask, probe: Callable[[], None]) -> None:
        self.config = pki.config
        self.engine: Engine = pki.extensions["opauth.engine"]
        self.probe = probe
        self._settings: tuple[object, CaSettings] | None = None

    def settings(self) -> CaSettings:
        key = (self.config["INSTANCE_DIR"], self.config["KEY_PASSPHRASE"])
        if self._settings is None or self._settings[0] != key:
            self._settings = (key, CaSettings.from_config(self.config))
        return self._settings[1]

    def request_der(self, environ: dict[str, Any]) -> tuple[bytes, bool] | None:
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            return None
        if method == "POST" and path == PREFIX + "/ocsp":
            try:
                length = int(environ.get("CONTENT_LENGTH") or "-1")
            except ValueError:
                return None
            if not 0 < length <= ocsp.MAX_REQUEST_BYTES:
                return None
            body: bytes = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)  # the PKI app reads it again if it answers instead
            return body, False
        if method == "GET" and path.startswith(_GET_PREFIX):
            encoded = path[len(_GET_PREFIX):]
            if (not _PLAIN_GET.fullmatch(encoded) or encoded.startswith("/")
                    or any(header in environ for header in _CONDITIONAL)):
                return None
            der = pki_views._decode_get(encoded)
            return (der, True) if der else None
        return None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes] | None:
        try:
            found = self.request_der(environ)
            if found is None:
                return None
            der, via_get = found
            self.probe()
            with self.engine.connect() as connection:
                answer = ocsp.stored_answer(connection, self.settings(), der)
        except Exception:  # the PKI app answers, and reports, whatever went wrong here
            return None
        if answer is None or answer.this_update is None or answer.next_update is None:
            return None
        headers = [("Content-Type", "application/ocsp-response"), ("Content-Length", str(len(answer.der)))]
        if via_get:  # as werkzeug's make_conditional does for a GET
            headers += [("ETag", f'"{hashlib.sha256(answer.der).hexdigest()[:32]}"'), ("Date", http_date())]
        headers += [("Last-Modified", http_date(answer.this_update)), ("Expires", http_date(answer.next_update))]
        if via_get:
            max_age = min(int(self.config["PKI_CACHE_MAX_AGE_SECONDS"]),
                          max(0, int((answer.next_update - utcnow()).total_seconds())))
            headers.append(("Cache-Control", f"public, max-age={max_age}, no-transform, must-revalidate"))
        else:
            headers.append(("Cache-Control", "no-store"))
        headers += _SECURITY_HEADERS
        if environ.get("wsgi.url_scheme") == "https":
            headers.append(("Strict-Transport-Security", "max-age=31536000"))
        start_response("200 OK", headers)
        return [answer.der]


class _Dispatch:
    """WSGI: paths under /pki/ go to the PKI app (pre-signed OCSP answers first), everything else to the main app."""

    def __init__(self, main: Callable[..., Iterable[bytes]], pki: Callable[..., Iterable[bytes]],
                 presigned: _PreSigned) -> None:
        self.main = main
        self.pki = pki
        self.presigned = presigned

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == PREFIX or path.startswith(PREFIX + "/"):
            if path.startswith(PREFIX + "/ocsp"):
                answered = self.presigned(environ, start_response)
                if answered is not None:
                    return answered
            return self.pki(environ, start_response)
        return self.main(environ, start_response)


def mount(main: Flask, *, error_handlers: Callable[[Flask], None], after_request: Callable[[Any], Any]) -> Flask:
    """Serve /pki/ of ``main`` from a lean app sharing its config, database engine and settings."""
    probe = lean_app.settings_probe(main, lambda: SETTINGS_PROBE_SECONDS)
    pki = lean_app.lean_app(main, blueprints=[pki_views.bp], probe=probe, error_handlers=error_handlers,
                            after_request=after_request)
    main.wsgi_app = _Dispatch(main.wsgi_app, behind_trusted_proxies(main, pki.wsgi_app), _PreSigned(pki, probe))  # type: ignore[method-assign]
    main.extensions["opauth.pki_app"] = pki
    return pki
