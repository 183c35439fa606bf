"""The one check of a TLS client certificate (mutual TLS), shared by terminals' card agents and business systems.

gunicorn terminates TLS (apdl/gunicorn_conf.py asks for an optional client certificate chained to
APDL_TERMINAL_CA, or CA_BUNDLE); :func:`verify` decides on every request: the certificate must chain to that CA,
be within validity, carry the clientAuth EKU and not be revoked according to the CRL at its own CRL
distribution point (opauth's ``/pki/crl/...``, fetched on every check, so a revocation takes effect on the next
request; an unreachable CRL refuses). Failing any of these raises :class:`CertificateRefused` (HTTP 403).
Who the certificate names (a terminal, a business system) is for the caller to read from the result.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
import urllib.request
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


def _revoked(cert: x509.Certificate, issuer: x509.Certificate, what: LazyString | str) -> bool:
    """Whether the CRL at the certificate's distribution point lists it; an unreachable CRL refuses."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return False
    urls = [n.value for p in points for n in (p.full_name or []) if isinstance(n, x509.UniformResourceIdentifier)]
    ca_bundle = current_app.config["CA_BUNDLE"] or None
    context = ssl.create_default_context(cafile=ca_bundle)
    for url in urls:
        if not url.startswith(("https://", "http://")):
            continue
        try:
            with urllib.request.urlopen(url, timeout=current_app.config["HTTP_TIMEOUT"],  # noqa: S310 - http(s) only
                                        context=context) as answer:
                body = answer.read(10 * 1024 * 1024)
        except OSError:
            continue
        try:
            crl = x509.load_der_x509_crl(body)
        except ValueError:
            try:
                crl = x509.load_pem_x509_crl(body)
            except ValueError:
                continue
        if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            continue
        return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    raise CertificateRefused(_("%(what)sの失効情報を確認できません。", what=what))


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
    issuer = next((ca for ca in _trusted_cas(what) if ca.subject == cert.issuer), None)
    if issuer is None:
        raise CertificateRefused(_("%(what)sは信頼するCAが発行したものではありません。", what=what))
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        raise CertificateRefused(_("%(what)sは信頼するCAが発行したものではありません。", what=what)) from None
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateRefused(_("%(what)sの有効期間外です。", what=what))
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages(cert):
        raise CertificateRefused(_("%(what)sはクライアント認証に使えません。", what=what))
    if check_revocation and _revoked(cert, issuer, what):
        raise CertificateRefused(_("%(what)sは失効しています。", what=what))
    return cert


def usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    """The certificate's extended key usages (none without the extension)."""
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []
