"""Login sessions: ID+password login, logout, password change, re-authentication, the permission guard.

Browser sessions use Flask-Login; the login id is ``pk:session_version``, so
bumping ``Operator.session_version`` (password change, lock, revocation) ends
every session of that operator. Sessions also end after an idle and an
absolute timeout. API clients send an API token (``Authorization: Bearer
opa_...``, see ``operators.login.api_tokens``: one hash lookup, no password hash per
request) or HTTP Basic credentials (``operator_id@tenant_code``; the tenant
defaults to the system tenant), which go through the same lock and throttle
rules. Both paths end in ``requires``, the
single permission check. The rules themselves live in
``operators.login.service``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from flask_login import LoginManager, current_user, login_user, logout_user
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from db import get_session, new_session
from kernel.audit import Actor, AuditAction, AuditResult, record_event, record_event_separately
from kernel.errors import OpauthError
from operators.login.api_tokens import REFUSAL_MESSAGES, TokenRefusal, check_bearer, permits, record_refusal
from operators.login.models import LoginMethod
from operators.login.service import (
    LoginRefusal,
    LoginSettings,
    is_throttled,
    note_source_failure,
    password_change_required,
    password_login,
    verify_current_password,
)
from operators.login.service import change_password as change_password_service
from operators.models import AuthMethod, Operator, Tenant, TenantKind
from operators.permissions import Permission

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = lazy_gettext("ログインしてください。")

F = TypeVar("F", bound=Callable[..., Any])
SYSTEM_TENANT_CODE = "system"
# One message for every refusal, so the answer does not reveal whether the operator exists.
LOGIN_FAILED = lazy_gettext("市町村・任意団体、オペレータID又は認証情報が正しくないか、現在ログインできません。")
THROTTLED = lazy_gettext("ログインの失敗が多すぎます。しばらくしてからやり直してください。")


class SessionUser:
    """The Flask-Login user: an operator plus the session version it was loaded with."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.is_authenticated = True
        self.is_active = operator.revoked_at is None
        self.is_anonymous = False

    def get_id(self) -> str:
        # A password change, lock or revocation bumps session_version and so ends every session.
        return f"{self.operator.id}:{self.operator.session_version}"


@login_manager.user_loader
def _load_user(user_id: str) -> SessionUser | None:
    try:
        pk, version = (int(part) for part in user_id.split(":"))
    except ValueError:
        return None
    operator = get_session().get(Operator, pk)
    if operator is None or operator.session_version != version or operator.revoked_at is not None:
        return None
    return SessionUser(operator)


def client_address() -> str:
    return request.remote_addr or ""


def login_settings() -> LoginSettings:
    return LoginSettings.from_config(current_app.config)


def session_operator() -> Operator | None:
    """The operator logged in with the browser's session; None, too, in an app without sessions (API tokens)."""
    if getattr(current_app, "login_manager", None) is None or not current_user.is_authenticated:
        return None
    return current_user.operator  # type: ignore[no-any-return]


def current_operator() -> Operator | None:
    operator = g.get("api_operator")
    if operator is not None:
        return operator  # type: ignore[no-any-return]
    return session_operator()


def may(permission: Permission) -> bool:
    """Whether this request's caller may also do ``permission`` (for a view guarded by another one): the
    operator's role grants it and, for a call with an API token, the token's scopes hold it."""
    operator = current_operator()
    token = g.get("api_token") if request.path.startswith("/api/") else None
    return operator is not None and permits(operator, token, permission)


def current_actor() -> Actor:
    """The audit actor of this request."""
    operator = current_operator()
    if operator is None:
        return Actor(name="anonymous", source=client_address())
    token = g.get("api_token")
    source = client_address() if token is None else f"{client_address()} api_token:{token.id}"[:64]
    return Actor(name=operator.operator_id, tenant=operator.tenant.code, source=source)


def attempt_actor(*, tenant_code: str, operator_id: str) -> Actor:
    """The audit actor of a login attempt: who it claims to be, from where."""
    return Actor(name=operator_id[:64] or "anonymous", tenant=tenant_code[:20], source=client_address())


