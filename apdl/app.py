"""The AP download module (カードAPダウンロードモジュール) as its own Flask application.

``flask --app apdl.app`` for commands (``flask --app apdl.app apdl migrate``); gunicorn with
``--config python:apdl.gunicorn_conf``. Settings come from ``APDL_*`` variables (apdl/settings.py).
"""

from __future__ import annotations

import getpass
import secrets
from pathlib import Path
from typing import Any

import click
from flask import Flask, jsonify, render_template, request
from flask_babel import lazy_gettext
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from apdl import cardstatus, db, i18n
from apdl.errors import ApdlError, CardError, CardUnavailable
from apdl.settings import load_settings

csrf = CSRFProtect()
JSON_PATHS = ("/agent/", "/api/")  # machine clients: errors as {"error": ...}

HTTP_MESSAGES = {
    400: lazy_gettext("リクエストが正しくありません。"),
    403: lazy_gettext("この操作を行う権限がありません。"),
    404: lazy_gettext("指定されたものは見つかりません。"),
    405: lazy_gettext("このメソッドは使用できません。"),
    413: lazy_gettext("リクエストが大きすぎます。"),
    500: lazy_gettext("内部エラーが発生しました。"),
}


class BoundedInt(IntegerConverter):
    """``<int:...>`` limited to the database's 32-bit ids: a larger number is a 404, not an overflow."""

    def __init__(self, url_map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)


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
    """Build the module: settings (defaults < APDL_* env < ``config``), database, i18n, blueprints."""
    settings = load_settings(config)
    instance = Path(settings["INSTANCE_DIR"]).resolve()
    app = Flask(__name__, instance_path=str(instance), template_folder="templates")
    app.url_map.converters["int"] = BoundedInt
    app.config.update(settings)
    app.config.update(SECRET_KEY=_secret_key(instance, settings["SECRET_KEY"]), MAX_CONTENT_LENGTH=1024 * 1024,
                      SESSION_COOKIE_NAME="apdl_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=settings["SESSION_COOKIE_SECURE"],
                      WTF_CSRF_TIME_LIMIT=None)
    db.init_app(app)
    i18n.init_app(app)
    csrf.init_app(app)

    from apdl import auth
    from apdl.views import agent, api, aps, cards, diagnosis, main, presets, report, residents, status, tenants

    for blueprint in (auth.bp, main.bp, aps.bp, tenants.bp, presets.bp, residents.bp, cards.bp, diagnosis.bp,
                      report.bp, agent.bp, status.bp, api.bp):
        app.register_blueprint(blueprint)
    csrf.exempt(auth.backchannel_logout)  # a server-to-server POST carrying a signed logout token
    for view in (agent.agent_pair, agent.agent_poll, agent.agent_respond):
        csrf.exempt(view)  # the card agent: no browser, no cookie; its client certificate authenticates it
    csrf.exempt(api.bp)  # business systems: no browser, no cookie; their client certificate authenticates them
    app.jinja_env.globals["current_operator"] = auth.current_operator
    app.jinja_env.globals["card_status_of"] = lambda card: cardstatus.status_of(db.get_session(), card)
    app.jinja_env.globals["status_labels"] = cardstatus.STATUS_LABELS
    _error_handlers(app)
    _cli(app)
    from apdl.diagnosis import STATUS_FEED_HOOK

    app.extensions[STATUS_FEED_HOOK] = cardstatus.diagnosis_view  # the card status feed in fault diagnosis

    @app.after_request
    def _headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app


def _error_handlers(app: Flask) -> None:
    @app.errorhandler(ApdlError)
    def _apdl_error(exc: ApdlError) -> Any:
        if request.path.startswith(JSON_PATHS):  # the card agent and business systems read JSON
            return jsonify(error=str(exc)), getattr(exc, "status", 502 if isinstance(exc, CardError) else 400)
        if isinstance(exc, CardUnavailable):
            return render_template("error.html",
                               message=lazy_gettext("カードを読み取れません。カードを確認してください。")), 503
        if isinstance(exc, CardError):
            app.logger.warning("card error: %s", exc)
            return render_template("error.html",
                               message=lazy_gettext("カードの操作に失敗しました。")), 502
        return render_template("error.html", message=str(exc)), getattr(exc, "status", 400)

    @app.errorhandler(CSRFError)
    def _csrf(_exc: CSRFError) -> Any:
        return render_template("error.html",
                               message=lazy_gettext("画面の有効期限が切れました。やり直してください。")), 400

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        code = exc.code or 500
        if request.path.startswith("/api/"):
            return jsonify(error=str(HTTP_MESSAGES.get(code, HTTP_MESSAGES[400]))), code
        return render_template("error.html", message=HTTP_MESSAGES.get(code, HTTP_MESSAGES[400])), code


def _cli(app: Flask) -> None:
    group = click.Group("apdl", help="AP download module administration.")

    @group.command("migrate")
    def migrate() -> None:
        """Bring the module's database to the newest schema (its own Alembic migrations)."""
        db.upgrade(app.config["DATABASE_URL"])
        click.echo("apdl database is up to date")

    @group.command("import-status")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--batch-id", default="", help="The batch's id (JSON files may name it as batch_id).")
    @click.option("--format", "fmt", type=click.Choice([f.value for f in cardstatus.FeedFormat]),
                  help="csv or json (default: from the file name or its first character).")
    def import_status(path: Path, batch_id: str, fmt: str | None) -> None:
        """Import one card status feed batch (カードステータス); all rows or none."""
        data = path.read_bytes()
        feed_format = cardstatus.FeedFormat(fmt) if fmt else cardstatus.format_of(path.name, data)
        actor = f"cli:{getpass.getuser()}"
        try:
            with app.test_request_context():  # messages in the default locale (Japanese); ?lang is per request
                result = cardstatus.import_feed(db.get_session(), data, fmt=feed_format, batch_id=batch_id,
                                                actor=actor, tenant_code=app.config["ADMIN_TENANT"])
        except cardstatus.FeedRejected as exc:
            click.echo(str(exc), err=True)
            for line in exc.lines():
                click.echo(line, err=True)
            if exc.total > len(exc.problems):
                click.echo(f"... {exc.total - len(exc.problems)} more", err=True)
            raise click.exceptions.Exit(1) from exc
        except ApdlError as exc:
            click.echo(str(exc), err=True)
            raise click.exceptions.Exit(1) from exc
        if result.repeated:
            click.echo(f"batch {result.batch_id} was already imported ({result.rows} rows): nothing changed")
        else:
            click.echo(f"batch {result.batch_id} imported: {result.rows} rows, {result.changed} changed")

    app.cli.add_command(group)
