"""opauth: operator authentication system and certificate authority (application factory)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

import db
import i18n
from ca.errors import OpauthError
from config import load_settings

csrf = CSRFProtect()

MESSAGES_JA = {
    400: "リクエストが正しくありません。",
    401: "認証が必要です。",
    403: "この操作を行う権限がありません。",
    404: "指定されたものは見つかりません。",
    405: "このメソッドは使用できません。",
    413: "アップロードが大きすぎます。",
    500: "内部エラーが発生しました。",
}


def _secret_key(instance: Path, configured: str) -> str:
    if configured:
        return configured
    path = instance / "secret_key"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings (defaults < OPAUTH_* env < ``config``), database, blueprints, CLI."""
    settings = load_settings(config)
    app = Flask(__name__, instance_path=str(Path(settings["INSTANCE_DIR"]).resolve()),
                template_folder="templates", static_folder="static")
    app.config.update(settings)
    app.config.update(
        SECRET_KEY=_secret_key(Path(settings["INSTANCE_DIR"]), settings["SECRET_KEY"]),
        MAX_CONTENT_LENGTH=settings["MAX_UPLOAD_BYTES"],
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings["SESSION_COOKIE_SECURE"],
        REMEMBER_COOKIE_SECURE=settings["SESSION_COOKIE_SECURE"],
        WTF_CSRF_TIME_LIMIT=None,
        JSON_AS_ASCII=False,
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    db.init_app(app)
    csrf.init_app(app)

    from bio import views as bio_views
    from ca import api, cli, mtls, pki_views, tls_api, tls_cli, tls_views, views
    from oidc import admin_views as oidc_admin_views
    from oidc import api as oidc_api
    from oidc import cli as oidc_cli
    from oidc import views as oidc_views
    from operators import api as operators_api
    from operators import auth, login_admin, login_top, tenant_views
    from operators import cli as operators_cli
    from operators import views as operators_views

    i18n.init_app(app)
    auth.init_app(app)  # login, sessions and their timeouts
    mtls.init_app(app)  # certificate-bound sessions end when the certificate does
    login_admin.init_app(app)
    bio_views.init_app(app)
    oidc_views.init_app(app)  # business login: the OpenID provider
    for blueprint in (login_top.bp, views.bp, pki_views.bp, api.bp, operators_views.bp, tenant_views.bp,
                      operators_api.bp, tls_api.bp, tls_views.bp, oidc_api.bp,
                      oidc_admin_views.bp):
        app.register_blueprint(blueprint)
    # Machine clients authenticate every request (HTTP Basic or a client certificate): no ambient cookies.
    for blueprint in (api.bp, operators_api.bp, pki_views.bp, tls_api.bp, oidc_api.bp, oidc_views.bp):
        csrf.exempt(blueprint)
    app.add_template_global(tls_views.expiry_warnings)
    for module in (cli, operators_cli, tls_cli, oidc_cli):
        module.init_app(app)
    _register_error_handlers(app)

    @app.after_request
    def _security_headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        # same-origin, not no-referrer: Flask-WTF checks the Referer of HTTPS form posts (WTF_CSRF_SSL_STRICT).
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    return app


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/pki/")


def _error(status: int, code: str, message: str) -> Any:
    if _wants_json():
        return jsonify(error=code, message=message), status
    return render_template("error.html", status=status, message=message), status


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(OpauthError)
    def _opauth_error(exc: OpauthError) -> Any:
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError) -> Any:
        return _error(400, "csrf", "フォームの有効期限が切れたか、不正な送信です。もう一度やり直してください。")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        if status == 413:
            limit = app.config["MAX_CONTENT_LENGTH"]
            return _error(413, "too_large", f"the upload is too large (at most {limit} bytes)")
        message = MESSAGES_JA.get(status, exc.description or "")
        if _wants_json():
            message = exc.description or message
        return _error(status, exc.name.lower().replace(" ", "_"), message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        app.logger.exception("unhandled error")
        return _error(500, "internal_error", MESSAGES_JA[500])
