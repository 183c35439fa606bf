"""生体情報管理 and 生体認証ログイン: pages and the JSON endpoints that static/js/webauthn.js calls.

Thin: parse, find the operator through the tenancy guard, call one service in
``bio.service``, commit once (also after a refusal: a spent challenge stays
spent, failures count towards the lock), answer. Ceremony state is the id of a
server-side challenge kept in the Flask session.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any

from flask import Blueprint, Flask, current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from bio.models import ChallengePurpose
from bio.service import (
    begin_login,
    begin_reauth,
    begin_registration,
    challenge_operator,
    consume_challenge,
    credential_counts,
    credentials_of,
    delete_credential,
    finish_login,
    finish_registration,
    get_credential,
    issue_enrolment_code,
    record_enrolment_code_refusal,
    record_enrolment_failure,
    redeem_enrolment_code,
)
from bio.webauthn import RelyingParty, WebAuthnFailure
from db import get_session
from kernel import webinput
from kernel.errors import OpauthError
from kernel.web import json_body
from operators.login import mtls
from operators.login.auth import (
    LOGIN_FAILED,
    SYSTEM_TENANT_CODE,
    THROTTLED,
    after_login_url,
    attempt_actor,
    client_address,
    current_actor,
    current_operator,
    form_identity,
    is_recently_authenticated,
    login_settings,
    mark_reauthenticated,
    requires,
    requires_recent_auth,
    safe_next,
    start_session,
    tenants,
)
from operators.login.models import LoginMethod
from operators.login.service import LoginRefusal, is_throttled, note_source_failure
from operators.models import Operator, Tenant
from operators.permissions import Permission
from operators.tenancy import managed_operator, managed_tenant, operators_of, scope_of, visible_tenants

bp = Blueprint("bio", __name__, url_prefix="/bio")

LOGIN_KEY = "bio_login_challenge"
REGISTER_KEY = "bio_register_challenge"
REAUTH_KEY = "bio_reauth_challenge"
SELF_ENROL_KEY = "bio_self_enrol_operator"


def rp() -> RelyingParty:
    return RelyingParty.from_config(current_app.config)


def _json_body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def _text(data: dict[str, Any], key: str, limit: int) -> str:
    """``data[key]`` under the text rule: a string within ``limit``, refused (400) when longer, never cut."""
    return webinput.text(data.get(key), field=key, max_length=limit)


def _options_response(options_json: str) -> Any:
    return current_app.response_class(options_json, mimetype="application/json",
                                      headers={"Cache-Control": "no-store"})


def _failure(message: str, status: int = 400) -> Any:
    return jsonify(error="refused", message=message), status


def _managed(db_session: Session, tenant_code: str, operator_id: str) -> Operator:
    actor_operator = current_operator()
    assert actor_operator is not None
    scope = scope_of(actor_operator)
    tenant = managed_tenant(db_session, scope, tenant_code)
    return managed_operator(db_session, scope, tenant, operator_id)


# --- biometric login ----------------------------------------------------------------------------

@bp.route("/login")
def login() -> Any:
    """生体情報照合画面: tenant and operator ID, then the authenticator."""
    return render_template("bio/login.html", tenants=tenants(get_session()),
                           selected=request.args.get("tenant", SYSTEM_TENANT_CODE))


@bp.route("/login/options", methods=["POST"])
def login_options() -> Any:
    # Malformed input is 400; an unknown but well-formed operator gets decoy options (who exists stays unsaid).
    data = json_body()
    tenant_code, operator_id = _text(data, "tenant", 20), _text(data, "operator_id", 64)
    db_session = get_session()
    if is_throttled(db_session, source=client_address(), settings=login_settings()):
        return _failure(str(THROTTLED), 429)
    secret = hashlib.sha256(b"opauth-bio-decoy\0" + str(current_app.config["SECRET_KEY"]).encode()).digest()
    ceremony = begin_login(db_session, tenant_code=tenant_code, operator_id=operator_id, rp=rp(),
                           decoy_secret=secret)
    db_session.commit()
    session[LOGIN_KEY] = ceremony.challenge_id
    session["bio_login_claim"] = [tenant_code, operator_id]
    return _options_response(ceremony.options_json)


@bp.route("/login/verify", methods=["POST"])
def login_verify() -> Any:
    data = _json_body()
    db_session = get_session()
    claim = session.pop("bio_login_claim", None) or ["", ""]
    actor = attempt_actor(tenant_code=str(claim[0]), operator_id=str(claim[1]))
    challenge_id = session.pop(LOGIN_KEY, None)
    identity, cert_refusal = None, None
    claimed = challenge_operator(db_session, challenge_id=challenge_id)
    if claimed is not None and current_app.config["BIOMETRIC_CLIENT_CERT_REQUIRED"]:
        # Mutual TLS: the operator's own, valid operator certificate. Checked before the login's own
        # writes (operators.login.mtls audits its refusals in a transaction of their own); finish_login decides.
        try:
            identity = mtls.operator_certificate_for(claimed.id)
        except mtls.ClientCertRefused as exc:
            cert_refusal = exc.message
    result = finish_login(db_session, challenge_id=challenge_id, credential=data.get("credential"),
                          rp=rp(), settings=login_settings(), source=client_address(), actor=actor,
                          client_refusal=cert_refusal)
    db_session.commit()
    if result.ok and result.operator is not None:
        start_session(result.operator, method=LoginMethod.BIOMETRIC)
        if identity is not None:
            mtls.bind_session(identity)
        return jsonify(redirect=after_login_url(result.operator))
    if result.refusal is LoginRefusal.THROTTLED:
        return _failure(str(THROTTLED), 429)
    if result.refusal is LoginRefusal.CLIENT_CERTIFICATE and result.explanation:
        return _failure(result.explanation, 403)
    return _failure(str(LOGIN_FAILED), 401)


# --- re-authentication of a logged-in biometric operator ----------------------------------------

@bp.route("/reauth/options", methods=["POST"])
def reauth_options() -> Any:
    operator = current_operator()
    if operator is None:
        return _failure(_("ログインしてください。"), 401)
    db_session = get_session()
    try:
        ceremony = begin_reauth(db_session, operator=db_session.merge(operator), rp=rp())
    except OpauthError as exc:
        return _failure(exc.message, exc.status)
    db_session.commit()
    session[REAUTH_KEY] = ceremony.challenge_id
    return _options_response(ceremony.options_json)


@bp.route("/reauth/verify", methods=["POST"])
def reauth_verify() -> Any:
    operator = current_operator()
    if operator is None:
        return _failure(_("ログインしてください。"), 401)
    db_session = get_session()
    result = finish_login(db_session, challenge_id=session.pop(REAUTH_KEY, None),
                          credential=_json_body().get("credential"), rp=rp(), settings=login_settings(),
                          source=client_address(), actor=current_actor(), method=LoginMethod.REAUTH_BIOMETRIC,
                          expected_operator=operator)
    db_session.commit()
    if not result.ok:
        return _failure(str(LOGIN_FAILED), 401)
    mark_reauthenticated()
    return jsonify(redirect=safe_next(request.args.get("next")) or url_for("top.index"))


# --- 生体情報管理 (managers) ------------------------------------------------------------------------

@bp.route("/manage")
@requires(Permission.MANAGE_BIOMETRICS)
def manage() -> Any:
    """Operators of a tenant the manager manages, with their number of credentials."""
    operator = current_operator()
    assert operator is not None
    db_session = get_session()
    scope = scope_of(operator)
    visible = list(db_session.scalars(visible_tenants(scope)))
    code = request.args.get("tenant", operator.tenant.code)[:20]
    tenant: Tenant = managed_tenant(db_session, scope, code)
    operators = list(db_session.scalars(operators_of(scope, tenant).order_by(Operator.operator_id)))
    return render_template("bio/manage.html", tenant=tenant, tenants=visible, operators=operators,
                           counts=credential_counts(db_session, [o.id for o in operators]))


@bp.route("/manage/<tenant_code>/<operator_id>")
@requires(Permission.MANAGE_BIOMETRICS)
@requires_recent_auth
def manage_operator(tenant_code: str, operator_id: str) -> Any:
    """One operator's credentials: enrol at this terminal, issue an enrolment code, delete."""
    db_session = get_session()
    target = _managed(db_session, tenant_code, operator_id)
    return render_template("bio/operator.html", target=target, credentials=credentials_of(db_session, target),
                           code=None)


