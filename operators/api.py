"""REST API for tenants, joint use, operators, operator certificates and in-business IDs (/api/v1).

Thin: parse JSON, resolve tenants and operators through ``operators.tenancy``,
call one service, serialise. Documented in static/openapi.json.
"""

from __future__ import annotations

import base64
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import func, or_, select

from ca.errors import InvalidInput
from ca.models import Certificate, RevocationReason
from db import get_session
from operators import csv_io
from operators.audit import AuditAction
from operators.auth import current_actor, requires
from operators.business_systems import get_by_business_id
from operators.in_business import delete_in_business_id, list_mappings, parse_permissions, set_in_business_id
from operators.models import InBusinessId, Operator, Tenant
from operators.operator_certs import (
    IssuedOperatorCertificate,
    issue_operator_certificate,
    operator_certificates,
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
from operators.tenancy import (
    get_operator,
    get_tenant,
    in_business_system,
    managed_operator,
    managed_tenant,
    operators_of,
    visible_tenants,
    well_formed_business_id,
)
from operators.tenants import (
    TenantData,
    create_tenant,
    get_tenant_by_code,
    permitted_tenants,
    reorder_tenants,
    set_joint_use,
    update_tenant,
)
from operators.web import ca_settings, scope, unit_of_work

bp = Blueprint("operators_api", __name__, url_prefix="/api/v1")


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("send a JSON object (Content-Type: application/json)")
    return body


def _optional_body() -> dict[str, Any]:
    """The JSON object sent, or {} when there is no body; anything else is refused."""
    if not request.get_data(cache=True):
        return {}
    return _body()


def _int_arg(name: str, default: int, *, low: int = 1, high: int = 100_000) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}")
    return value


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {"code": tenant.code, "name": tenant.name, "kind": tenant.kind.value,
            "display_order": tenant.display_order}


def operator_json(operator: Operator) -> dict[str, Any]:
    mappings = get_session().scalars(select(InBusinessId).where(InBusinessId.operator_id == operator.id))
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
    return {"serial": cert.serial, "subject": cert.subject, "status": cert.status,
            "not_after": cert.not_after.isoformat(), "business_ids": cert.details.get("business_ids", []),
            "revocation_reason": str(cert.revocation_reason) if cert.revocation_reason else None,
            "replaces_id": cert.replaces_id, "links": {"pem": f"/api/v1/certificates/{cert.serial}/pem"}}


def issued_json(issued: IssuedOperatorCertificate) -> dict[str, Any]:
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
        raise InvalidInput("'csr' must be the PEM text of the certificate signing request")
    return csr.encode("utf-8", errors="replace")


# --- tenants and joint use ------------------------------------------------------------------------

@bp.route("/tenants")
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def tenants() -> Any:
    return jsonify(items=[tenant_json(t) for t in get_session().scalars(visible_tenants(scope()))])


@bp.route("/tenants", methods=["POST"])
@requires(Permission.MANAGE_TENANTS)
def tenant_create() -> Any:
    session = get_session()
    tenant = unit_of_work(lambda: create_tenant(session, data=TenantData.from_mapping(_body()),
                                                actor=current_actor()),
                          failure=AuditAction.TENANT_REJECTED, target="tenant")
    return jsonify(tenant_json(tenant)), 201


@bp.route("/tenants/<code>")
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def tenant(code: str) -> Any:
    return jsonify(tenant_json(get_tenant(get_session(), scope(), code)))


@bp.route("/tenants/<code>", methods=["PUT"])
@requires(Permission.MANAGE_TENANTS)
def tenant_update(code: str) -> Any:
    session = get_session()
    found = get_tenant_by_code(session, code)

    def work() -> Tenant:
        body = _body()
        body.setdefault("kind", found.kind.value if found.kind.value != "system" else "municipality")
        return update_tenant(session, tenant=found, data=TenantData.from_mapping(body, code=found.code),
                             actor=current_actor())

    return jsonify(tenant_json(unit_of_work(work, failure=AuditAction.TENANT_REJECTED, target=f"tenant:{found.code}")))


@bp.route("/tenant-order", methods=["PUT"])
@requires(Permission.MANAGE_TENANTS)
def tenant_order() -> Any:
    """表示順変更: ``{"codes": [...every tenant code in the new order]}``."""
    session = get_session()

    def work() -> list[Tenant]:
        codes = _body().get("codes")
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise InvalidInput("'codes' must be a list of tenant codes")
        return reorder_tenants(session, codes=codes, actor=current_actor())

    ordered = unit_of_work(work, failure=AuditAction.TENANT_REJECTED, target="tenants")
    return jsonify(items=[tenant_json(t) for t in ordered])


@bp.route("/business-systems/<business_id>/joint-use")
@requires(Permission.MANAGE_JOINT_USE)
def joint_use(business_id: str) -> Any:
    session = get_session()
    system = get_by_business_id(session, well_formed_business_id(business_id))
    return jsonify(business_id=system.business_id, tenants=[t.code for t in permitted_tenants(session, system)])


@bp.route("/business-systems/<business_id>/joint-use", methods=["PUT"])
@requires(Permission.MANAGE_JOINT_USE)
def joint_use_put(business_id: str) -> Any:
    """共同利用業務設定: ``{"tenants": [codes]}`` replaces the permitted tenants."""
    session = get_session()
    system = get_by_business_id(session, well_formed_business_id(business_id))

    def work() -> list[Tenant]:
        codes = _body().get("tenants")
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise InvalidInput("'tenants' must be a list of tenant codes")
        return set_joint_use(session, settings=ca_settings(), system=system, tenant_codes=codes, actor=current_actor())

    result = unit_of_work(work, failure=AuditAction.TENANT_REJECTED, target=f"business_system:{system.business_id}")
    return jsonify(business_id=system.business_id, tenants=[t.code for t in result])


# --- operators ------------------------------------------------------------------------------------

@bp.route("/tenants/<code>/operators")
@requires(Permission.MANAGE_OPERATORS)
def operators(code: str) -> Any:
    session, s = get_session(), scope()
    found = managed_tenant(session, s, code)
    query = operators_of(s, found)
    if request.args.get("status", "active") == "active":
        query = query.where(Operator.revoked_at.is_(None))
    text = request.args.get("q", "")[:100].replace("\x00", "").strip()
    if text:
        query = query.where(or_(Operator.operator_id.contains(text, autoescape=True),
                                Operator.name.contains(text, autoescape=True)))
    page = _int_arg("page", 1)
    per_page = _int_arg("per_page", current_app.config["PAGE_SIZE"], high=500)
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
        body = _body()
        password = body.get("password")
        if password is not None and not isinstance(password, str):
            raise InvalidInput("password must be a string")
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
        data=OperatorData.from_mapping(_body(), operator_id=found.operator_id), actor=current_actor()),
        failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{code[:20]}/{found.operator_id}")
    return jsonify(dict(operator_json(result.operator), reissued=[certificate_json(c) for c in result.reissued]))


@bp.route("/tenants/<code>/operators/<operator_id>/certificates", methods=["POST"])
@requires(Permission.MANAGE_OPERATORS)
def operator_certificate_issue(code: str, operator_id: str) -> Any:
    session, s = get_session(), scope()
    found = managed_operator(session, s, managed_tenant(session, s, code), operator_id)
    issued = unit_of_work(lambda: issue_operator_certificate(
        session, settings=ca_settings(), operator=found, actor=current_actor(),
        csr_bytes=_csr(_optional_body())),
        failure=AuditAction.ISSUANCE_REJECTED, target=f"operator:{code[:20]}/{found.operator_id}")
    response = jsonify(issued_json(issued))
    response.status_code = 201
    return _no_store(response)


