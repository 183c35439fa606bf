"""Public PKI endpoints relying parties fetch without logging in: CA certificates, CRLs, OCSP.

Thin: CRLs come from ``ca/crl.py``, served from storage as they are (a due CRL is
re-signed in the background, never in the request), OCSP answers from ``ca/ocsp.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp
from flask import Blueprint, Response, current_app, request
from flask_babel import lazy_gettext
from werkzeug.http import http_date

from ca import ocsp
from ca.authority import CaSettings, authorities, pem_bundle
from ca.crl import crl_by_number, crl_is_due, crl_pem, current_crl, latest_crl
from ca.models import CertificateAuthority, Crl
from ca.publishing import request_republication
from db import get_session, utcnow
from kernel.errors import NotFound

log = logging.getLogger(__name__)

bp = Blueprint("pki", __name__, url_prefix="/pki")

CACHE_CA = "public, max-age=86400"


def _authority(authority_id: int) -> CertificateAuthority:
    ca = get_session().get(CertificateAuthority, authority_id)
    if ca is None:
        raise NotFound(lazy_gettext("指定された認証局はありません。"))
    return ca


@bp.route("/ca/<id:authority_id>.der")
def ca_der(authority_id: int) -> Any:
    """caIssuers (RFC 5280 4.2.2.1): the CA certificate in DER."""
    return Response(_authority(authority_id).cert_der, mimetype="application/pkix-cert",
                    headers={"Cache-Control": CACHE_CA})


@bp.route("/ca/<id:authority_id>.pem")
def ca_pem(authority_id: int) -> Any:
    cert = x509.load_der_x509_certificate(_authority(authority_id).cert_der)
    return Response(pem_bundle([cert]), mimetype="application/x-pem-file", headers={"Cache-Control": CACHE_CA})


@bp.route("/ca-bundle.pem")
def ca_bundle() -> Any:
    """Every CA certificate (root first) as one PEM bundle, for trust stores."""
    certs = [x509.load_der_x509_certificate(ca.cert_der) for ca in authorities(get_session())]
    return Response(pem_bundle(certs), mimetype="application/x-pem-file",
                    headers={"Cache-Control": CACHE_CA,
                             "Content-Disposition": 'attachment; filename="opauth-ca-bundle.pem"'})


def _caching_headers(response: Response, *, body: bytes, this_update: datetime | None,
                     next_update: datetime | None, cacheable: bool) -> Response:
    """RFC 5019 6.2: ETag, Last-Modified, Expires; max-age never beyond nextUpdate.

    Only a GET (or HEAD) can be revalidated: a POST answer gets no ETag and skips the conditional checks.
    """
    revalidatable = request.method in ("GET", "HEAD")
    if revalidatable:
        response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    if this_update is not None:
        response.headers["Last-Modified"] = http_date(this_update)
    if next_update is not None:
        response.headers["Expires"] = http_date(next_update)
    if cacheable and next_update is not None:
        max_age = min(int(current_app.config["PKI_CACHE_MAX_AGE_SECONDS"]),
                      max(0, int((next_update - utcnow()).total_seconds())))
        response.headers["Cache-Control"] = f"public, max-age={max_age}, no-transform, must-revalidate"
    else:
        response.headers["Cache-Control"] = "no-store"
    return response.make_conditional(request) if revalidatable else response  # type: ignore[return-value]


def _crl_response(crl: Crl, fmt: str) -> Response:
    if fmt == "pem":
        body, mimetype = crl_pem(crl.der), "application/x-pem-file"
    else:
        body, mimetype = crl.der, "application/pkix-crl"
    response = Response(body, mimetype=mimetype)
    return _caching_headers(response, body=body, this_update=crl.this_update, next_update=crl.next_update,
                            cacheable=True)


def _ca_settings() -> CaSettings:
    """The CA settings of this app, made once (it may read the passphrase file): OCSP asks on every request."""
    key = (current_app.config["INSTANCE_DIR"], current_app.config["KEY_PASSPHRASE"])
    cached: tuple[object, CaSettings] | None = current_app.extensions.get("opauth.pki_ca_settings")
    if cached is None or cached[0] != key:
        cached = (key, CaSettings.from_config(current_app.config))
        current_app.extensions["opauth.pki_ca_settings"] = cached
    return cached[1]


def _current_crl(authority_id: int) -> Crl:
    session = get_session()
    authority = _authority(authority_id)
    settings = _ca_settings()
    crl = latest_crl(session, authority.id)
    if crl is None:  # only an instance initialised without CRLs: its first one lists little, sign it now
        crl = current_crl(session, settings, authority)
        session.commit()
    elif crl_is_due(session, settings, authority.id):  # serve this one while the next is signed
        request_republication(current_app._get_current_object(), authority.id)  # type: ignore[attr-defined]
    return crl


@bp.route("/crl/<id:authority_id>.crl")
def crl_der(authority_id: int) -> Any:
    """The CRL distribution point (RFC 5280 4.2.1.13): the CA's current CRL in DER (PEM if asked by Accept)."""
    wanted = request.accept_mimetypes.best_match(["application/pkix-crl", "application/x-pem-file"],
                                                 default="application/pkix-crl")
    response = _crl_response(_current_crl(authority_id), "pem" if wanted == "application/x-pem-file" else "der")
    response.vary.add("Accept")
    return response