def form_identity() -> tuple[str, str, Actor]:
    """The tenant and operator ID a login form names, and the audit actor of that attempt."""
    tenant_code = request.form.get("tenant", "")[:20]
    operator_id = request.form.get("operator_id", "")[:64]
    return tenant_code, operator_id, attempt_actor(tenant_code=tenant_code, operator_id=operator_id)


def authenticate(db_session: Session, *, tenant_code: str, operator_id: str, password: str) -> Operator | None:
    """The operator whose credentials these are, or None (lock and throttle apply; caller commits)."""
    result = password_login(db_session, tenant_code=tenant_code, operator_id=operator_id, password=password,
                            source=client_address(), settings=login_settings(),
                            actor=attempt_actor(tenant_code=tenant_code, operator_id=operator_id))
    return result.operator if result.ok else None


def start_session(operator: Operator, *, method: LoginMethod) -> None:
    """Log ``operator`` in with a fresh session (nothing from before the login survives)."""
    session.clear()
    login_user(SessionUser(operator))
    now = int(time.time())
    session["auth_at"] = now
    session["seen_at"] = now
    session["login_method"] = str(method)


def mark_reauthenticated() -> None:
    session["auth_at"] = int(time.time())


def is_recently_authenticated() -> bool:
    """True when the browser session logged in or re-authenticated within REAUTH_MINUTES."""
    age = recent_auth_age()
    return age is not None and age <= int(current_app.config["REAUTH_MINUTES"]) * 60


def _session_expired() -> str | None:
    """Why the current browser session has ended (idle or absolute timeout), or None."""
    now = int(time.time())
    auth_at, seen_at = session.get("auth_at"), session.get("seen_at")
    if not isinstance(auth_at, int) or not isinstance(seen_at, int):
        return "missing"
    if now - seen_at > int(current_app.config["SESSION_IDLE_MINUTES"]) * 60:
        return "idle"
    if now - auth_at > int(current_app.config["SESSION_ABSOLUTE_MINUTES"]) * 60:
        return "absolute"
    return None


def _enforce_session_timeouts() -> Any:
    if request.endpoint == "static" or not current_user.is_authenticated:
        return None
    reason = _session_expired()
    if reason is None:
        session["seen_at"] = int(time.time())
        return None
    operator: Operator = current_user.operator
    record_event_separately(new_session, action=AuditAction.SESSION_EXPIRED,
                            actor=Actor(name=operator.operator_id, tenant=operator.tenant.code,
                                        source=client_address()),
                            detail={"reason": reason})
    logout_user()
    session.clear()
    if request.path.startswith("/api/"):
        return None  # the API authenticates each request itself
    flash(_("一定時間が経過したため、ログアウトしました。もう一度ログインしてください。"))
    return redirect(url_for("auth.login"))


def recent_auth_age() -> int | None:
    """Seconds since the browser session's login or last re-authentication, or None."""
    auth_at = session.get("auth_at")
    return int(time.time()) - auth_at if isinstance(auth_at, int) else None


def safe_next(target: str | None) -> str | None:
    """``target`` as a path on this site if it is one, else None (no open redirects)."""
    if not target or "\\" in target or any(ord(ch) < 0x20 for ch in target):
        return None  # browsers read "/\\host" as "//host"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        if parts.netloc == request.host and parts.path.startswith("/") and not parts.path.startswith("//"):
            return parts.path + (f"?{parts.query}" if parts.query else "")
        return None
    return target


