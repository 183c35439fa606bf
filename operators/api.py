"""REST API for tenants, joint use, operators, operator certificates and in-business IDs (/api/v1).

Thin: parse JSON, resolve tenants and operators through ``operators.tenancy``,
call one service, serialise. Documented in static/openapi.json.
"""

from __future__ import annotations

import base64
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask_babel import lazy_gettext
from sqlalchemy import func, or_, select

from ca.models import Certificate, RevocationReason
from ca.revocation import parse_reason
from db import get_session
from kernel.audit import AuditAction
from kernel.errors import InvalidInput, UnsupportedMediaType
from kernel.web import int_arg, json_body, optional_json_body
from kernel.webinput import query_text
from operators import csv_io
from operators.in_business import mappings_of
from operators.login.auth import current_actor, login_settings, requires
from operators.models import Operator
from operators.operator_certs import (
    IssuedOperatorCertificate,
    issue_operator_certificate,
    operator_certificates,
    release_operator_certificate_hold,
    revoke_operator_certificate,
)
from operators.operator_data import OperatorData
from operators.permissions import Permission
from operators.registration import (
    administered_business_id,
    bulk_change_passwords,
    register_and_issue,
    revoke_operator,
    update_operator,
)
from operators.tenancy import managed_operator, managed_tenant, operators_of
from operators.web import ca_settings, export_filters, operators_csv, scope, unit_of_work

bp = Blueprint("operators_api", __name__, url_prefix="/api/v1")


@bp.url_value_preprocessor
def _csv_upload_limit(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # Before the input guard reads the multipart form: a large CSV exceeds the general upload limit.
    if endpoint == "operators_api.operator_import":
        request.max_content_length = csv_io.MAX_CSV_BYTES


def operator_json(operator: Operator) -> dict[str, Any]:
    """An operator as the API shows it (never the password hash)."""
    mappings = mappings_of(get_session(), operator)
    return {
        "tenant": operator.tenant.code, "operator_id": operator.operator_id, "name": operator.name,
        "department": operator.department, "gender": operator.gender.value, "phone": operator.phone,
        "extension": operator.extension, "email": operator.email, "info": operator.info,
        "extra_info": operator.extra_info, "auth_method": operator.auth_method.value, "role": operator.role.value,
        "business_ids": [s.business_id for s in operator.permitted_systems],
        "in_business_ids": {m.business_system.business_id: {"in_business_id": m.in_business_id,
                                                              "permissions": m.permissions} for m in mappings},
        "administers_business_id": administered_business_id(get_session(), operator) or None,
        "revoked_at": operator.revoked_at.isoformat() if operator.revoked_at else None,
    }


def certificate_json(cert: Certificate) -> dict[str, Any]:
    """An operator certificate as the API shows it."""
    return {"serial": cert.serial, "subject": cert.subject, "status": cert.status,
            "not_after": cert.not_after.isoformat(), "business_ids": cert.details.get("business_ids", []),
            "revocation_reason": str(cert.revocation_reason) if cert.revocation_reason else None,
            "replaces_id": cert.replaces_id, "links": {"pem": f"/api/v1/certificates/{cert.serial}/pem"}}


def issued_json(issued: IssuedOperatorCertificate) -> dict[str, Any]:
    """A fresh certificate, with the PKCS#12 (base64) and its password when the key was made here."""
    data: dict[str, Any] = {"certificate": certificate_json(issued.certificate)}
    if issued.pkcs12 is not None:
        data["pkcs12"] = base64.b64encode(issued.pkcs12.data).decode()
        data["pkcs12_password"] = issued.pkcs12.password
    return data


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _csr(body: dict[str, Any]) -> bytes | None:
    csr = body.get("csr")
    if csr is None:
        return None
    if not isinstance(csr, str) or not csr.strip():
        raise InvalidInput(lazy_gettext("csr には証明書発行要求 (CSR) の PEM テキストを指定してください。"))
    return csr.encode("utf-8", errors="replace")


# --- operators ------------------------------------------------------------------------------------

@bp.route("/tenants/<code>/operators")
@requires(Permission.MANAGE_OPERATORS)
def operators(code: str) -> Any:
    """The tenant's operators, filtered and paginated."""
    session, s = get_session(), scope()
    found = managed_tenant(session, s, code)
    query = operators_of(s, found)
    if request.args.get("status", "active") == "active":
        query = query.where(Operator.revoked_at.is_(None))
    text = query_text("q", max_length=100)
    if text:
        query = query.where(or_(Operator.operator_id.contains(text, autoescape=True),
                                Operator.name.contains(text, autoescape=True)))
    page = int_arg("page", 1)
    per_page = int_arg("per_page", current_app.config["PAGE_SIZE"], high=500)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Operator.operator_id).offset((page - 1) * per_page).limit(per_page))
    return jsonify(items=[operator_json(o) for o in items], page=page, per_page=per_page, total=total)