@bp.route("/manage/<tenant_code>/<operator_id>/register/options", methods=["POST"])
@requires(Permission.MANAGE_BIOMETRICS)
def register_options(tenant_code: str, operator_id: str) -> Any:
    if not is_recently_authenticated():
        return _failure(_("再認証が必要です。"), 403)
    db_session = get_session()
    target = _managed(db_session, tenant_code, operator_id)
    try:
        ceremony = begin_registration(db_session, operator=target, rp=rp())
    except OpauthError as exc:
        return _refuse_enrolment(db_session, target, exc)
    db_session.commit()
    session[REGISTER_KEY] = [target.id, ceremony.challenge_id]
    return _options_response(ceremony.options_json)


def _refuse_enrolment(db_session: Session, target: Operator, exc: OpauthError) -> Any:
    """Answer a refused enrolment with its reason, audited as a failure."""
    db_session.rollback()
    record_enrolment_failure(db_session, operator=target, actor=current_actor(), reason=exc.message)
    db_session.commit()
    return _failure(exc.message, exc.status)


@bp.route("/manage/<tenant_code>/<operator_id>/register/verify", methods=["POST"])
@requires(Permission.MANAGE_BIOMETRICS)
def register_verify(tenant_code: str, operator_id: str) -> Any:
    db_session = get_session()
    target = _managed(db_session, tenant_code, operator_id)
    state = session.pop(REGISTER_KEY, None)
    challenge_id = state[1] if isinstance(state, list) and len(state) == 2 and state[0] == target.id else None
    response, _ok = _finish_registration(db_session, target, challenge_id, url_for(
        "bio.manage_operator", tenant_code=tenant_code, operator_id=operator_id))
    return response