def requires_recent_auth(view: F) -> F:
    """Guard a sensitive administrator view: the login or a re-authentication must be recent.

    Otherwise the browser is sent to the re-authentication page and back (a POST goes back to the
    page it came from). API calls authenticate on every request and pass.
    """

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if request.path.startswith("/api/"):
            return view(*args, **kwargs)
        if not is_recently_authenticated():
            back = request.full_path.rstrip("?") if request.method == "GET" else safe_next(request.referrer)
            return redirect(url_for("auth.reauth", next=back or None))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def requires(permission: Permission) -> Callable[[F], F]:
    """Guard a view: API paths answer 401/403 JSON, pages redirect to login or answer 403."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            is_api = request.path.startswith("/api/")
            if is_api:
                try:
                    operator = _api_operator()
                except _ApiThrottled:
                    return jsonify(error="throttled", message=str(THROTTLED)), 429
                except _TokenRefused as refused:
                    response = jsonify(error="invalid_token", reason=str(refused.refusal),
                                       message=str(REFUSAL_MESSAGES[refused.refusal]))
                    response.status_code = 401
                    response.headers["WWW-Authenticate"] = 'Bearer realm="opauth", error="invalid_token"'
                    return response
            else:
                operator = current_operator()
            if operator is None:
                if is_api:
                    response = jsonify(error="unauthorized", message=_(
                        "認証が必要です(Authorization: Bearer opa_... 又は HTTP Basic: 操作者ID@市町村コード)。"))
                    response.status_code = 401
                    response.headers["WWW-Authenticate"] = 'Basic realm="opauth", charset="UTF-8"'
                    return response
                return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
            if password_change_required(operator):
                if is_api:
                    return jsonify(error="password_change_required", message=_(
                        "先に初期パスワードを変更してください(画面、又は POST /api/v1/me/password)。")), 403
                return redirect(url_for("auth.change_password"))
            token = g.get("api_token") if is_api else None
            if not permits(operator, token, permission):
                record_event_separately(new_session, action=AuditAction.ACCESS_DENIED, actor=current_actor(),
                                        result=AuditResult.FAILURE, target=request.path,
                                        detail={"permission": str(permission)})
                if is_api:
                    return jsonify(error="forbidden", permission=str(permission), message=_(
                        "この操作の権限 (%(permission)s) がありません。", permission=str(permission))), 403
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


def login_required_page(view: F) -> F:
    """Guard a page that any logged-in operator may see (after the forced password change)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        operator = current_operator()
        if operator is None:
            return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
        if password_change_required(operator):
            return redirect(url_for("auth.change_password"))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


class _ApiThrottled(Exception):
    pass


def _api_operator() -> Operator | None:
    if "api_operator" in g:
        return g.api_operator  # type: ignore[no-any-return]
    auth = request.authorization
    operator = None
    if auth is not None and auth.type == "bearer":
        operator = _bearer_operator(auth.token or "")
    elif auth is not None and auth.type == "basic" and auth.username and auth.password:
        operator_id, _sep, tenant_code = auth.username.partition("@")
        tenant_code = tenant_code or SYSTEM_TENANT_CODE
        db_session = get_session()
        result = password_login(db_session, tenant_code=tenant_code[:20], operator_id=operator_id[:64],
                                password=auth.password[:256], source=client_address(),
                                settings=login_settings(), method=LoginMethod.API_BASIC,
                                actor=attempt_actor(tenant_code=tenant_code, operator_id=operator_id))
        db_session.commit()  # the attempt's audit entry and counters, before the view's own work
        if result.refusal is LoginRefusal.THROTTLED:
            raise _ApiThrottled()
        operator = result.operator
    else:
        operator = session_operator()
    g.api_operator = operator
    return operator