@bp.route("/crl/<id:authority_id>.pem")
def crl_pem_view(authority_id: int) -> Any:
    """The current CRL in PEM."""
    return _crl_response(_current_crl(authority_id), "pem")


@bp.route("/crl/<id:authority_id>/<id:number>.<any(crl, pem):fmt>")
def crl_numbered(authority_id: int, number: int, fmt: str) -> Any:
    """An earlier (or the current) CRL by its CRL number."""
    _authority(authority_id)
    return _crl_response(crl_by_number(get_session(), authority_id, number), "pem" if fmt == "pem" else "der")


def _ocsp_response(request_der: bytes | None, *, via_get: bool) -> Response:
    session = get_session()
    try:
        if request_der is None:
            result = ocsp.unsuccessful(x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        else:
            result = ocsp.answer(session, _ca_settings(), request_der)
            if not result.from_storage:
                session.commit()  # keep a freshly signed response for the next client
    except Exception:  # a client must get an OCSP answer, never an HTML 500
        session.rollback()
        log.exception("OCSP responder failed")
        result = ocsp.unsuccessful(x509_ocsp.OCSPResponseStatus.INTERNAL_ERROR)
    response = Response(result.der, mimetype="application/ocsp-response")
    return _caching_headers(response, body=result.der, this_update=result.this_update,
                            next_update=result.next_update, cacheable=result.cacheable and via_get)


@bp.route("/ocsp", methods=["POST"])
def ocsp_post() -> Any:
    """OCSP over POST (RFC 6960 A.1): the DER request as the body."""
    data = request.get_data(cache=False)
    return _ocsp_response(data if len(data) <= ocsp.MAX_REQUEST_BYTES else None, via_get=False)


@bp.route("/ocsp/<path:encoded>", methods=["GET"], merge_slashes=False)
def ocsp_get(encoded: str) -> Any:
    """OCSP over GET (RFC 6960 A.1): the base64 (then URL-encoded) DER request in the path."""
    return _ocsp_response(_decode_get(encoded), via_get=True)


@bp.route("/ocsp", methods=["GET"])
@bp.route("/ocsp/", methods=["GET"])
def ocsp_get_empty() -> Any:
    """A GET without a request: malformedRequest, like any other unusable request."""
    return _ocsp_response(None, via_get=True)


def _decode_get(encoded: str) -> bytes | None:
    text = unquote(encoded).strip().replace(" ", "+")  # a '+' left unencoded may arrive as a space
    if len(text) > ocsp.MAX_REQUEST_BYTES * 2:
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