@bp.route("/tenants/<code>/operators", methods=["POST"])
@requires(Permission.MANAGE_OPERATORS)
def operator_create(code: str) -> Any:
    """操作者登録 + オペレータ証明書: PKCS#12 (default) or from ``csr``; password generated unless given."""
    session, s = get_session(), scope()
    found = managed_tenant(session, s, code)

    def work() -> Any:
        body = json_body()
        password = body.get("password")
        if password is not None and not isinstance(password, str):
            raise InvalidInput(lazy_gettext("%(field)s は文字列で指定してください。", field="password"))
        return register_and_issue(session, scope=s, settings=ca_settings(), tenant=found,
                                  data=OperatorData.from_mapping(body), password=password or None,
                                  actor=current_actor(), csr_bytes=_csr(body))

    result = unit_of_work(work, failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{found.code}")
    data = {"operator": operator_json(result.operator), **issued_json(result.issued)}
    if result.password:
        data["password"] = result.password
    response = jsonify(data)
    response.status_code = 201
    return _no_store(response)


@bp.route("/tenants/<code>/operators/<operator_id>")
@requires(Permission.MANAGE_OPERATORS)
def operator(code: str, operator_id: str) -> Any:
    """照会: one operator with their certificates."""
    session, s = get_session(), scope()
    found = managed_operator(session, s, managed_tenant(session, s, code), operator_id)
    return jsonify(dict(operator_json(found),
                        certificates=[certificate_json(c) for c in operator_certificates(session, found)]))


@bp.route("/tenants/<code>/operators/<operator_id>", methods=["PUT"])
@requires(Permission.MANAGE_OPERATORS)
def operator_update(code: str, operator_id: str) -> Any:
    """照会・修正: all fields; a change of business_ids re-issues the certificates (old ones superseded)."""
    session, s = get_session(), scope()
    found = managed_operator(session, s, managed_tenant(session, s, code), operator_id)
    result = unit_of_work(lambda: update_operator(
        session, scope=s, settings=ca_settings(), operator=found,
        data=OperatorData.from_mapping(json_body(), operator_id=found.operator_id), actor=current_actor()),
        failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{code[:20]}/{found.operator_id}")
    return jsonify(dict(operator_json(result.operator), reissued=[certificate_json(c) for c in result.reissued]))


@bp.route("/tenants/<code>/operators/<operator_id>/certificates", methods=["POST"])
@requires(Permission.MANAGE_OPERATORS)
def operator_certificate_issue(code: str, operator_id: str) -> Any:
    """Issue another certificate for the operator (PKCS#12, or from a CSR)."""
    session, s = get_session(), scope()
    found = managed_operator(session, s, managed_tenant(session, s, code), operator_id)
    issued = unit_of_work(lambda: issue_operator_certificate(
        session, settings=ca_settings(), operator=found, actor=current_actor(),
        csr_bytes=_csr(optional_json_body())),
        failure=AuditAction.ISSUANCE_REJECTED, target=f"operator:{code[:20]}/{found.operator_id}")
    response = jsonify(issued_json(issued))
    response.status_code = 201
    return _no_store(response)


@bp.route("/tenants/<code>/operators/<operator_id>/certificates/<serial>/revoke", methods=["POST"])
@requires(Permission.MANAGE_OPERATORS)
def operator_certificate_revoke(code: str, operator_id: str, serial: str) -> Any:
    """Revoke one of the operator's certificates (``reason`` optional); ``removeFromCRL`` releases a hold."""
    session, s = get_session(), scope()
    found = managed_operator(session, s, managed_tenant(session, s, code), operator_id)

    def work() -> Certificate:
        reason = parse_reason(optional_json_body().get("reason", RevocationReason.UNSPECIFIED.value))
        if reason is None:
            return release_operator_certificate_hold(session, operator=found, serial=serial, actor=current_actor())
        return revoke_operator_certificate(session, operator=found, serial=serial, actor=current_actor(),
                                           reason=reason)

    cert = unit_of_work(work, failure=AuditAction.REVOCATION_REJECTED, target=f"certificate:{serial[:40]}")
    return jsonify(certificate_json(cert))


@bp.route("/tenants/<code>/operators/<operator_id>/certificates/<serial>/release-hold", methods=["POST"])
@requires(Permission.MANAGE_OPERATORS)
def operator_certificate_release_hold(code: str, operator_id: str, serial: str) -> Any:
    """保留解除 of one of the operator's certificates (removeFromCRL): who may put it on hold may release it."""
    session, s = get_session(), scope()
    found = managed_operator(session, s, managed_tenant(session, s, code), operator_id)
    cert = unit_of_work(lambda: release_operator_certificate_hold(session, operator=found, serial=serial,
                                                                  actor=current_actor()),
                        failure=AuditAction.REVOCATION_REJECTED, target=f"certificate:{serial[:40]}")
    return jsonify(certificate_json(cert))


@bp.route("/tenants/<code>/operators/<operator_id>/revoke", methods=["POST"])
@requires(Permission.MANAGE_OPERATORS)
def operator_revoke(code: str, operator_id: str) -> Any:
    """操作者失効."""
    session, s = get_session(), scope()
    found = managed_operator(session, s, managed_tenant(session, s, code), operator_id)
    result = unit_of_work(lambda: revoke_operator(session, scope=s, operator=found, actor=current_actor()),
                          failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{code[:20]}/{found.operator_id}")
    return jsonify(dict(operator_json(result.operator),
                        revoked_certificates=[c.serial for c in result.certificates],
                        biometric_credentials_removed=result.biometric_credentials_removed))


@bp.route("/tenants/<code>/operators/import", methods=["POST"])
@requires(Permission.MANAGE_OPERATORS)
def operator_import(code: str) -> Any:
    """一括登録 / 移行: the CSV as the body (text/csv) or as multipart ``file``; all or nothing."""
    session, s = get_session(), scope()
    found = managed_tenant(session, s, code)
    if request.is_json:  # a JSON body would be read as a CSV line ("unknown column {}")
        raise UnsupportedMediaType(lazy_gettext(
            "一括登録は CSV を送ってください(Content-Type: text/csv、または multipart の file)。"))

    def work() -> int:
        upload = request.files.get("file") if request.mimetype == "multipart/form-data" else None
        raw = upload.stream.read() if upload is not None else request.get_data()
        rows = csv_io.validate(session, tenant=found, text=csv_io.decode(raw),
                               drop_unpermitted=request.args.get("drop_unpermitted") == "1")
        return csv_io.run_import(session, scope=s, tenant=found, rows=rows, actor=current_actor())

    count = unit_of_work(work, failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{found.code}")
    return jsonify(imported=count), 201


@bp.route("/tenants/<code>/operators/export.csv")
@requires(Permission.MANAGE_OPERATORS)
def operator_export(code: str) -> Any:
    """オペレータ情報出力 as CSV."""
    session, s = get_session(), scope()
    found = managed_tenant(session, s, code)
    return operators_csv(session, s, found, export_filters())


@bp.route("/tenants/<code>/operators/template.csv")
@requires(Permission.MANAGE_OPERATORS)
def operator_template(code: str) -> Any:
    """The import template."""
    managed_tenant(get_session(), scope(), code)
    encoding = "cp932" if request.args.get("encoding") == "cp932" else "utf-8"
    return Response(csv_io.template_csv(encoding), mimetype="text/csv")


@bp.route("/tenants/<code>/passwords", methods=["POST"])
@requires(Permission.MANAGE_OPERATORS)
def passwords(code: str) -> Any:
    """パスワード一括変更: ``{"operator_ids": [...]}`` → the new passwords, once."""
    session, s = get_session(), scope()
    found = managed_tenant(session, s, code)

    def work() -> list[tuple[Operator, str]]:
        ids = json_body().get("operator_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 500:
            raise InvalidInput(lazy_gettext("operator_ids は500件以内のオペレータIDのリストで指定してください。"))
        chosen = [managed_operator(session, s, found, i) for i in ids]
        return bulk_change_passwords(session, scope=s, tenant=found, operators=chosen, actor=current_actor(),
                                     settings=login_settings())

    results = unit_of_work(work, failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{found.code}")
    return _no_store(jsonify(items=[{"operator_id": o.operator_id, "password": p} for o, p in results]))


# Tenants, joint use, in-business IDs and the caller's own account live in their own modules and add
# their routes to ``bp`` (one blueprint, so the CSRF exemption and the /api/v1 prefix stay in one place).
from operators import api_account, api_tenants  # noqa: E402,F401
