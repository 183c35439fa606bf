"""Web UI for SSL通信証明書 (発行・削除・照会・再発行) and certificate expiry warnings."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_babel import lazy_gettext
from werkzeug.datastructures import FileStorage

from ca.inquiry import expiring_certificates, list_certificates
from certs.tls_certs import (
    IssuedTlsCertificate,
    TlsCertificateData,
    delete_tls_certificate,
    get_tls_certificate,
    issue_tls_certificate,
    reissue_tls_certificate,
    tls_certificates,
)
from certs.views import read_upload
from db import get_session, new_session, utcnow
from kernel.audit import AuditAction, audited_unit_of_work
from kernel.errors import NotFound, OpauthError
from kernel.web import page_arg
from operators.business_systems import find_by_business_id, list_business_systems
from operators.login.auth import current_actor, current_operator, requires, requires_recent_auth
from operators.permissions import Permission
from operators.tenancy import administered_systems, scope_of, visible_tenants
from operators.web import ca_settings, scope

bp = Blueprint("tls_admin", __name__, url_prefix="/admin")


def _optional_csr(upload: FileStorage | None) -> bytes | None:
    """The uploaded CSR, or None when no file was chosen (then the key is generated here)."""
    if upload is None or not upload.filename:
        return None
    return read_upload(upload, current_app.config["MAX_CSR_BYTES"])


def _issued_page(issued: IssuedTlsCertificate) -> Any:
    """The result page; a generated PKCS#12 is embedded once and never stored."""
    p12 = None
    if issued.pkcs12 is not None:
        p12 = {"filename": issued.pkcs12.filename, "password": issued.pkcs12.password,
               "data": base64.b64encode(issued.pkcs12.data).decode()}
    response = current_app.make_response(render_template("ca/ssl_issued.html", cert=issued.certificate, p12=p12))
    response.headers["Cache-Control"] = "no-store"
    return response


def _form(error: str | None = None, values: dict[str, str] | None = None, status: int = 200) -> Any:
    session = get_session()
    return render_template("ca/ssl_form.html", error=error, values=values or {},
                           tenants=list(session.scalars(visible_tenants(scope()))),
                           systems=list_business_systems(session)), status


@bp.route("/ssl-certificates")
@requires(Permission.MANAGE_TLS_CERTIFICATES)
def ssl_list() -> Any:
    """照会: the active list, or every certificate with ?all=1."""
    show_all = request.args.get("all") == "1"
    return render_template("ca/ssl_list.html", certs=tls_certificates(get_session(), scope=scope(),
                                                                       active_only=not show_all),
                           show_all=show_all)


@bp.route("/ssl-certificates/new", methods=["GET", "POST"])
@requires(Permission.MANAGE_TLS_CERTIFICATES)
@requires_recent_auth
def ssl_new() -> Any:
    """発行: tenant, business system or terminal, host names; a CSR or a key generated here."""
    if request.method == "GET":
        return _form()
    values = {k: request.form.get(k, "") for k in ("tenant", "business_id", "terminal", "hosts")}
    session, actor = get_session(), current_actor()
    try:
        issued = audited_unit_of_work(
            session, new_session, failure_action=AuditAction.ISSUANCE_REJECTED, actor=actor,
            target="ssl_certificate",
            work=lambda: issue_tls_certificate(session, settings=ca_settings(), scope=scope(),
                                               data=TlsCertificateData.from_mapping(values),
                                               csr_bytes=_optional_csr(request.files.get("csr")), actor=actor))
    except OpauthError as exc:
        return _form(exc.message, values, exc.status)
    return _issued_page(issued)


@bp.route("/ssl-certificates/<serial>/delete", methods=["GET", "POST"])
@requires(Permission.MANAGE_TLS_CERTIFICATES)
@requires_recent_auth
def ssl_delete(serial: str) -> Any:
    """削除, after a confirmation page."""
    session, actor = get_session(), current_actor()
    cert = get_tls_certificate(session, scope=scope(), serial=serial)
    if request.method == "GET":
        return render_template("ca/ssl_confirm.html", cert=cert, action="delete")
    audited_unit_of_work(session, new_session, failure_action=AuditAction.REVOCATION_REJECTED, actor=actor,
                         target=f"certificate:{cert.serial}",
                         work=lambda: delete_tls_certificate(session, scope=scope(), serial=serial, actor=actor))
    return redirect(url_for("tls_admin.ssl_list"))


@bp.route("/ssl-certificates/<serial>/reissue", methods=["GET", "POST"])
@requires(Permission.MANAGE_TLS_CERTIFICATES)
@requires_recent_auth
def ssl_reissue(serial: str) -> Any:
    """再発行, after a confirmation page (optionally with a new CSR)."""
    session, actor = get_session(), current_actor()
    cert = get_tls_certificate(session, scope=scope(), serial=serial)
    if request.method == "GET":
        return render_template("ca/ssl_confirm.html", cert=cert, action="reissue")
    try:
        issued = audited_unit_of_work(
            session, new_session, failure_action=AuditAction.ISSUANCE_REJECTED, actor=actor,
            target=f"certificate:{cert.serial}",
            work=lambda: reissue_tls_certificate(session, settings=ca_settings(), scope=scope(), serial=serial,
                                                 csr_bytes=_optional_csr(request.files.get("csr")), actor=actor))
    except OpauthError as exc:
        return render_template("ca/ssl_confirm.html", cert=cert, action="reissue", error=exc.message), exc.status
    return _issued_page(issued)


@bp.route("/certificate-expiry")
@requires(Permission.VIEW_CERTIFICATE_EXPIRY)
def expiry() -> Any:
    """Certificates of business systems expiring soon: all for system administrators,
    the administered system's for a business system administrator."""
    return render_template("ca/expiry.html", certs=expiry_warnings(),
                           days=current_app.config["CERT_EXPIRY_WARNING_DAYS"])


@bp.route("/business-systems/<business_id>/certificates")
@requires(Permission.VIEW_CERTIFICATE_EXPIRY)
def business_certificates(business_id: str) -> Any:
    """A business system's certificates and their expiry (system administrators: any system;
    a business system administrator: the one they administer; anyone else: 404)."""
    session = get_session()
    reach = scope()
    system = find_by_business_id(session, business_id)
    if system is None or not (reach.all_tenants or system.id in {s.id for s in administered_systems(session, reach)}):
        raise NotFound(lazy_gettext("業務ID %(id)s の業務システムはありません。", id=business_id[:20]))
    certs = list_certificates(session, business_system_ids=[system.id], page=page_arg(),
                              per_page=current_app.config["PAGE_SIZE"])
    return render_template("ca/business_certificates.html", system=system, page=certs,
                           warn_before=utcnow() + timedelta(days=current_app.config["CERT_EXPIRY_WARNING_DAYS"]))


def expiry_warnings() -> list[Any]:
    """For menus: the expiring certificates the current user is responsible for (empty when none)."""
    operator = current_operator()
    if operator is None:
        return []
    reach = scope_of(operator)
    session = get_session()
    if not reach.all_tenants and reach.business_system_id is None:
        return []
    ids = None if reach.all_tenants else [s.id for s in administered_systems(session, reach)]
    return expiring_certificates(session, within_days=current_app.config["CERT_EXPIRY_WARNING_DAYS"],
                                 business_system_ids=ids)