@bp.route("/tenants/<code>/operators/<operator_id>/certificates/<serial>/revoke", methods=["POST"])
@requires(Permission.MANAGE_OPERATORS)
def operator_certificate_revoke(code: str, operator_id: str, serial: str) -> Any:
    session, s = get_session(), scope()
    found = managed_operator(session, s, managed_tenant(session, s, code), operator_id)

    def work() -> Certificate:
        raw = _optional_body().get("reason", "unspecified")
        try:
            reason = RevocationReason(raw)
        except ValueError:
            raise InvalidInput("unknown revocation reason") from None
        return revoke_operator_certificate(session, operator=found, serial=serial[:40], actor=current_actor(),
                                           reason=reason)

    cert = unit_of_work(work, failure=AuditAction.REVOCATION_REJECTED, target=f"certificate:{serial[:40]}")
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
    request.max_content_length = csv_io.MAX_CSV_BYTES
    session, s = get_session(), scope()
    found = managed_tenant(session, s, code)

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
    session, s = get_session(), scope()
    found = managed_tenant(session, s, code)
    filters = {k: request.args.get(k, "")[:200].replace("\x00", "") for k in csv_io.EXPORT_FILTERS}
    encoding = "cp932" if request.args.get("encoding") == "cp932" else "utf-8"
    body = unit_of_work(lambda: csv_io.export_csv(session, scope=s, tenant=found, filters=filters,
                                                  actor=current_actor(), encoding=encoding),
                        failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{found.code}")
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="operators-{found.code}.csv"'})


@bp.route("/tenants/<code>/operators/template.csv")
@requires(Permission.MANAGE_OPERATORS)
def operator_template(code: str) -> Any:
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
        ids = _body().get("operator_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 500:
            raise InvalidInput("'operator_ids' must be a list of at most 500 operator IDs")
        chosen = [managed_operator(session, s, found, i) for i in ids]
        return bulk_change_passwords(session, scope=s, tenant=found, operators=chosen, actor=current_actor())

    results = unit_of_work(work, failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{found.code}")
    return _no_store(jsonify(items=[{"operator_id": o.operator_id, "password": p} for o, p in results]))


# --- in-business IDs ------------------------------------------------------------------------------

@bp.route("/tenants/<code>/business-systems/<business_id>/in-business-ids")
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def in_business_ids(code: str, business_id: str) -> Any:
    session, s = get_session(), scope()
    found = get_tenant(session, s, code)
    system = in_business_system(session, s, found, business_id)
    page = _int_arg("page", 1)
    per_page = _int_arg("per_page", current_app.config["PAGE_SIZE"], high=500)
    rows, total = list_mappings(session, scope=s, tenant=found, system=system, page=page, per_page=per_page)
    return jsonify(items=[{"operator_id": r.operator.operator_id, "name": r.operator.name,
                           "in_business_id": r.mapping.in_business_id if r.mapping else None,
                           "permissions": r.mapping.permissions if r.mapping else []} for r in rows],
                   page=page, per_page=per_page, total=total)


@bp.route("/tenants/<code>/business-systems/<business_id>/in-business-ids/<operator_id>", methods=["PUT"])
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def in_business_id_put(code: str, business_id: str, operator_id: str) -> Any:
    """操作者権限登録: ``{"in_business_id": "U001", "permissions": ["read", ...]}``."""
    session, s = get_session(), scope()
    found = get_tenant(session, s, code)
    system = in_business_system(session, s, found, business_id)
    op = get_operator(session, s, found, operator_id)

    def work() -> InBusinessId:
        body = _body()
        value = body.get("in_business_id")
        if not isinstance(value, str):
            raise InvalidInput("'in_business_id' must be a string")
        return set_in_business_id(session, operator=op, system=system, in_business_id=value,
                                  permissions=parse_permissions(body.get("permissions")), actor=current_actor())

    mapping = unit_of_work(work, failure=AuditAction.OPERATOR_REJECTED,
                           target=f"operator:{found.code}/{op.operator_id}")
    return jsonify(operator_id=op.operator_id, business_id=system.business_id, in_business_id=mapping.in_business_id,
                   permissions=mapping.permissions)


@bp.route("/tenants/<code>/business-systems/<business_id>/in-business-ids/<operator_id>", methods=["DELETE"])
@requires(Permission.MANAGE_IN_BUSINESS_IDS)
def in_business_id_delete(code: str, business_id: str, operator_id: str) -> Any:
    session, s = get_session(), scope()
    found = get_tenant(session, s, code)
    system = in_business_system(session, s, found, business_id)
    op = get_operator(session, s, found, operator_id)
    unit_of_work(lambda: delete_in_business_id(session, operator=op, system=system, actor=current_actor()),
                 failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{found.code}/{op.operator_id}")
    return Response(status=204)
