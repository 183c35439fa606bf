"""opauth: operator authentication system and certificate authority (application factory)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, cast

from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from flask_babel import gettext, lazy_gettext
from flask_wtf.csrf import CSRFError, CSRFProtect
from markupsafe import escape
from sqlalchemy.exc import DataError, IntegrityError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import db
from config import environment_values, load_settings
from config import instance as instance_settings
from kernel import i18n, lean_app, webinput
from kernel.errors import OpauthError

csrf = CSRFProtect()

# HTTP errors raised by Flask/Werkzeug itself; their English descriptions are not shown.
HTTP_MESSAGES = {
    400: lazy_gettext("リクエストが正しくありません。"),
    401: lazy_gettext("認証が必要です。"),
    403: lazy_gettext("この操作を行う権限がありません。"),
    404: lazy_gettext("指定されたものは見つかりません。"),
    405: lazy_gettext("このメソッドは使用できません。"),
    413: lazy_gettext("アップロードが大きすぎます。"),
    429: lazy_gettext("リクエストが多すぎます。しばらく待ってからやり直してください。"),
    500: lazy_gettext("内部エラーが発生しました。"),
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
    # First: the bounded <id:...> converter must exist before any blueprint's rules, and the input guard
    # must run before any other before_request function reads the request.
    webinput.init_app(app)
    db.init_app(app)
    # The instance's stored settings (環境基本設定) apply to this process too, before any other hook runs.
    instance_settings.init_app(app, environment_values(config))
    csrf.init_app(app)

    import bootstrap
    from bio import views as bio_views
    from ca import labels
    from certs import api, cli, pki_app, pki_views, tls_api, tls_cli, tls_views, views
    from oidc import admin_views as oidc_admin_views
    from oidc import api as oidc_api
    from oidc import cli as oidc_cli
    from oidc import views as oidc_views
    from operators import api as operators_api
    from operators import cli as operators_cli
    from operators import settings_views, tenant_views
    from operators import views as operators_views
    from operators.login import admin as login_admin
    from operators.login import api_token_views, auth, mtls
    from operators.login import top as login_top
    from operators.web import refuse_ambient_api_calls

    i18n.init_app(app)
    auth.init_app(app)  # login, sessions and their timeouts
    mtls.init_app(app)  # certificate-bound sessions end when the certificate does
    login_admin.init_app(app)
    api_token_views.init_app(app)  # API トークン: screen, API, CLI
    settings_views.init_app(app)  # 環境基本設定: screen, API, CLI
    bio_views.init_app(app)
    oidc_views.init_app(app)  # business login: the OpenID provider
    for blueprint in (login_top.bp, views.bp, pki_views.bp, api.bp, operators_views.bp, tenant_views.bp,
                      operators_api.bp, tls_api.bp, tls_views.bp, oidc_api.bp,
                      oidc_admin_views.bp):
        app.register_blueprint(blueprint)
    # Machine clients authenticate every request (HTTP Basic or a client certificate), so the form token is not
    # asked of them; an API call that rides on the browser's session cookie must still send X-CSRFToken, and
    # one a browser makes for another site's page is refused (operators.web.refuse_ambient_api_calls).
    for blueprint in (api.bp, operators_api.bp, pki_views.bp, tls_api.bp, oidc_api.bp, oidc_views.bp):
        csrf.exempt(blueprint)
    app.before_request(refuse_ambient_api_calls)
    app.add_template_global(tls_views.expiry_warnings)
    app.add_template_global(labels.status_label)
    app.add_template_global(labels.reason_label)
    app.add_template_global(labels.profile_label)
    for module in (bootstrap, cli, operators_cli, tls_cli, oidc_cli):
        module.init_app(app)
    _register_error_handlers(app)

    app.after_request(security_headers)
    # /pki/ (CA certificates, CRLs, OCSP) is served by a lean app of its own: no cookie session, login hooks
    # or per-request settings probe on the path relying parties hit on every certificate check.
    pki_app.mount(app, error_handlers=_register_error_handlers, after_request=security_headers)
    # Likewise the OIDC endpoints business systems call (token, userinfo, discovery, JWKS, revoke, introspect).
    oidc_views.mount(app, error_handlers=_register_error_handlers, after_request=security_headers)
    # And /api/ calls that carry an API token (Authorization: Bearer): scripts and business servers.
    _mount_bearer_api(app)
    # Outermost, whichever app answered: a body left unread (a 413) is taken off the socket before the answer.
    app.wsgi_app = webinput.DrainUnreadBody(app.wsgi_app)  # type: ignore[method-assign]
    return app


API_PREFIX = "/api/"
# A settings change made in another process reaches API calls with a token within this many seconds.
API_SETTINGS_PROBE_SECONDS = 1.0


def _mount_bearer_api(main: Flask) -> Flask:
    """Serve /api/ calls with a bearer token from a lean app with every API blueprint of ``main``.

    The token authenticates each call (validity, expiry, revocation and the owner's lock read from the
    database every time), so the lean app leaves out the cookie session, flask-login and its timeouts, the
    certificate-bound session check, the OIDC login resume, the form-token check and the per-request probe of
    the stored settings (``kernel.lean_app``). It keeps the refusal of calls a browser marks as cross-site.
    HTTP Basic and session-cookie calls stay on the main app.
    """
    from operators.login.mtls import behind_trusted_proxies
    from operators.web import refuse_ambient_api_calls

    served = {rule.endpoint.rpartition(".")[0] for rule in main.url_map.iter_rules()
              if rule.rule.startswith(API_PREFIX)}
    machine = lean_app.lean_app(main, blueprints=[cast(Blueprint, main.blueprints[name]) for name in sorted(served)],
                                probe=lean_app.settings_probe(main, lambda: API_SETTINGS_PROBE_SECONDS),
                                error_handlers=_register_error_handlers, after_request=security_headers)
    machine.before_request(refuse_ambient_api_calls)
    strays = [rule.rule for rule in machine.url_map.iter_rules() if not rule.rule.startswith(API_PREFIX)]
    if strays:  # a blueprint mixing pages with API routes would serve its pages without the login hooks
        raise RuntimeError(f"API blueprints must serve only {API_PREFIX} paths: {strays}")
    main.wsgi_app = lean_app.Dispatch(main.wsgi_app, behind_trusted_proxies(main, machine.wsgi_app),  # type: ignore[method-assign]
                                      lean_app.bearer_calls_under(API_PREFIX))
    main.extensions["opauth.bearer_api_app"] = machine
    return machine


def security_headers(response: Any) -> Any:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    # same-origin, not no-referrer: Flask-WTF checks the Referer of HTTPS form posts (WTF_CSRF_SSL_STRICT).
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/pki/") or request.is_json


def _oauth_code(status: int) -> str:
    """The RFC 6749 5.2 error code for an answer the protocol code did not make (the request guard's, say)."""
    return {401: "invalid_client"}.get(status, "server_error" if status >= 500 else "invalid_request")


def _error(status: int, code: str, message: str) -> Any:
    """One error answer: JSON ``{error: stable code, message: words in the request's language}`` or a page.

    A lean app answers JSON whatever the path (it has no pages); the OIDC endpoints' app in RFC 6749's form.
    """
    answer = current_app.extensions.get(lean_app.ERROR_FORM)
    if answer == "oauth":
        return jsonify(error=_oauth_code(status), error_description=message), status
    if answer == "json" or _wants_json():
        return jsonify(error=code, message=message), status
    try:
        # The page reads the logged-in operator: a transaction the error left broken must not fail it again.
        db.get_session().rollback()
        return render_template("error.html", status=status, message=message), status
    except Exception:
        current_app.logger.exception("error page failed; answering with the plain page")
        body = (f"<!doctype html><html lang=ja><meta charset=utf-8><title>{status}</title>"
                f"<h1>{status}</h1><p role=alert>{escape(message)}</p></html>")
        return body, status, {"Content-Type": "text/html; charset=utf-8"}


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(OpauthError)
    def _opauth_error(exc: OpauthError) -> Any:
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError) -> Any:
        # Say which check failed: a script without a Referer needs different advice from a stale page.
        reasons = {
            "The referrer header is missing.": (
                "csrf_referrer_missing",
                gettext("Referer ヘッダがありません。HTTPS のフォーム送信には、このサイトのページを示す"
                        " Referer ヘッダが必要です（スクリプトからは送信元ページの URL を"
                        " Referer に付けてください）。")),
            "The referrer does not match the host.": (
                "csrf_referrer_mismatch",
                gettext("Referer ヘッダがこのサイトのものではありません。他のサイトからの送信は受け付けません。")),
            "The CSRF token is missing.": (
                "csrf_token_missing",
                gettext("フォームの確認用トークン (csrf_token) がありません。画面を開き直してから送信してください。")),
            "The CSRF session token is missing.": (
                "csrf_session_missing",
                gettext("セッションがないため送信を確認できません（Cookie が送られていないか、"
                        "セッションが終了しました）。画面を開き直してから送信してください。")),
            "The CSRF token has expired.": (
                "csrf_token_expired",
                gettext("フォームの有効期限が切れました。画面を開き直してから送信してください。")),
        }
        code, message = reasons.get(exc.description or "", (
            "csrf_token_invalid",
            gettext("フォームの確認用トークンが正しくありません（別のセッションの画面からの送信です）。"
                    "画面を開き直してから送信してください。")))
        return _error(400, code, message)

    @app.errorhandler(IntegrityError)
    def _integrity_error(exc: IntegrityError) -> Any:
        # Every unique constraint (two requests creating the same thing at once) ends here as 409, never 500.
        db.get_session().rollback()
        app.logger.warning("unique or foreign key constraint refused a write: %s", str(exc.orig)[:300])
        return _error(409, "conflict", gettext("同じものが既に登録されています(同時に登録された可能性があります)。"
                                         "内容を確認してやり直してください。"))

    @app.errorhandler(DataError)
    def _data_error(exc: DataError) -> Any:
        # A value the database refuses (out of range, NUL) that validation should have caught: a 400, logged.
        db.get_session().rollback()
        app.logger.warning("database refused a value: %s", str(exc.orig)[:300])
        return _error(400, "invalid_input", str(HTTP_MESSAGES[400]))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        if status == 413:
            limit = app.config["MAX_CONTENT_LENGTH"]
            return _error(413, "too_large",
                          gettext("アップロードが大きすぎます（最大 %(limit)s バイト）。", limit=limit))
        known = HTTP_MESSAGES.get(status)
        message = str(known) if known is not None else (exc.description or "")
        answer = _error(status, exc.name.lower().replace(" ", "_"), message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:  # a 405 names what the URL takes (RFC 9110)
            return (*answer, {"Allow": ", ".join(exc.valid_methods)})
        return answer

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        app.logger.exception("unhandled error")
        return _error(500, "internal_error", str(HTTP_MESSAGES[500]))
