"""Administrator web UI for business systems and business server certificates (thin views)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography import x509
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from ca.authority import authorities
from ca.inquiry import chain_for, export_certificate, get_certificate
from ca.labels import reason_label
from ca.models import Certificate, CertificateProfile, RevocationReason
from ca.revocation import parse_invalidity_date, parse_reason, publish, revoke_by_serial
from certs.business_server import issue_business_server_certificate, preview
from certs.inquiry import find_certificates
from db import get_session, new_session
from kernel.audit import AuditAction, AuditResult, audited_unit_of_work
from kernel.audit_log import AuditFilters, compact_detail, list_events
from kernel.errors import InvalidCsr, OpauthError
from kernel.web import attachment, page_arg
from kernel.webinput import query_text
from operators.business_systems import (
    LABELS,
    BusinessSystemData,
    find_by_business_id,
    get_by_business_id,
    list_business_systems,
    save_and_audit,
)
from operators.login.auth import current_actor, current_operator, may, requires, requires_recent_auth
from operators.permissions import Permission, has_permission
from operators.tenancy import well_formed_business_id
from operators.web import ca_settings

bp = Blueprint("ca_admin", __name__)


def read_upload(upload: FileStorage | None, limit: int) -> bytes:
    """The uploaded file's bytes, reading at most ``limit + 1`` so huge files are refused cheaply."""
    if upload is None or not upload.filename:
        raise InvalidCsr(lazy_gettext("アップロードする証明書発行要求ファイル (CSR) を選択してください。"))
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise InvalidCsr(lazy_gettext(
            "証明書発行要求ファイル (CSR) が大きすぎます（最大 %(limit)s バイト）。", limit=limit))
    return data


@bp.route("/")
def root() -> Any:
    return redirect(url_for("top.index"))


@bp.route("/admin/")
@requires(Permission.VIEW_CERTIFICATES)
def index() -> Any:
    """システム管理 menu."""
    return render_template("ca/index.html", authorities=authorities(get_session()),
                           can_view_audit=may(Permission.VIEW_AUDIT))


@bp.route("/admin/business-server-certificates/new")
@requires(Permission.ISSUE_BUSINESS_SERVER_CERTIFICATES)
@requires_recent_auth
def new_business_server_certificate() -> Any:
    """業務サーバ証明書発行 ①: the business system's server information and the CSR."""
    values: dict[str, str] = {}
    existing = find_by_business_id(get_session(), query_text("business_id", max_length=2))
    if existing is not None:
        values = {field: getattr(existing, field) for field in LABELS}
    return render_template("ca/business_server_form.html", values=values, labels=LABELS, error=None)


@bp.route("/admin/business-server-certificates/confirm", methods=["POST"])
@requires(Permission.ISSUE_BUSINESS_SERVER_CERTIFICATES)
@requires_recent_auth
def confirm_business_server_certificate() -> Any:
    """Confirmation screen: exactly what will be issued, computed by the issuing code itself."""
    values = {field: request.form.get(field, "") for field in LABELS}
    limit = current_app.config["MAX_CSR_BYTES"]
    session = get_session()
    try:
        def work() -> Any:
            data = BusinessSystemData.from_mapping(values)
            csr_bytes = read_upload(request.files.get("csr"), limit)
            return data, csr_bytes, preview(data, csr_bytes, max_csr_bytes=limit)

        data, csr_bytes, planned = audited_unit_of_work(
            session, new_session, work=work, failure_action=AuditAction.CSR_REJECTED,
            actor=current_actor(), target=f"business_system:{values['business_id'][:2]}")
    except OpauthError as exc:
        return render_template("ca/business_server_form.html", values=values, labels=LABELS,
                               error=exc.message), exc.status
    return render_template("ca/business_server_confirm.html", data=data, labels=LABELS, planned=planned,
                           csr_b64=base64.b64encode(csr_bytes).decode(),
                           existing=find_by_business_id(session, data.business_id))


