"""Mutual TLS: the one place that reads, validates and binds client certificates.

Where the certificate comes from:
- gunicorn terminating TLS (``make run``): the verified peer certificate of the
  connection, ``request.environ["gunicorn.socket"].getpeercert(binary_form=True)``.
- nginx in front (``make run``, ``config/nginx.conf.template``): the ``X-SSL-Client-Cert`` header
  (``$ssl_client_escaped_cert``), believed **only** when the request arrived over the application's
  Unix socket (``OPAUTH_APP_SOCKET``, which only the service user can open) or, if explicitly
  configured, from a TCP peer in ``OPAUTH_TRUSTED_PROXIES``; from anyone else the header is stripped.
  nginx sends our CA names and hands on any certificate (``optional_no_ca``): this module is the judge.

What makes it acceptable: a chain to our CA, within validity, not revoked
according to our own database (read per request: no staleness), with the EKU the
route needs, and recorded in our certificate table. Every refusal is audited.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask, current_app, flash, g, jsonify, redirect, request, session, url_for
from flask_babel import lazy_gettext
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from ca.labels import profile_label
from ca.models import Certificate, CertificateProfile
from ca.validation import validate_chain
from config.serving import app_socket_path
from db import get_session, new_session
from kernel.audit import Actor, AuditAction, AuditResult, record_event_separately
from kernel.errors import OpauthError
from operators.models import OperatorCertificate

CLIENT_CERT_HEADER = "X-SSL-Client-Cert"
F = TypeVar("F", bound=Callable[..., Any])


class ClientCertRefused(OpauthError):
    """The presented client certificate (or its absence) does not satisfy the route."""

    status = 403
    code = "client_certificate_refused"


class Purpose(enum.StrEnum):
    """What a client certificate is used for; decides the EKU and the binding required."""

    BUSINESS_CLIENT = "business_client"  # a business server calling /api/v1/business/...
    OPERATOR = "operator"  # a biometric operator's terminal


_EKU = {Purpose.BUSINESS_CLIENT: "client_auth", Purpose.OPERATOR: "client_auth"}
_PROFILES = {Purpose.BUSINESS_CLIENT: (CertificateProfile.TLS,),
             Purpose.OPERATOR: (CertificateProfile.OPERATOR,)}


@dataclass(frozen=True)
class ClientIdentity:
    """An accepted client certificate and what it is bound to."""

    certificate_id: int
    serial: str
    fingerprint_sha256: str
    profile: CertificateProfile
    business_system_id: int | None
    tenant_id: int | None
    operator_pk: int | None


def trusted_proxies(config: dict[str, Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(p.strip(), strict=False)
            for p in str(config.get("TRUSTED_PROXIES", "")).split(",") if p.strip()]


def _is_trusted(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(peer in net for net in networks)


PEER_KEY = "opauth.peer_addr"
VIA_PROXY_KEY = "opauth.via_trusted_proxy"


def _over_socket(environ: dict[str, Any], socket_path: str) -> bool:
    """Whether this request's connection was accepted on the Unix socket at ``socket_path``."""
    sock = environ.get("gunicorn.socket")
    if getattr(sock, "family", None) != socket.AF_UNIX:
        return False
    try:
        return str(sock.getsockname()) == socket_path  # type: ignore[union-attr]
    except OSError:
        return False


class TrustedProxyMiddleware:
    """WSGI: believe proxy headers only from the proxy; strip them from everyone else.

    The proxy is whoever connects over the application's Unix socket (the `make run` layout) or, when
    configured, a TCP peer in ``TRUSTED_PROXIES`` (weaker: any local process shares 127.0.0.1). From the
    proxy, the client address becomes the last ``X-Forwarded-For`` entry (nginx sets it to
    ``$remote_addr``), so throttling and audit see the real client; the peer is kept in
    ``environ["opauth.peer_addr"]``.
    """

    def __init__(self, wsgi_app: Any, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
                 socket_path: str = "") -> None:
        self.wsgi_app = wsgi_app
        self.networks = list(networks)
        self.socket_path = socket_path

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        peer = str(environ.get("REMOTE_ADDR", ""))
        via_socket = bool(self.socket_path) and _over_socket(environ, self.socket_path)
        environ[PEER_KEY] = f"unix:{self.socket_path}" if via_socket else peer
        trusted = via_socket or (bool(self.networks) and _is_trusted(peer, self.networks))
        environ[VIA_PROXY_KEY] = trusted
        if trusted:
            forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")[-1].strip()
            with contextlib.suppress(ValueError):  # not an address: keep the proxy's
                environ["REMOTE_ADDR"] = str(ipaddress.ip_address(forwarded))
        else:
            for header in ("HTTP_X_SSL_CLIENT_CERT", "HTTP_X_SSL_CLIENT_VERIFY", "HTTP_X_FORWARDED_FOR"):
                environ.pop(header, None)
        return self.wsgi_app(environ, start_response)