def _finish_registration(db_session: Session, target: Operator, challenge_id: Any,
                         next_url: str) -> tuple[Any, bool]:
    data = _json_body()
    actor = current_actor() if current_operator() is not None else attempt_actor(
        tenant_code=target.tenant.code, operator_id=target.operator_id)
    try:
        finish_registration(db_session, operator=target, challenge_id=challenge_id,
                            credential=data.get("credential"), nickname=_text(data, "nickname", 100),
                            rp=rp(), actor=actor)
    except OpauthError as exc:
        db_session.rollback()
        record_enrolment_failure(db_session, operator=target, actor=actor, reason=exc.message)
        _spend(db_session, challenge_id)
        db_session.commit()
        return _failure(exc.message, exc.status), False
    db_session.commit()
    flash(_("生体情報を登録しました。"))
    return jsonify(redirect=next_url), True


def _spend(db_session: Session, challenge_id: Any) -> None:
    """Make sure a failed ceremony's challenge stays spent after the rollback."""
    with contextlib.suppress(WebAuthnFailure):
        consume_challenge(db_session, challenge_id=challenge_id, purpose=ChallengePurpose.REGISTRATION)


@bp.route("/manage/<tenant_code>/<operator_id>/credentials/<id:credential_pk>/delete")
@requires(Permission.MANAGE_BIOMETRICS)
@requires_recent_auth
def delete_confirm(tenant_code: str, operator_id: str, credential_pk: int) -> Any:
    """Confirmation before 生体認証情報削除: what goes, and that the operator may be left unable to log in."""
    db_session = get_session()
    target = _managed(db_session, tenant_code, operator_id)
    credential = get_credential(db_session, operator=target, credential_pk=credential_pk)
    remaining = [c for c in credentials_of(db_session, target) if c.id != credential.id]
    return render_template("bio/credential_delete.html", target=target, credential=credential,
                           remaining=len(remaining))


@bp.route("/manage/<tenant_code>/<operator_id>/credentials/<id:credential_pk>/delete", methods=["POST"])
@requires(Permission.MANAGE_BIOMETRICS)
@requires_recent_auth
def delete(tenant_code: str, operator_id: str, credential_pk: int) -> Any:
    """生体認証情報削除 (after the confirmation page)."""
    db_session = get_session()
    target = _managed(db_session, tenant_code, operator_id)
    delete_credential(db_session, operator=target, credential_pk=credential_pk, actor=current_actor())
    db_session.commit()
    flash(_("生体情報を削除しました。"))
    return redirect(url_for("bio.manage_operator", tenant_code=tenant_code, operator_id=operator_id)), 303