class _TokenRefused(Exception):
    def __init__(self, refusal: TokenRefusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


def _bearer_operator(secret: str) -> Operator:
    """The owner of a valid API token (``Authorization: Bearer opa_...``); ``_TokenRefused`` otherwise.

    A valid token costs one lookup. Refusals are audited and counted against the source address like
    failed logins; a throttled address is answered 429 without further entries.
    """
    db_session = get_session()
    check = check_bearer(db_session, secret=secret[:200], source=client_address())
    if check.refusal is not None:
        if check.refusal is not TokenRefusal.OWNER_DISABLED:
            if is_throttled(db_session, source=client_address(), settings=login_settings()):
                raise _ApiThrottled()
            note_source_failure(db_session, source=client_address(), settings=login_settings())
        record_refusal(db_session, check, source=client_address())
        db_session.commit()
        raise _TokenRefused(check.refusal)
    if check.wrote:
        db_session.commit()  # the token's last use, whatever the view does
    assert check.token is not None
    g.api_token = check.token
    return check.token.operator


# Built once: every login page shows the list.
_LOGIN_TENANTS = select(Tenant.code, Tenant.name).order_by(Tenant.display_order, Tenant.code)


def tenants(db_session: Session) -> Sequence[Row[str, str]]:
    """Tenants in display order (the login screens' 市町村・任意団体 list): code and name, read as rows."""
    return db_session.execute(_LOGIN_TENANTS).all()


def after_login_url(operator: Operator) -> str:
    if password_change_required(operator):
        return url_for("auth.change_password")
    return url_for("top.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """操作者用ポータルメニューログイン: tenant, operator ID, password."""
    db_session = get_session()
    error = None
    status = 200
    if request.method == "POST":
        tenant_code, operator_id, actor = form_identity()
        password = request.form.get("password", "")[:256]
        result = password_login(db_session, tenant_code=tenant_code, operator_id=operator_id, password=password,
                                source=client_address(), settings=login_settings(), actor=actor)
        db_session.commit()
        if result.ok and result.operator is not None:
            start_session(result.operator, method=LoginMethod.PASSWORD)
            return redirect(after_login_url(result.operator))
        if result.refusal is LoginRefusal.THROTTLED:
            error, status = str(THROTTLED), 429
        else:
            error, status = result.explanation or str(LOGIN_FAILED), 401
    return render_template("auth/login.html", tenants=tenants(db_session), error=error,
                           operator_id=request.form.get("operator_id", "")[:64],
                           selected=request.form.get("tenant", request.args.get("tenant", SYSTEM_TENANT_CODE))
                           ), status


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    operator = current_operator()
    if operator is not None:
        db_session = get_session()
        record_event(db_session, action=AuditAction.LOGOUT, actor=current_actor())
        db_session.commit()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
def change_password() -> Any:
    """Change the password; required before anything else after a one-time password."""
    operator = current_operator()
    if operator is None:
        return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
    if operator.auth_method is AuthMethod.BIOMETRIC:
        abort(404)  # biometric-mode operators have no password to change
    error = None
    if request.method == "POST":
        db_session = get_session()
        operator = db_session.merge(operator)
        try:
            change_password_service(db_session, operator=operator,
                                    current=request.form.get("current_password", "")[:1024],
                                    new=request.form.get("new_password", "")[:1024],
                                    confirm=request.form.get("confirm_password", "")[:1024],
                                    settings=login_settings(), actor=current_actor())
        except OpauthError as exc:
            db_session.rollback()
            error = exc.message
        else:
            db_session.commit()
            auth_at = session.get("auth_at")
            start_session(operator, method=LoginMethod.PASSWORD)
            if isinstance(auth_at, int):
                session["auth_at"] = auth_at  # a password change is not a new login for the timeouts
            flash(_("パスワードを変更しました。"))
            return redirect(url_for("top.index"))
    return render_template("auth/change_password.html", error=error,
                           min_length=current_app.config["PASSWORD_MIN_LENGTH"]), (400 if error else 200)


@bp.route("/reauth", methods=["GET", "POST"])
def reauth() -> Any:
    """再認証: confirm who is at the terminal before a sensitive administrator action."""
    operator = current_operator()
    if operator is None:
        return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
    next_url = safe_next(request.values.get("next")) or url_for("top.index")
    error = None
    if request.method == "POST" and operator.auth_method is AuthMethod.PASSWORD:
        db_session = get_session()
        operator = db_session.merge(operator)
        version_before = operator.session_version
        ok = verify_current_password(db_session, operator=operator,
                                     password=request.form.get("password", "")[:256],
                                     settings=login_settings(), actor=current_actor(),
                                     method=LoginMethod.REAUTH_PASSWORD)
        db_session.commit()
        if ok:
            mark_reauthenticated()
            return redirect(next_url)
        if operator.session_version != version_before:
            logout_user()  # the failure locked the operator: every session has ended
            session.clear()
            return redirect(url_for("auth.login"))
        error = _("パスワードが正しくありません。")
    return render_template("auth/reauth.html", error=error, next_url=next_url,
                           biometric=operator.auth_method is AuthMethod.BIOMETRIC), (401 if error else 200)


def ensure_system_tenant(db_session: Session) -> Tenant:
    tenant = db_session.scalar(select(Tenant).where(Tenant.code == SYSTEM_TENANT_CODE))
    if tenant is None:
        tenant = Tenant(code=SYSTEM_TENANT_CODE, name="システム管理", kind=TenantKind.SYSTEM, display_order=0)
        db_session.add(tenant)
        db_session.flush()
    return tenant


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.register_blueprint(bp)
    app.before_request(_enforce_session_timeouts)