def _from_trusted_proxy() -> bool:
    return bool(request.environ.get(VIA_PROXY_KEY, False))


def presented_certificate() -> bytes | None:
    """DER of the client certificate of this request, or None; the header counts only from a trusted proxy."""
    if _from_trusted_proxy():
        header = request.headers.get(CLIENT_CERT_HEADER, "")
        if not header:
            return None
        try:
            cert = x509.load_pem_x509_certificate(unquote(header).encode())
        except ValueError:
            raise ClientCertRefused(lazy_gettext("転送されたクライアント証明書の形式が正しくありません。")) from None
        return cert.public_bytes(serialization.Encoding.DER)
    # gunicorn's worker, or werkzeug's server (tests, `flask run --cert`), exposes the TLS socket.
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    der = getpeercert(binary_form=True)
    return bytes(der) if der else None


# The columns the check reads, as a row: read fresh on every request (never an identity-map copy), no ORM object.
_PRESENTED = (select(Certificate.id, Certificate.serial, Certificate.revoked_at, Certificate.profile,
                     Certificate.business_system_id, Certificate.tenant_id)
              .where(Certificate.fingerprint_sha256 == bindparam("fingerprint")))


def _check(session: Session, settings: CaSettings, *, der: bytes, purpose: Purpose) -> ClientIdentity:
    fingerprint = hashlib.sha256(der).hexdigest()
    row = session.execute(_PRESENTED, {"fingerprint": fingerprint}).first()
    if row is None:
        raise ClientCertRefused(lazy_gettext("クライアント証明書はこのシステムが発行したものではありません。"))
    if row.revoked_at is not None:  # the database is the freshest source: no CRL or cache lag
        raise ClientCertRefused(lazy_gettext("クライアント証明書は失効しています。"))
    if row.profile not in _PROFILES[purpose]:
        raise ClientCertRefused(lazy_gettext("%(profile)sはここでは使えません。", profile=profile_label(row.profile)))
    result = validate_chain(session, settings, leaf_der=der, required_eku={_EKU[purpose]},
                            key_usage={"digital_signature"})
    if not result.valid:
        raise ClientCertRefused(lazy_gettext("クライアント証明書を受け付けられません（%(reason)s）: %(detail)s",
                                             reason=result.reason, detail=result.message))
    operator_pk = None
    if purpose is Purpose.BUSINESS_CLIENT and row.business_system_id is None:
        raise ClientCertRefused(lazy_gettext("クライアント証明書は登録された業務システムのものではありません。"))
    if purpose is Purpose.OPERATOR:
        operator_pk = session.scalar(select(OperatorCertificate.operator_id).where(
            OperatorCertificate.certificate_id == row.id))
        if operator_pk is None:
            raise ClientCertRefused(lazy_gettext("クライアント証明書は操作者のものではありません。"))
    return ClientIdentity(certificate_id=row.id, serial=row.serial, fingerprint_sha256=fingerprint,
                          profile=row.profile, business_system_id=row.business_system_id,
                          tenant_id=row.tenant_id, operator_pk=operator_pk)


def authenticate_client(*, purpose: Purpose) -> ClientIdentity:
    """The identity of this request's client certificate for ``purpose``; audits and raises on refusal."""
    try:
        der = presented_certificate()
        if der is None:
            raise ClientCertRefused(lazy_gettext("このシステムが発行したクライアント証明書が必要です。"))
        return _check(get_session(), CaSettings.from_config(current_app.config), der=der, purpose=purpose)
    except ClientCertRefused as exc:
        record_event_separately(
            new_session, action=AuditAction.CLIENT_CERT_REFUSED,
            actor=Actor(name="tls-client", source=request.remote_addr or ""), result=AuditResult.FAILURE,
            target=request.path, detail={"reason": exc.message, "purpose": str(purpose)})
        raise


# --- biometric operators: the session is bound to the operator's own certificate --------------------------

SESSION_KEY = "client_cert_fp"