@bp.route("/manage/<tenant_code>/<operator_id>/enrolment-code", methods=["POST"])
@requires(Permission.MANAGE_BIOMETRICS)
@requires_recent_auth
def enrolment_code(tenant_code: str, operator_id: str) -> Any:
    """Issue a single-use self-enrolment code (shown once)."""
    db_session = get_session()
    target = _managed(db_session, tenant_code, operator_id)
    manager = current_operator()
    assert manager is not None
    try:
        code, row = issue_enrolment_code(db_session, operator=target, issued_by=db_session.merge(manager),
                                         minutes=int(current_app.config["ENROLMENT_CODE_MINUTES"]),
                                         actor=current_actor())
    except OpauthError as exc:
        db_session.rollback()
        record_enrolment_code_refusal(db_session, operator=target, actor=current_actor(), reason=exc.message)
        db_session.commit()
        return render_template("bio/operator.html", target=target, credentials=credentials_of(db_session, target),
                               code=None, error=exc.message), exc.status
    db_session.commit()
    response = current_app.make_response(render_template(
        "bio/operator.html", target=target, credentials=credentials_of(db_session, target), code=code,
        code_expires=row.expires_at))
    response.headers["Cache-Control"] = "no-store"
    return response


# --- self-enrolment with a code ------------------------------------------------------------------

@bp.route("/enrol", methods=["GET", "POST"])
def enrol() -> Any:
    """Self-enrolment: tenant, operator ID and the code from the manager, then the authenticator."""
    db_session = get_session()
    error = None
    status = 200
    if request.method == "POST":
        tenant_code, operator_id, actor = form_identity()
        settings = login_settings()
        if is_throttled(db_session, source=client_address(), settings=settings):
            error, status = str(THROTTLED), 429
        else:
            try:
                target = redeem_enrolment_code(db_session, tenant_code=tenant_code, operator_id=operator_id,
                                               code=request.form.get("code", "")[:40], actor=actor)
            except WebAuthnFailure:
                note_source_failure(db_session, source=client_address(), settings=settings)
                db_session.commit()
                error, status = _("オペレータID又は登録コードが正しくないか、有効期限が切れています。"), 400
            else:
                db_session.commit()
                session[SELF_ENROL_KEY] = [target.id, int(time.time())]
                return render_template("bio/enrol_ready.html", target=target)
    return render_template("bio/enrol.html", tenants=tenants(db_session), error=error,
                           selected=request.form.get("tenant", SYSTEM_TENANT_CODE)), status


def _self_enrol_target(db_session: Session) -> Operator | None:
    """The operator whose code this browser redeemed, for ENROLMENT_CODE_MINUTES at most."""
    state = session.get(SELF_ENROL_KEY)
    if not isinstance(state, list) or len(state) != 2 or not all(isinstance(v, int) for v in state):
        return None
    pk, redeemed_at = state
    if time.time() - redeemed_at > int(current_app.config["ENROLMENT_CODE_MINUTES"]) * 60:
        return None
    operator = db_session.get(Operator, pk)
    return operator if operator is not None and operator.revoked_at is None else None


@bp.route("/enrol/options", methods=["POST"])
def enrol_options() -> Any:
    db_session = get_session()
    target = _self_enrol_target(db_session)
    if target is None:
        return _failure(_("登録コードを入力してください。"), 401)
    ceremony = begin_registration(db_session, operator=target, rp=rp())
    db_session.commit()
    session[REGISTER_KEY] = [target.id, ceremony.challenge_id]
    return _options_response(ceremony.options_json)


@bp.route("/enrol/verify", methods=["POST"])
def enrol_verify() -> Any:
    db_session = get_session()
    target = _self_enrol_target(db_session)
    if target is None:
        return _failure(_("登録コードを入力してください。"), 401)
    state = session.pop(REGISTER_KEY, None)
    challenge_id = state[1] if isinstance(state, list) and len(state) == 2 and state[0] == target.id else None
    response, ok = _finish_registration(db_session, target, challenge_id,
                                        url_for("bio.login", tenant=target.tenant.code))
    if ok:
        session.pop(SELF_ENROL_KEY, None)  # the code bought one enrolment
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