@bp.route("/admin/business-server-certificates/issue", methods=["POST"])
@requires(Permission.ISSUE_BUSINESS_SERVER_CERTIFICATES)
@requires_recent_auth
def issue_business_server() -> Any:
    """Issue after confirmation; the CSR and fields are validated again by the same service."""
    values = {field: request.form.get(field, "") for field in LABELS}
    session = get_session()
    actor = current_actor()
    try:
        def work() -> Any:
            try:
                csr_bytes = base64.b64decode(request.form.get("csr_b64", ""), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidCsr(lazy_gettext(
                    "確認した証明書発行要求ファイル (CSR) が変更されています。最初からやり直してください。")) from None
            return issue_business_server_certificate(
                session, settings=ca_settings(), data=BusinessSystemData.from_mapping(values),
                csr_bytes=csr_bytes, actor=actor, may_change_system=may(Permission.MANAGE_BUSINESS_SYSTEMS))

        cert = audited_unit_of_work(session, new_session, work=work,
                                    failure_action=AuditAction.ISSUANCE_REJECTED, actor=actor,
                                    target=f"business_system:{values['business_id'][:2]}")
    except OpauthError as exc:
        return render_template("ca/business_server_form.html", values=values, labels=LABELS,
                               error=exc.message), exc.status
    return redirect(url_for("ca_admin.certificate_detail", cert_id=cert.id, issued=1))


@bp.route("/admin/certificates")
@requires(Permission.VIEW_CERTIFICATES)
def certificate_list() -> Any:
    """照会: certificates with filters and pagination."""
    filters = {k: query_text(k, max_length=100) for k in ("profile", "business_id", "status", "text")}
    page = find_certificates(get_session(), page=page_arg(), per_page=current_app.config["PAGE_SIZE"],
                             **{k: v or None for k, v in filters.items()})
    return render_template("ca/certificate_list.html", page=page, filters=filters,
                           profiles=list(CertificateProfile))


@bp.route("/admin/certificates/<id:cert_id>")
@requires(Permission.VIEW_CERTIFICATES)
def certificate_detail(cert_id: int) -> Any:
    session = get_session()
    return _detail(session, get_certificate(session, cert_id=cert_id))


def _detail(session: Session, cert: Certificate, *, error: str | None = None) -> Any:
    operator = current_operator()
    return render_template("ca/certificate_detail.html", cert=cert, parsed=x509.load_der_x509_certificate(cert.der),
                           chain=chain_for(session, cert), issued=request.args.get("issued") == "1",
                           can_revoke=operator is not None and has_permission(operator,
                                                                              Permission.REVOKE_CERTIFICATES),
                           reasons=list(RevocationReason), error=error)


def _revocation_form() -> tuple[str, str]:
    """(reason name, invalidity date) from the 失効 form; a date without zone is taken as UTC."""
    reason = request.form.get("reason", "")
    invalidity = request.form.get("invalidity_date", "").strip()
    if invalidity and "Z" not in invalidity and "+" not in invalidity[10:] and "-" not in invalidity[10:]:
        invalidity += "+00:00"
    return reason, invalidity


@bp.route("/admin/certificates/<id:cert_id>/revoke/confirm", methods=["POST"])
@requires(Permission.REVOKE_CERTIFICATES)
@requires_recent_auth
def confirm_revocation(cert_id: int) -> Any:
    """失効確認: what will happen, before it happens (nothing is changed here)."""
    session = get_session()
    cert = get_certificate(session, cert_id=cert_id)
    reason_name, invalidity = _revocation_form()
    try:
        reason = parse_reason(reason_name)
        parse_invalidity_date(invalidity)
    except OpauthError as exc:
        return _detail(session, cert, error=exc.message), exc.status
    return render_template("ca/certificate_revoke_confirm.html", cert=cert, reason_name=reason_name,
                           invalidity_date=invalidity, release=reason is None)


@bp.route("/admin/certificates/<id:cert_id>/revoke", methods=["POST"])
@requires(Permission.REVOKE_CERTIFICATES)
@requires_recent_auth
def revoke_certificate(cert_id: int) -> Any:
    """失効 (or 保留解除 with removeFromCRL) after confirmation; CRL and OCSP are re-signed at once."""
    session = get_session()
    actor = current_actor()
    serial = get_certificate(session, cert_id=cert_id).serial
    reason_name, invalidity = _revocation_form()
    try:
        def work() -> Certificate:
            cert = revoke_by_serial(session, serial=serial, reason=parse_reason(reason_name), actor=actor,
                                    invalidity_date=parse_invalidity_date(invalidity))
            publish(session, ca_settings(), cert)
            return cert

        cert = audited_unit_of_work(session, new_session, work=work, failure_action=AuditAction.REVOCATION_REJECTED,
                                    actor=actor, target=f"certificate:{serial}")
    except OpauthError as exc:
        return _detail(session, get_certificate(session, cert_id=cert_id), error=exc.message), exc.status
    flash(_("保留を解除しました。") if cert.revoked_at is None
          else _("証明書を失効しました（%(reason)s）。", reason=reason_label(cert.revocation_reason)))
    return redirect(url_for("ca_admin.certificate_detail", cert_id=cert_id))


@bp.route("/admin/certificates/<id:cert_id>/download/<fmt>")
@requires(Permission.VIEW_CERTIFICATES)
def certificate_download(cert_id: int, fmt: str) -> Any:
    session = get_session()
    return attachment(*export_certificate(session, get_certificate(session, cert_id=cert_id), fmt))


@bp.route("/admin/audit")
@requires(Permission.VIEW_AUDIT)
def audit_log() -> Any:
    """監査ログ: entries newest first, filtered and paginated."""
    filters = AuditFilters.from_request()
    page = list_events(get_session(), filters, page=page_arg(), per_page=current_app.config["PAGE_SIZE"])
    return render_template("ca/audit_log.html", page=page, filters=filters, args=filters.as_args(),
                           actions=sorted(AuditAction), results=list(AuditResult), compact_detail=compact_detail)


@bp.route("/admin/business-systems")
@requires(Permission.MANAGE_BUSINESS_SYSTEMS)
def business_system_list() -> Any:
    return render_template("ca/business_system_list.html", systems=list_business_systems(get_session()))


@bp.route("/admin/business-systems/<business_id>/edit", methods=["GET", "POST"])
@requires(Permission.MANAGE_BUSINESS_SYSTEMS)
def business_system_edit(business_id: str) -> Any:
    """修正: change a business system's data (the certificate is re-issued separately)."""
    session = get_session()
    system = get_by_business_id(session, well_formed_business_id(business_id))
    values = {field: getattr(system, field) for field in LABELS}
    if request.method == "POST":
        values = {field: request.form.get(field, "") for field in LABELS}
        values["business_id"] = system.business_id  # the ID itself is not editable
        actor = current_actor()
        try:
            def work() -> Any:
                return save_and_audit(session, BusinessSystemData.from_mapping(values), actor)

            audited_unit_of_work(session, new_session, work=work,
                                 failure_action=AuditAction.BUSINESS_SYSTEM_REJECTED, actor=actor,
                                 target=f"business_system:{system.business_id}")
        except OpauthError as exc:
            return render_template("ca/business_system_edit.html", values=values, labels=LABELS,
                                   system=system, error=exc.message), exc.status
        return redirect(url_for("ca_admin.business_system_list"))
    return render_template("ca/business_system_edit.html", values=values, labels=LABELS, system=system,
                           error=None)
