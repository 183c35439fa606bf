"""JSON REST API under /api/v1 (documented in static/openapi.json). Thin: parse, call a service, serialise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask_babel import lazy_gettext
from sqlalchemy.orm import Session

from ca.inquiry import export_certificate, get_certificate
from ca.models import Certificate
from ca.revocation import parse_invalidity_date, parse_reason, publish, revoke_by_serial
from certs.business_server import issue_business_server_certificate
from certs.inquiry import find_certificates
from certs.views import read_upload
from db import get_session, new_session
from kernel.audit import AuditAction, audited_unit_of_work
from kernel.audit_log import MAX_PER_PAGE, AuditFilters, event_json, list_events
from kernel.errors import InvalidCsr, NotFound
from kernel.web import attachment, int_arg, json_body
from operators.business_systems import (
    LABELS,
    BusinessSystemData,
    find_by_business_id,
    get_by_business_id,
    list_business_systems,
    save_and_audit,
    system_of,
)
from operators.login.auth import current_actor, may, requires
from operators.models import BusinessSystem
from operators.permissions import Permission
from operators.tenancy import well_formed_business_id
from operators.web import ca_settings

bp = Blueprint("api", __name__, url_prefix="/api/v1")
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "static" / "openapi.json"


def certificate_json(cert: Certificate) -> dict[str, Any]:
    return {
        "id": cert.id,
        "serial": cert.serial,
        "profile": str(cert.profile),
        "subject": cert.subject,
        "common_name": cert.common_name,
        "sans": cert.sans,
        "not_before": cert.not_before.isoformat(),
        "not_after": cert.not_after.isoformat(),
        "status": cert.status,
        "fingerprint_sha256": cert.fingerprint_sha256,
        "business_id": system.business_id if (system := system_of(cert)) else None,
        "issued_by": cert.issued_by,
        "created_at": cert.created_at.isoformat(),
        "revoked_at": cert.revoked_at.isoformat() if cert.revoked_at else None,
        "revocation_reason": str(cert.revocation_reason) if cert.revocation_reason else None,
        "invalidity_date": cert.invalidity_date.isoformat() if cert.invalidity_date else None,
        "replaces_id": cert.replaces_id,
        "links": {fmt: f"/api/v1/certificates/{cert.serial}/{fmt}" for fmt in ("pem", "der", "chain.pem", "p7b")},
    }


def issued_certificate_json(session: Session, cert: Certificate) -> dict[str, Any]:
    """The answer to an issuance: ``certificate_json`` plus the certificate itself as ``pem``.

    A renewal script then needs nothing else (its token need not hold certificates.view); the CA
    certificates are public at /pki/ca-bundle.pem. The PEM is ``export_certificate``'s, as for downloads.
    """
    return dict(certificate_json(cert), pem=export_certificate(session, cert, "pem")[0].decode())


def business_system_json(system: BusinessSystem) -> dict[str, Any]:
    data = {field: getattr(system, field) for field in LABELS}
    data.update(image=system.image_name, enabled=system.enabled, updated_at=system.updated_at.isoformat())
    return data


@bp.route("/openapi.json")
def openapi() -> Any:
    return Response(OPENAPI_PATH.read_bytes(), mimetype="application/json")


@bp.route("/business-systems")
@requires(Permission.MANAGE_BUSINESS_SYSTEMS)
def business_systems() -> Any:
    return jsonify(items=[business_system_json(s) for s in list_business_systems(get_session())])


@bp.route("/business-systems/<business_id>")
@requires(Permission.MANAGE_BUSINESS_SYSTEMS)
def business_system(business_id: str) -> Any:
    return jsonify(business_system_json(get_by_business_id(get_session(), well_formed_business_id(business_id))))


@bp.route("/business-systems/<business_id>", methods=["PUT"])
@requires(Permission.MANAGE_BUSINESS_SYSTEMS)
def put_business_system(business_id: str) -> Any:
    """Create or modify a business system (業務ID from the URL)."""
    session = get_session()
    actor = current_actor()

    def work() -> tuple[BusinessSystem, bool]:
        body = json_body()
        body["business_id"] = business_id  # validated with the rest: a malformed 業務ID is refused, never cut
        return save_and_audit(session, BusinessSystemData.from_mapping(body), actor)

    system, created = audited_unit_of_work(session, new_session, work=work,
                                           failure_action=AuditAction.BUSINESS_SYSTEM_REJECTED,
                                           actor=actor, target=f"business_system:{business_id[:20]}")
    return jsonify(business_system_json(system)), (201 if created else 200)


@bp.route("/business-server-certificates", methods=["POST"])
@requires(Permission.ISSUE_BUSINESS_SERVER_CERTIFICATES)
def issue_business_server() -> Any:
    """Issue from JSON ``{business system fields..., "csr": "<PEM>"}`` or multipart with a ``csr`` file."""
    session = get_session()
    actor = current_actor()
    limit = current_app.config["MAX_CSR_BYTES"]
    fields: dict[str, Any] = {}

    def work() -> Certificate:
        nonlocal fields
        if request.mimetype == "multipart/form-data":
            fields = dict(request.form)
            csr_bytes = read_upload(request.files.get("csr"), limit)
        else:
            fields = json_body()
            csr_text = fields.get("csr")
            if not isinstance(csr_text, str) or not csr_text.strip():
                raise InvalidCsr(lazy_gettext("csr には証明書発行要求 (CSR) の PEM テキストを指定してください。"))
            csr_bytes = csr_text.encode("utf-8", errors="replace")
        return issue_business_server_certificate(
            session, settings=ca_settings(), data=BusinessSystemData.from_mapping(_with_stored(session, fields)),
            csr_bytes=csr_bytes, actor=actor, may_change_system=may(Permission.MANAGE_BUSINESS_SYSTEMS))

    cert = audited_unit_of_work(session, new_session, work=work, failure_action=AuditAction.CSR_REJECTED,
                                actor=actor, target=f"business_system:{str(fields.get('business_id', ''))[:3]}")
    response = jsonify(issued_certificate_json(session, cert))
    response.status_code = 201
    response.headers["Location"] = f"/api/v1/certificates/{cert.serial}"
    return response


def _with_stored(session: Session, fields: dict[str, Any]) -> dict[str, Any]:
    """The business system's fields for an issuance: those the request sends, the stored ones for the rest.

    A renewal sends ``business_id`` and the CSR alone and gets a certificate for the system as registered;
    a field it sends replaces the stored one (which needs 業務システム管理, see
    ``certs.business_server._registered``).
    """
    business_id = fields.get("business_id")
    if not isinstance(business_id, str) or all(field in fields for field in LABELS):
        return fields  # refused by the validation that follows, or nothing to fill in (no lookup)
    try:
        stored = find_by_business_id(session, well_formed_business_id(business_id.strip()))
    except NotFound:
        stored = None  # a malformed 業務ID: the validation that follows names it
    return fields if stored is None else {**{field: getattr(stored, field) for field in LABELS}, **fields}


@bp.route("/certificates")
@requires(Permission.VIEW_CERTIFICATES)
def certificates() -> Any:
    page = find_certificates(
        get_session(),
        profile=request.args.get("profile"), business_id=request.args.get("business_id"),
        status=request.args.get("status"), text=request.args.get("q"),
        page=int_arg("page", 1), per_page=int_arg("per_page", current_app.config["PAGE_SIZE"]))
    return jsonify(items=[certificate_json(c) for c in page.items], page=page.page,
                   per_page=page.per_page, total=page.total, pages=page.pages)


@bp.route("/audit-events")
@requires(Permission.VIEW_AUDIT)
def audit_events() -> Any:
    """監査ログ, newest first (filters as the 監査ログ screen)."""
    page = list_events(get_session(), AuditFilters.from_request(), page=int_arg("page", 1),
                       per_page=int_arg("per_page", current_app.config["PAGE_SIZE"], high=MAX_PER_PAGE))
    return jsonify(items=[event_json(e) for e in page.items], page=page.page,
                   per_page=page.per_page, total=page.total, pages=page.pages)


@bp.route("/certificates/<serial>")
@requires(Permission.VIEW_CERTIFICATES)
def certificate(serial: str) -> Any:
    return jsonify(certificate_json(get_certificate(get_session(), serial=serial)))


@bp.route("/certificates/<serial>/<fmt>")
@requires(Permission.VIEW_CERTIFICATES)
def certificate_download(serial: str, fmt: str) -> Any:
    session = get_session()
    return attachment(*export_certificate(session, get_certificate(session, serial=serial), fmt))


def _revocation(serial: str, *, release: bool) -> Any:
    session = get_session()
    actor = current_actor()

    def work() -> Certificate:
        body = {} if release else json_body()
        reason = None if release else parse_reason(body.get("reason"))
        cert = revoke_by_serial(session, serial=serial, reason=reason, actor=actor,
                                invalidity_date=parse_invalidity_date(body.get("invalidity_date")))
        publish(session, ca_settings(), cert)
        return cert

    cert = audited_unit_of_work(session, new_session, work=work, failure_action=AuditAction.REVOCATION_REJECTED,
                                actor=actor, target=f"certificate:{serial[:40]}")
    return jsonify(certificate_json(cert))


@bp.route("/certificates/<serial>/revoke", methods=["POST"])
@requires(Permission.REVOKE_CERTIFICATES)
def revoke_certificate(serial: str) -> Any:
    """失効: ``{"reason": "keyCompromise", "invalidity_date": "...Z"?}``; removeFromCRL releases a hold."""
    return _revocation(serial, release=False)


@bp.route("/certificates/<serial>/release-hold", methods=["POST"])
@requires(Permission.REVOKE_CERTIFICATES)
def release_certificate_hold(serial: str) -> Any:
    """保留解除: release a certificateHold (removeFromCRL)."""
    return _revocation(serial, release=True)


def api_routes() -> list[str]:
    """Every documented path template, for tests comparing the spec with the app."""
    return sorted(json.loads(OPENAPI_PATH.read_text())["paths"])
