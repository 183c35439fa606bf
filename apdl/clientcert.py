"""The one check of a TLS client certificate (mutual TLS), shared by terminals' card agents and business systems.

gunicorn terminates TLS (apdl/gunicorn_conf.py asks for an optional client certificate chained to
APDL_TERMINAL_CA, or CA_BUNDLE); :func:`verify` decides on every request: the certificate must chain to that CA,
be within validity, carry the clientAuth EKU and not be revoked according to the CRL at its own CRL
distribution point (opauth's ``/pki/crl/...``, asked on every check, so a revocation takes effect on the next
request; an unreachable CRL refuses). Asking is cheap: a kept-alive connection per thread and a conditional GET
(If-None-Match with the ETag opauth serves), so an unchanged CRL costs a 304, not a new TLS handshake, a
download and a signature check. Failing any of these raises :class:`CertificateRefused` (HTTP 403).
Who the certificate names (a terminal, a business system) is for the caller to read from the result.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import http.client
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from flask import current_app, request
from flask_babel import LazyString, lazy_gettext
from flask_babel import gettext as _

from apdl.errors import ApdlError

TERMINAL = lazy_gettext("端末証明書")
BUSINESS_SYSTEM = lazy_gettext("業務システムのSSL通信証明書")


class CertificateRefused(ApdlError):
    """The client certificate is missing, not from the trusted CA, expired, unfit or revoked: HTTP 403."""

    status = 403


def _trusted_cas(what: LazyString | str) -> list[x509.Certificate]:
    path = current_app.config["TERMINAL_CA"] or current_app.config["CA_BUNDLE"]
    if not path:
        raise CertificateRefused(_("%(what)sを確認するCAが設定されていません。", what=what))
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def presented() -> bytes | None:
    """DER of the TLS client certificate of this request (gunicorn's socket), or None."""
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    getpeercert = getattr(sock, "getpeercert", None)
    der = getpeercert(binary_form=True) if getpeercert is not None else None
    return bytes(der) if der else None


def presented_summary() -> dict[str, str]:
    """For the operation log of a refusal: the presented certificate's subject, issuer, serial and SHA-256
    (``{}`` without one; only ``sha256`` when it does not parse). Public parts only: never a key."""
    der = presented()
    if der is None:
        return {}
    summary = {"sha256": hashlib.sha256(der).hexdigest()}
    try:
        cert = x509.load_der_x509_certificate(der)
        summary.update(subject=cert.subject.rfc4514_string()[:300], issuer=cert.issuer.rfc4514_string()[:300],
                       serial=format(cert.serial_number, "X"))
    except ValueError:
        pass
    return summary


class _CrlSource(threading.local):
    """Per thread: one kept-alive HTTPS connection per CRL host, and per URL the last CRL with its ETag."""

    def __init__(self) -> None:
        self.connections: dict[tuple[str, str, int, str], http.client.HTTPConnection] = {}
        self.crls: dict[str, tuple[str, bytes, x509.CertificateRevocationList]] = {}  # url → (ETag, issuer, CRL)


_SOURCE = _CrlSource()


def _fetch(url: str, etag: str) -> tuple[int, bytes, str]:
    """GET ``url`` (If-None-Match ``etag`` when set) on the thread's kept-alive connection: status, body, ETag."""
    parts = urllib.parse.urlsplit(url)
    ca_bundle = current_app.config["CA_BUNDLE"] or ""
    key = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), ca_bundle)
    headers = {"Accept": "application/pkix-crl"}
    if etag:
        headers["If-None-Match"] = etag
    timeout = current_app.config["HTTP_TIMEOUT"]
    for attempt in range(2):
        connection = _SOURCE.connections.get(key)
        if connection is None:
            if parts.scheme == "https":
                context = ssl.create_default_context(cafile=ca_bundle or None)
                connection = http.client.HTTPSConnection(key[1], key[2], timeout=timeout, context=context)
            else:
                connection = http.client.HTTPConnection(key[1], key[2], timeout=timeout)
            _SOURCE.connections[key] = connection
        try:
            connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
            answer = connection.getresponse()
            body = answer.read(10 * 1024 * 1024)
        except (OSError, http.client.HTTPException):
            connection.close()
            del _SOURCE.connections[key]
            if attempt:
                raise OSError(f"CRL at {url} unreachable") from None
            continue  # the server closed the kept-alive connection: once more on a new one
        if answer.will_close:
            connection.close()
            del _SOURCE.connections[key]
        return answer.status, body, answer.getheader("ETag") or ""
    raise OSError(f"CRL at {url} unreachable")  # pragma: no cover - the loop returns or raises