def operator_certificate_for(operator_pk: int) -> ClientIdentity:
    """The presented certificate if it is this operator's own valid operator certificate; else refused."""
    identity = authenticate_client(purpose=Purpose.OPERATOR)
    if identity.operator_pk != operator_pk:
        record_event_separately(
            new_session, action=AuditAction.OPERATOR_CERT_MISMATCH,
            actor=Actor(name="tls-client", source=request.remote_addr or ""), result=AuditResult.FAILURE,
            target=request.path, detail={"certificate": identity.serial})
        raise ClientCertRefused(lazy_gettext("クライアント証明書は別の操作者のものです。"))
    return identity


def bind_session(identity: ClientIdentity) -> None:
    """Remember which certificate this login session was made with."""
    session[SESSION_KEY] = identity.fingerprint_sha256


# Why a certificate-bound session ends (the audit entry's reason; ``_SESSION_ENDED`` says it to the operator).
_NOT_PRESENTED = "the operator certificate is no longer presented"
_OTHER_CERTIFICATE = "a different client certificate was presented"
_NO_LONGER_VALID = "the operator certificate is revoked or expired"


def bound_session_violation() -> str | None:
    """Why the current request may not continue a certificate-bound session (None: it may).

    Every request of a biometric operator's session must come with the same, still valid certificate.
    """
    bound = session.get(SESSION_KEY)
    if not bound:
        return None
    try:
        der = presented_certificate()
    except ClientCertRefused as exc:
        return exc.message
    if der is None:
        return _NOT_PRESENTED
    if hashlib.sha256(der).hexdigest() != bound:
        return _OTHER_CERTIFICATE
    row = get_session().scalar(select(Certificate).where(Certificate.fingerprint_sha256 == bound))
    if row is None or row.status != "valid":
        return _NO_LONGER_VALID
    return None


def _end_unbound_session() -> Any:
    """Before every request: a certificate-bound session continues only with that same valid certificate."""
    violation = bound_session_violation()
    if violation is None:
        return None
    from flask_login import logout_user

    from operators.login.auth import current_actor

    record_event_separately(new_session, action=AuditAction.OPERATOR_CERT_MISMATCH, actor=current_actor(),
                            result=AuditResult.FAILURE, target=request.path, detail={"reason": violation})
    logout_user()
    session.clear()
    message = _SESSION_ENDED.get(violation) or lazy_gettext(
        "クライアント証明書を受け付けられないため、ログアウトしました(%(reason)s)。", reason=violation)
    if request.path.startswith(("/api/", "/bio/")) or request.is_json:
        return jsonify(error="client_certificate_refused", message=str(message)), 401
    # A certificate-bound session is a biometric one: back to that login, saying why it ended.
    flash(str(message))
    return redirect(url_for("bio.login"))


# What the operator is told when the certificate-bound session ends (the audit entry keeps the reason as is).
_SESSION_ENDED = {
    _NOT_PRESENTED: lazy_gettext(
        "操作者証明書が提示されなくなったため、ログアウトしました。証明書を選んで生体認証でログインし直してください。"),
    _OTHER_CERTIFICATE: lazy_gettext(
        "ログインしたときとは別のクライアント証明書が提示されたため、ログアウトしました。"),
    _NO_LONGER_VALID: lazy_gettext(
        "操作者証明書が失効したか有効期限が切れたため、ログアウトしました。管理者に確認してください。"),
}


def behind_trusted_proxies(main: Flask, wsgi: Any) -> TrustedProxyMiddleware:
    """``wsgi`` (``main``'s own or a lean app's) reading client addresses and certificates from trusted proxies only
    (``OPAUTH_TRUSTED_PROXIES`` and the app socket scripts/serve.py binds)."""
    return TrustedProxyMiddleware(wsgi, main.extensions["opauth.trusted_proxies"],
                                  str(app_socket_path(main.config).resolve()))


def init_app(app: Flask) -> None:
    networks = trusted_proxies(app.config)  # parsed once
    app.extensions["opauth.trusted_proxies"] = networks
    app.wsgi_app = behind_trusted_proxies(app, app.wsgi_app)  # type: ignore[method-assign]
    app.before_request(_end_unbound_session)


def requires_client_certificate(purpose: Purpose) -> Callable[[F], F]:
    """Guard a machine route: the view runs only for an accepted certificate (``g.client``)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                g.client = authenticate_client(purpose=purpose)
            except ClientCertRefused as exc:
                return jsonify(error=exc.code, message=exc.message), exc.status
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


__all__: Sequence[str] = ("ClientCertRefused", "ClientIdentity", "Purpose", "authenticate_client",
                          "presented_certificate", "requires_client_certificate")
