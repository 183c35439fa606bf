"""The authorization endpoint: opauth's own login session is the OpenID Provider's login.

An operator without a session (or one too old for ``max_age``, or asked to log in again by
``prompt=login``) is sent to opauth's login; a signed, short-lived cookie remembers the request and
the operator's top screen sends them back to it once they have logged in. ``prompt=none`` never
shows a page: it answers ``login_required``. An operator who may not use the system gets
``access_denied``; every refusal is audited.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse
from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AccessDeniedError, InvalidRequestError
from authlib.oidc.core.errors import LoginRequiredError
from flask import Blueprint, Flask, current_app, redirect, render_template, request, session, url_for
from flask_babel import lazy_gettext
from flask_login import current_user, logout_user
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ca.authority import CaSettings
from db import get_session, new_session
from kernel.audit import Actor, AuditAction, AuditResult, record_event, record_event_separately
from kernel.i18n import LANGUAGES
from oidc.claims import refusal_for, subject_for
from oidc.logout import SID_KEY
from oidc.pairwise import pairwise_key
from oidc.server import Client, get_server, issuer
from operators.login.auth import current_operator
from operators.login.mtls import SESSION_KEY as CLIENT_CERT_SESSION_KEY
from operators.models import AuthMethod, Operator

bp = Blueprint("oidc_authorize", __name__, url_prefix="/oidc")

RESUME_COOKIE = "opauth_oidc_resume"
# What the person is shown when a refusal cannot go back to the business system (the OAuth error code stays;
# Authlib's English description goes to the audit log and, with a trusted redirect URI, to the client).
PAGE_MESSAGES = {
    "invalid_client": lazy_gettext("この業務システム (client_id) はこのサーバに登録されていないか、業務ログインが"
                                   "有効になっていません。業務システムの管理者に連絡してください。"),
    "invalid_request": lazy_gettext("業務システムからのログイン要求が正しくありません（リダイレクト URI などが"
                                    "登録内容と一致しません）。業務システムの管理者に連絡してください。"),
}
PAGE_MESSAGE_OTHER = lazy_gettext("業務システムからのログイン要求を受け付けられませんでした。業務システムの管理者に"
                                  "連絡してください。")
RESUME_SECONDS = 600
LOGIN_ASKED_KEY = "oidc_login_asked"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(str(current_app.secret_key), salt="oidc-resume")


def _resume_state() -> dict[str, Any] | None:
    """The pending authorization request remembered across the login, if any and still fresh."""
    raw = request.cookies.get(RESUME_COOKIE)
    if not raw:
        return None
    try:
        state = _serializer().loads(raw, max_age=RESUME_SECONDS)
    except BadSignature:
        return None
    return state if isinstance(state, dict) and isinstance(state.get("url"), str) else None


def _actor(operator: Operator | None) -> Actor:
    if operator is None:
        return Actor(name="anonymous", source=request.remote_addr or "")
    return Actor(name=operator.operator_id, tenant=operator.tenant.code, source=request.remote_addr or "")


def _target() -> str:
    return f"client:{str(request.values.get('client_id', ''))[:40]}"


def _error_response(error: OAuth2Error, *, operator: Operator | None, reason: str = "") -> Any:
    """Audit the refusal; redirect it to the client when its redirect URI is trusted, else show a page."""
    record_event_separately(new_session, action=AuditAction.OIDC_DENIED, actor=_actor(operator),
                            result=AuditResult.FAILURE, target=_target(),
                            detail={"error": error.error, "description": str(error.description or "")[:300],
                                    **({"reason": reason} if reason else {})})
    if error.redirect_uri:
        params = [("error", error.error)]
        if error.description:
            params.append(("error_description", str(error.description)))
        if error.state:
            params.append(("state", error.state))
        params.append(("iss", issuer()))
        response = redirect(add_params_to_uri(error.redirect_uri, params))
    else:
        response = current_app.make_response((render_template(
            "error.html", status=400,
            message=f"{error.error}: {PAGE_MESSAGES.get(error.error, PAGE_MESSAGE_OTHER)}"), 400))
    response.delete_cookie(RESUME_COOKIE, path="/")
    return response


def _to_login(operator: Operator | None) -> Any:
    """Send the browser to opauth's login (or the forced password change) and remember this request."""
    target = url_for("auth.change_password") if operator is not None and _must_change_password(operator) \
        else url_for("auth.login")
    wanted = [tag.split("-")[0].lower() for tag in str(request.values.get("ui_locales", "")).split()]
    language = next((tag for tag in wanted if tag in LANGUAGES), None)  # OIDC ui_locales: the first we have
    response = redirect(f"{target}?lang={language}" if language else target)
    marker = secrets.token_urlsafe(16)
    session[LOGIN_ASKED_KEY] = marker  # a login clears the session, and with it this marker
    cookie = _serializer().dumps({"url": _request_url(), "asked": marker})
    response.set_cookie(RESUME_COOKIE, cookie, max_age=RESUME_SECONDS, path="/", httponly=True,
                        secure=bool(current_app.config["SESSION_COOKIE_SECURE"]), samesite="Lax")
    return response


def _request_url() -> str:
    """This authorization request as a GET URL (a POSTed request comes back as GET after the login)."""
    return "/oidc/authorize?" + urllib.parse.urlencode(list(request.values.items(multi=True)))


def _max_age() -> int | None:
    raw = request.values.get("max_age")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise ValueError("max_age must be a non-negative integer")
    return int(raw)


def _logged_in_since_asked(state: dict[str, Any] | None) -> bool:
    """True when a login happened after the request in ``state`` sent the browser to it.

    Logging in starts a fresh session, so the marker set when the browser was sent away is gone.
    """
    return state is not None and bool(state.get("asked")) and session.get(LOGIN_ASKED_KEY) != state["asked"]


