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
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from apdl import cardstatus, db, i18n, registry
from apdl.errors import ApdlError, CardError, CardUnavailable, InvalidInput
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
    from apdl.views import (
        agent,
        api,
        aps,
        cards,
        diagnosis,
        main,
        presets,
        report,
        residents,
        status,
        tenants,
        terminals,
    )

    for blueprint in (auth.bp, main.bp, aps.bp, tenants.bp, presets.bp, residents.bp, cards.bp, diagnosis.bp,
                      report.bp, agent.bp, terminals.bp, status.bp, api.bp):
        app.register_blueprint(blueprint)
    csrf.exempt(auth.backchannel_logout)  # a server-to-server POST carrying a signed logout token
    for view in (agent.agent_pair, agent.agent_poll, agent.agent_respond):
        csrf.exempt(view)  # the card agent: no browser, no cookie; its client certificate authenticates it
    csrf.exempt(api.bp)  # business systems: no browser, no cookie; their client certificate authenticates them
    app.jinja_env.globals["current_operator"] = auth.current_operator
    app.jinja_env.globals["card_status_of"] = _card_status_for_the_operator
    app.jinja_env.globals["status_labels"] = cardstatus.STATUS_LABELS
    app.jinja_env.globals["card_refusal"] = cardstatus.refusal  # the card operations' own refusal decision
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


def _card_status_for_the_operator(card_identifier: str) -> cardstatus.StatusView:
    """A card's status as the logged-in operator's 利用機関 may see it (templates: ``card_status_of``)."""
    from apdl.auth import current_operator
    from apdl.tenancy import scope_for

    operator = current_operator()
    if operator is None:
        raise RuntimeError("card_status_of needs a logged-in operator")
    session = db.get_session()
    return cardstatus.status_of(session, card_identifier, viewer=scope_for(session, operator).viewer)


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
        rows = f"{result.rows} {'row' if result.rows == 1 else 'rows'}"  # the command speaks English only
        if result.repeated:
            click.echo(f"batch {result.batch_id} was already imported ({rows}): nothing changed")
        else:
            click.echo(f"batch {result.batch_id} imported: {rows}, {result.changed} changed")

    group.add_command(_terminal_cli(app))
    app.cli.add_command(group)


def _terminal_cli(app: Flask) -> click.Group:
    """``flask --app apdl.app apdl terminal ...``: 端末管理 from the command line (as the admin tenant's tool)."""
    from cryptography import x509

    from apdl import terminal_registry
    from apdl.models import RegisteredTerminal

    terminal = click.Group("terminal", help="端末管理: the terminals whose card agents may connect.")

    def run(work: Any) -> Any:
        actor = f"cli:{getpass.getuser()}"
        with app.test_request_context():  # messages in the default locale (Japanese)
            session = db.get_session()
            try:
                result = work(session, actor)
                session.commit()
                return result
            except ApdlError as exc:
                session.rollback()
                click.echo(str(exc), err=True)
                raise click.exceptions.Exit(1) from exc

    def one(session: Session, tenant: str, name: str) -> RegisteredTerminal:
        row = session.scalars(select(RegisteredTerminal).where(RegisteredTerminal.tenant_code == tenant,
                                                               RegisteredTerminal.name == name)).first()
        if row is None:
            raise InvalidInput(f"no terminal {name!r} is registered to tenant {tenant!r}")
        return row

    @terminal.command("register")
    @click.option("--tenant", required=True, help="The 利用機関's code (the terminal belongs to it).")
    @click.option("--name", default="", help="端末名 (OU=terminal <name>); with --cert, taken from the certificate.")
    @click.option("--organization", default="", help="O= of its certificate (the tenant's name at opauth); "
                                                     "with --cert, taken from the certificate.")
    @click.option("--cert", "cert_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="The terminal's SSL通信証明書 (PEM): its subject gives the name and organization.")
    @click.option("--pin/--no-pin", default=False, help="Accept only the certificate given with --cert.")
    @click.option("--pin-fingerprint", default="", help="Accept only the certificate with this SHA-256 fingerprint.")
    def register(tenant: str, name: str, organization: str, cert_path: Path | None, pin: bool,
                 pin_fingerprint: str) -> None:
        """Register a terminal of a tenant (enabled)."""
        if not registry.TENANT_CODE.match(tenant):
            raise click.BadParameter("not a tenant code", param_hint="--tenant")
        if cert_path is not None:
            from apdl import clientcert

            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            subject = terminal_registry.subject_of(cert)
            if subject is None:
                raise click.BadParameter("not a terminal's certificate (OU=terminal <name>)", param_hint="--cert")
            organization, name = organization or subject[0], name or subject[1]
            if pin:
                pin_fingerprint = clientcert.fingerprint(cert)
        elif pin:
            raise click.BadParameter("--pin needs --cert", param_hint="--pin")
        form = {"name": name, "organization": organization, "pinned_fingerprint": pin_fingerprint}
        row = run(lambda session, actor: terminal_registry.register(session, form, tenant_code=tenant, actor=actor))
        click.echo(f"terminal {row.name} of {tenant} registered (O={row.organization}"
                   f"{', pinned' if row.pinned_fingerprint else ''})")

    def switch(verb: str, enabled: bool, doc: str) -> click.Command:
        @click.option("--tenant", required=True)
        @click.option("--name", required=True)
        def command(tenant: str, name: str) -> None:
            run(lambda session, actor: terminal_registry.set_enabled(session, one(session, tenant, name), enabled,
                                                                     actor=actor))
            click.echo(f"terminal {name} of {tenant} {verb}d")

        return click.command(verb, help=doc)(command)

    terminal.add_command(switch("disable", False, "Disable a terminal: its agent is refused from its next "
                                                  "request on, its pairings end."))
    terminal.add_command(switch("enable", True, "Enable a disabled terminal again."))

    @terminal.command("pin")
    @click.option("--tenant", required=True)
    @click.option("--name", required=True)
    @click.option("--fingerprint", default="", help="SHA-256 of the certificate to accept; empty: any of its subject.")
    def pin_command(tenant: str, name: str, fingerprint: str) -> None:
        """Pin a terminal to one certificate (a renewal of a pinned terminal), or unpin it."""
        run(lambda session, actor: terminal_registry.set_pin(session, one(session, tenant, name), fingerprint,
                                                             actor=actor))
        click.echo(f"terminal {name} of {tenant} {'pinned' if fingerprint.strip() else 'unpinned'}")

    @terminal.command("list")
    @click.option("--tenant", default="", help="Only this tenant's terminals.")
    def list_command(tenant: str) -> None:
        """The registered terminals (tenant, name, O, state, pin)."""
        def rows(session: Any, _actor: str) -> list[RegisteredTerminal]:
            query = select(RegisteredTerminal).order_by(RegisteredTerminal.tenant_code, RegisteredTerminal.name)
            if tenant:
                query = query.where(RegisteredTerminal.tenant_code == tenant)
            return list(session.scalars(query))
        for row in run(rows):
            state = "enabled" if row.enabled else "disabled"
            click.echo(f"{row.tenant_code}\t{row.name}\t{row.organization}\t{state}\t{row.pinned_fingerprint or '-'}")

    return terminal
