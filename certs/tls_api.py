"""JSON API for SSL通信証明書 (administrators) and the machine API business servers call with mutual TLS."""

from __future__ import annotations

import base64
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from flask_babel import lazy_gettext
from sqlalchemy.orm import Session

from ca.inquiry import expiring_certificates
from certs.api import certificate_json, issued_certificate_json
from certs.tls_certs import (
    IssuedTlsCertificate,
    TlsCertificateData,
    delete_tls_certificate,
    get_tls_certificate,
    issue_tls_certificate,
    reissue_tls_certificate,
    tls_certificates,
)
from db import get_session, new_session
from kernel.audit import AuditAction, audited_unit_of_work
from kernel.errors import InvalidCsr
from kernel.web import json_body, optional_json_body
from operators.login.auth import current_actor, requires
from operators.login.mtls import Purpose, requires_client_certificate
from operators.models import BusinessSystem
from operators.permissions import Permission
from operators.web import ca_settings, scope

bp = Blueprint("tls_api", __name__, url_prefix="/api/v1")


def _csr_from_json(body: dict[str, Any]) -> bytes | None:
    csr = body.get("csr")
    if csr is None or csr == "":
        return None
    if not isinstance(csr, str):
        raise InvalidCsr(lazy_gettext("csr には証明書発行要求 (CSR) の PEM テキストを指定してください。"))
    return csr.encode("utf-8", errors="replace")


def issued_json(session: Session, issued: IssuedTlsCertificate) -> dict[str, Any]:
    """The certificate (with its PEM), plus the PKCS#12 and its password when the key was generated here (shown
    once)."""
    data = issued_certificate_json(session, issued.certificate)
    data["tenant_id"] = issued.certificate.tenant_id
    data["terminal"] = (issued.certificate.details or {}).get("terminal") or None
    if issued.pkcs12 is not None:
        data["pkcs12"] = {"filename": issued.pkcs12.filename, "password": issued.pkcs12.password,
                          "data_base64": base64.b64encode(issued.pkcs12.data).decode()}
    return data


@bp.route("/ssl-certificates", methods=["POST"])
@requires(Permission.MANAGE_TLS_CERTIFICATES)
def issue() -> Any:
    """SSL通信証明書発行: JSON {tenant, business_id | terminal, hosts, csr?}."""
    session, actor = get_session(), current_actor()

    def work() -> IssuedTlsCertificate:
        body = json_body()
        return issue_tls_certificate(session, settings=ca_settings(), scope=scope(),
                                     data=TlsCertificateData.from_mapping(body), csr_bytes=_csr_from_json(body),
                                     actor=actor)

    issued = audited_unit_of_work(session, new_session, work=work, failure_action=AuditAction.ISSUANCE_REJECTED,
                                  actor=actor, target="ssl_certificate")
    response = jsonify(issued_json(session, issued))
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/ssl-certificates")
@requires(Permission.MANAGE_TLS_CERTIFICATES)
def listing() -> Any:
    """照会: the active list (default) or all with ?all=1."""
    certs = tls_certificates(get_session(), scope=scope(), active_only=request.args.get("all") != "1")
    return jsonify(items=[certificate_json(c) for c in certs])


@bp.route("/ssl-certificates/<serial>")
@requires(Permission.MANAGE_TLS_CERTIFICATES)
def show(serial: str) -> Any:
    return jsonify(certificate_json(get_tls_certificate(get_session(), scope=scope(), serial=serial)))


@bp.route("/ssl-certificates/<serial>", methods=["DELETE"])
@requires(Permission.MANAGE_TLS_CERTIFICATES)
def delete(serial: str) -> Any:
    """削除: revoke (cessationOfOperation) and drop from the active list."""
    session, actor = get_session(), current_actor()
    cert = audited_unit_of_work(
        session, new_session, failure_action=AuditAction.REVOCATION_REJECTED, actor=actor,
        target=f"certificate:{serial[:40]}",
        work=lambda: delete_tls_certificate(session, scope=scope(), serial=serial, actor=actor))
    return jsonify(certificate_json(cert))


@bp.route("/ssl-certificates/<serial>/reissue", methods=["POST"])
@requires(Permission.MANAGE_TLS_CERTIFICATES)
def reissue(serial: str) -> Any:
    """再発行: JSON {csr?}; without a CSR a new key is generated and returned once as PKCS#12."""
    session, actor = get_session(), current_actor()

    def work() -> IssuedTlsCertificate:
        body = optional_json_body()
        return reissue_tls_certificate(session, settings=ca_settings(), scope=scope(), serial=serial,
                                       csr_bytes=_csr_from_json(body), actor=actor)

    issued = audited_unit_of_work(session, new_session, work=work, failure_action=AuditAction.ISSUANCE_REJECTED,
                                  actor=actor, target=f"certificate:{serial[:40]}")
    response = jsonify(issued_json(session, issued))
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


# --- machine API: business servers, authenticated by their SSL communication certificate --------------------

@bp.route("/business/self")
@requires_client_certificate(Purpose.BUSINESS_CLIENT)
def business_self() -> Any:
    """Who the calling business server is, and its certificates that expire soon."""
    session = get_session()
    system = session.get(BusinessSystem, g.client.business_system_id)
    assert system is not None
    expiring = expiring_certificates(session, within_days=current_app.config["CERT_EXPIRY_WARNING_DAYS"],
                                     business_system_ids=[system.id])
    return jsonify(business_id=system.business_id, name=system.name, certificate_serial=g.client.serial,
                   expiring_certificates=[{"serial": c.serial, "not_after": c.not_after.isoformat()}
                                          for c in expiring])