def _fresh_login_done() -> bool:
    """True when the operator logged in after this same request sent them to the login."""
    state = _resume_state()
    return state is not None and state["url"] == _request_url() and _logged_in_since_asked(state)


def _must_change_password(operator: Operator) -> bool:
    # Biometric operators have no password to change (the flag set at registration means nothing for them).
    return operator.must_change_password and operator.auth_method is AuthMethod.PASSWORD


def _login_needed(operator: Operator | None, prompts: set[str], max_age: int | None) -> bool:
    if operator is None or _must_change_password(operator):
        return True
    auth_at = session.get("auth_at")
    if not isinstance(auth_at, int):
        return True
    if "login" in prompts or (max_age is not None and int(time.time()) - auth_at >= max_age):
        return not _fresh_login_done()
    return False


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Any:
    """Authorization endpoint (code flow only); GET or a form POST from the business system (OIDC Core 3.1.2.1)."""
    server = get_server()
    operator = current_operator()
    try:
        grant = server.get_consent_grant(end_user=None)
    except OAuth2Error as error:
        return _error_response(error, operator=operator)
    client: Client = grant.request.client
    redirect_uri = grant.redirect_uri
    state = request.values.get("state")
    prompts = set(str(request.values.get("prompt", "")).split())
    try:
        max_age = _max_age()
        if "none" in prompts and len(prompts) > 1:
            raise ValueError("prompt=none cannot be combined with other values")
    except ValueError as exc:
        return _error_response(InvalidRequestError(str(exc), redirect_uri=redirect_uri, state=state),
                               operator=operator)
    if _login_needed(operator, prompts, max_age):
        if "none" in prompts:
            return _error_response(LoginRequiredError(redirect_uri=redirect_uri, state=state), operator=operator)
        return _to_login(operator)
    assert operator is not None
    db_session = get_session()
    operator = db_session.merge(operator)
    refusal = refusal_for(db_session, operator=operator, system=client.system, client=client.settings)
    if refusal is not None:
        return _error_response(AccessDeniedError(redirect_uri=redirect_uri, state=state), operator=operator,
                               reason=str(refusal))
    if SID_KEY not in session:
        session[SID_KEY] = secrets.token_urlsafe(24)  # ends with the opauth session (login clears it)
    settings = CaSettings.from_config(current_app.config)
    subject = subject_for(db_session, pairwise_key(settings.instance_dir), operator=operator, system=client.system,
                          sid=str(session[SID_KEY]), auth_time=int(session["auth_at"]),
                          login_method=str(session.get("login_method", "password")),
                          operator_cert_sha256=str(session.get(CLIENT_CERT_SESSION_KEY, "")))
    response = server.create_authorization_response(grant=grant, grant_user=subject)
    issued = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(response.location or "").query))
    if response.status_code == 302 and "code" in issued and "error" not in issued:
        record_event(db_session, action=AuditAction.OIDC_AUTHORIZED, actor=_actor(operator),
                     target=f"business_system:{client.system.business_id}",
                     detail={"sid": subject.sid, "acr": subject.login_kind.acr})
        db_session.commit()
    else:
        db_session.rollback()
    response.delete_cookie(RESUME_COOKIE, path="/")
    return response


def _resume_after_login() -> Any:
    """On the top screen after a login: go back to the authorization request that sent the operator away."""
    if request.endpoint != "top.index" or not current_user.is_authenticated:
        return None
    state = _resume_state()
    if state is None or not _logged_in_since_asked(state):
        return None
    url = state["url"]
    if not url.startswith("/oidc/authorize?"):
        return None
    return redirect(url)


def init_app(app: Flask) -> None:
    """Register the endpoint and the return from the login."""
    app.register_blueprint(bp)
    csrf = app.extensions.get("csrf")
    if csrf is not None:  # business systems POST authorization requests from their own pages
        csrf.exempt(authorize)
    app.before_request(_resume_after_login)


# --- RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) ---------------------------------------

def _end_opauth_session(operator: Operator | None) -> None:
    """Log the browser out of opauth, as its own logout does (the business systems are told by back-channel)."""
    if operator is not None:
        db_session = get_session()
        record_event(db_session, action=AuditAction.LOGOUT, actor=_actor(operator), detail={"via": "oidc"})
        db_session.commit()
    logout_user()
    session.clear()


def _finish_logout(redirect_uri: str | None) -> Any:
    if redirect_uri:
        return redirect(redirect_uri)
    return render_template("oidc/logged_out.html")


@bp.route("/logout", methods=["GET", "POST"])
def end_session() -> Any:
    """End-session endpoint: with a matching ``id_token_hint`` at once, otherwise after the operator confirms."""
    server = get_server()
    operator = current_operator()
    try:
        end_request = server.validate_endpoint_request("end_session")
    except OAuth2Error as error:
        return _error_response(error, operator=operator)
    claims = end_request.id_token_claims
    confirmed = request.method == "POST"  # only our own confirmation form posts (CSRF-protected)
    if operator is None:
        return _finish_logout(end_request.redirect_uri)
    if confirmed or (claims is not None and claims.get("sid") == session.get(SID_KEY)):
        _end_opauth_session(operator)
        return _finish_logout(end_request.redirect_uri)
    fields = {k: v for k, v in request.args.items()
              if k in ("id_token_hint", "post_logout_redirect_uri", "state", "client_id") and len(v) < 8192}
    client = end_request.client
    return render_template("oidc/logout_confirm.html", fields=fields,
                           system=client.system if client is not None else None)
