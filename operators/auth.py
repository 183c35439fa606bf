"""Login for administrators (the bootstrap administrator until operator login arrives).

Browser sessions use Flask-Login; API clients send HTTP Basic credentials
(``operator_id@tenant_code``; the tenant defaults to the system tenant). Both
paths end in ``authenticate`` and ``requires``, the single permission check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

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
    url_for,
)
from flask_login import LoginManager, current_user, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import get_session, new_session
from operators.audit import Actor, AuditAction, record_event, record_event_separately
from operators.models import AuditResult, Operator, Tenant, TenantKind
from operators.passwords import check_policy, hash_password, verify_password
from operators.permissions import Permission, has_permission

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "ログインしてください。"

F = TypeVar("F", bound=Callable[..., Any])
SYSTEM_TENANT_CODE = "system"


class SessionUser:
    """The Flask-Login user: an operator plus the session version it was loaded with."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.is_authenticated = True
        self.is_active = operator.revoked_at is None
        self.is_anonymous = False

    def get_id(self) -> str:
        # A password change bumps session_version and so ends every other session.
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


def current_operator() -> Operator | None:
    operator = g.get("api_operator")
    if operator is not None:
        return operator  # type: ignore[no-any-return]
    if current_user.is_authenticated:
        return current_user.operator  # type: ignore[no-any-return]
    return None


def current_actor() -> Actor:
    """The audit actor of this request."""
    operator = current_operator()
    if operator is None:
        return Actor(name="anonymous", source=client_address())
    return Actor(name=operator.operator_id, tenant=operator.tenant.code, source=client_address())


def authenticate(session: Session, *, tenant_code: str, operator_id: str, password: str) -> Operator | None:
    """The operator whose credentials these are, or None; same work whether or not they exist."""
    operator = session.scalar(
        select(Operator).join(Tenant).where(Tenant.code == tenant_code, Operator.operator_id == operator_id))
    if not verify_password(operator.password_hash if operator else None, password):
        return None
    if operator is None or operator.revoked_at is not None:
        return None
    return operator


def _audit_login(session: Session, operator: Operator | None, *, tenant_code: str, operator_id: str,
                 method: str) -> None:
    actor = Actor(name=operator_id[:64], tenant=tenant_code[:20], source=client_address())
    if operator is None:
        record_event_separately(new_session, action=AuditAction.LOGIN_FAILURE, actor=actor,
                                result=AuditResult.FAILURE, detail={"method": method})
    else:
        record_event(session, action=AuditAction.LOGIN_SUCCESS, actor=actor, detail={"method": method})


def requires(permission: Permission) -> Callable[[F], F]:
    """Guard a view: API paths answer 401/403 JSON, pages redirect to login or answer 403."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            is_api = request.path.startswith("/api/")
            operator = _api_operator() if is_api else current_operator()
            if operator is None:
                if is_api:
                    response = jsonify(error="unauthorized",
                                       message="authentication required (HTTP Basic: operator_id@tenant)")
                    response.status_code = 401
                    response.headers["WWW-Authenticate"] = 'Basic realm="opauth", charset="UTF-8"'
                    return response
                return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
            if operator.must_change_password:
                if is_api:
                    return jsonify(error="password_change_required",
                                   message="change the one-time password in the web UI first"), 403
                return redirect(url_for("auth.change_password"))
            if not has_permission(operator, permission):
                record_event_separately(new_session, action=AuditAction.ACCESS_DENIED, actor=current_actor(),
                                        result=AuditResult.FAILURE, target=request.path,
                                        detail={"permission": str(permission)})
                if is_api:
                    return jsonify(error="forbidden", message="you are not allowed to do this"), 403
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


def _api_operator() -> Operator | None:
    if "api_operator" in g:
        return g.api_operator  # type: ignore[no-any-return]
    auth = request.authorization
    operator = None
    if auth is not None and auth.type == "basic" and auth.username and auth.password:
        operator_id, _, tenant_code = auth.username.partition("@")
        tenant_code = tenant_code or SYSTEM_TENANT_CODE
        session = get_session()
        operator = authenticate(session, tenant_code=tenant_code, operator_id=operator_id,
                                password=auth.password)
        if operator is None:
            _audit_login(session, None, tenant_code=tenant_code, operator_id=operator_id, method="api_basic")
    elif current_user.is_authenticated:
        operator = current_user.operator
    g.api_operator = operator
    return operator


def _tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.display_order, Tenant.code)))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """操作者用ポータルメニューログイン: tenant, operator ID, password."""
    session = get_session()
    error = None
    if request.method == "POST":
        tenant_code = request.form.get("tenant", "")[:20]
        operator_id = request.form.get("operator_id", "")[:64]
        password = request.form.get("password", "")[:256]
        operator = authenticate(session, tenant_code=tenant_code, operator_id=operator_id, password=password)
        _audit_login(session, operator, tenant_code=tenant_code, operator_id=operator_id, method="password")
        if operator is not None:
            session.commit()
            login_user(SessionUser(operator))
            if operator.must_change_password:
                return redirect(url_for("auth.change_password"))
            return redirect(url_for("ca_admin.index"))
        error = "市町村・任意団体、オペレータID又はパスワードが正しくありません。"
    tenants = _tenants(session)
    return render_template("auth/login.html", tenants=tenants, error=error,
                           selected=request.form.get("tenant", SYSTEM_TENANT_CODE)), (401 if error else 200)


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    operator = current_operator()
    if operator is not None:
        session = get_session()
        record_event(session, action=AuditAction.LOGOUT, actor=current_actor())
        session.commit()
    logout_user()
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
def change_password() -> Any:
    """Change the password; required before anything else after a one-time password."""
    operator = current_operator()
    if operator is None:
        return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
    error = None
    if request.method == "POST":
        session = get_session()
        current = request.form.get("current_password", "")
        new = request.form.get("new_password", "")
        confirm = request.form.get("confirm_password", "")
        if not verify_password(operator.password_hash, current):
            error = "現在のパスワードが正しくありません。"
        elif new != confirm:
            error = "新しいパスワードが一致しません。"
        elif new == current:
            error = "新しいパスワードは現在のものと異なる必要があります。"
        else:
            error = check_policy(new, operator_id=operator.operator_id)
        if error is None:
            operator = session.merge(operator)
            operator.password_hash = hash_password(new)
            operator.must_change_password = False
            operator.session_version += 1
            record_event(session, action=AuditAction.PASSWORD_CHANGED, actor=current_actor(),
                         target=f"operator:{operator.tenant.code}/{operator.operator_id}")
            session.commit()
            login_user(SessionUser(operator))
            flash("パスワードを変更しました。")
            return redirect(url_for("ca_admin.index"))
    return render_template("auth/change_password.html", error=error), (400 if error else 200)


def ensure_system_tenant(session: Session) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.code == SYSTEM_TENANT_CODE))
    if tenant is None:
        tenant = Tenant(code=SYSTEM_TENANT_CODE, name="システム管理", kind=TenantKind.SYSTEM, display_order=0)
        session.add(tenant)
        session.flush()
    return tenant


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.register_blueprint(bp)
