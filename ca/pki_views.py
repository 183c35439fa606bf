"""Public PKI endpoints relying parties fetch without logging in: CA certificates, CRLs, OCSP."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from flask import Blueprint, Response

from ca.authority import authorities, pem_bundle
from ca.errors import NotFound
from ca.models import CertificateAuthority
from db import get_session

bp = Blueprint("pki", __name__, url_prefix="/pki")

CACHE_CA = "public, max-age=86400"


def _authority(authority_id: int) -> CertificateAuthority:
    ca = get_session().get(CertificateAuthority, authority_id)
    if ca is None:
        raise NotFound("no such certificate authority")
    return ca


@bp.route("/ca/<int:authority_id>.der")
def ca_der(authority_id: int) -> Any:
    """caIssuers (RFC 5280 4.2.2.1): the CA certificate in DER."""
    return Response(_authority(authority_id).cert_der, mimetype="application/pkix-cert",
                    headers={"Cache-Control": CACHE_CA})


@bp.route("/ca/<int:authority_id>.pem")
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