def _current_crl(url: str, issuer: x509.Certificate) -> x509.CertificateRevocationList | None:
    """The CRL at ``url`` as it is now, signed by ``issuer``; None when unreachable, unreadable or foreign.

    Asked on every call: the last CRL and its ETag are kept only to revalidate (a 304 answer reuses the CRL
    already parsed and checked, an unchanged body skips the signature check), never to skip asking.
    """
    issuer_key = issuer.public_bytes(serialization.Encoding.DER)
    cached = _SOURCE.crls.get(url)
    try:
        status, body, etag = _fetch(url, cached[0] if cached is not None and cached[1] == issuer_key else "")
    except OSError:
        return None
    if status == 304 and cached is not None and cached[1] == issuer_key:
        return cached[2]
    if status != 200:
        return None
    try:
        crl = x509.load_der_x509_crl(body)
    except ValueError:
        try:
            crl = x509.load_pem_x509_crl(body)
        except ValueError:
            return None
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        return None
    if etag:
        _SOURCE.crls[url] = (etag, issuer_key, crl)
    return crl


def _revocation(cert: x509.Certificate, issuer: x509.Certificate) -> bool | None:
    """Whether the CRL at the certificate's distribution point lists it; None when no CRL could be read."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return False
    urls = [n.value for p in points for n in (p.full_name or []) if isinstance(n, x509.UniformResourceIdentifier)]
    for url in urls:
        if not url.startswith(("https://", "http://")):
            continue
        crl = _current_crl(url, issuer)
        if crl is not None:
            return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    return None


def _refuse_if_revoked(revoked: bool | None, what: LazyString | str) -> None:
    if revoked is None:  # an unreachable CRL refuses
        raise CertificateRefused(_("%(what)sの失効情報を確認できません。", what=what))
    if revoked:
        raise CertificateRefused(_("%(what)sは失効しています。", what=what))


_CHECKS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="apdl-crl")


def revocation_later(cert: x509.Certificate, what: LazyString | str) -> Callable[[], None]:
    """Start the revocation check of a certificate :func:`verify` passed (without one) in the background; the
    returned callable waits for it and raises :class:`CertificateRefused` as :func:`verify` would.

    For a request that has other work to do first (a card agent's answer): the check runs meanwhile, and the
    caller confirms it before it gives anything out.
    """
    issuer = _issuer(cert, what)
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def check() -> bool | None:
        with app.app_context():
            return _revocation(cert, issuer)

    pending = _CHECKS.submit(check)
    return lambda: _refuse_if_revoked(pending.result(), what)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def verify(what: LazyString | str, *, check_revocation: bool = True) -> x509.Certificate:
    """This request's client certificate, checked; CertificateRefused (403) otherwise.

    ``what`` names the certificate in the messages (:data:`TERMINAL`, :data:`BUSINESS_SYSTEM`).
    ``check_revocation=False`` only where the same certificate was checked moments ago on the same
    connection's work (a card agent's answer to a command its poll collected).
    """
    der = presented()
    if der is None:
        raise CertificateRefused(_("%(what)sが必要です。", what=what))
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise CertificateRefused(_("%(what)sは信頼するCAが発行したものではありません。", what=what)) from None
    issuer = _issuer(cert, what)
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateRefused(_("%(what)sの有効期間外です。", what=what))
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages(cert):
        raise CertificateRefused(_("%(what)sはクライアント認証に使えません。", what=what))
    if check_revocation:
        _refuse_if_revoked(_revocation(cert, issuer), what)
    return cert


def _issuer(cert: x509.Certificate, what: LazyString | str) -> x509.Certificate:
    """The trusted CA that signed ``cert``; CertificateRefused otherwise."""
    issuer = next((ca for ca in _trusted_cas(what) if ca.subject == cert.issuer), None)
    if issuer is None:
        raise CertificateRefused(_("%(what)sは信頼するCAが発行したものではありません。", what=what))
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        raise CertificateRefused(_("%(what)sは信頼するCAが発行したものではありません。", what=what)) from None
    return issuer


def usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    """The certificate's extended key usages (none without the extension)."""
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []
