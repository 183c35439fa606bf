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
from flask import Flask, abort, jsonify, render_template, request
from flask_babel import force_locale, lazy_gettext, ngettext
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from apdl import cardstatus, db, i18n, registry
from apdl.errors import ApdlError, CardError, CardUnavailable, InvalidInput
from apdl.oplog import action_label
from apdl.settings import load_settings
from apdl.tenancy import actor_label
from apdl.terminals import AgentCardUnavailable
from apdl.validation import utf8_urlencoded

csrf = CSRFProtect()
JSON_PATHS = ("/agent/", "/api/")  # machine clients: errors as {"error": ...}
MAX_URL_LENGTH = 4096  # longer request targets get the 414 page; gunicorn's own limit (8190) is above it

HTTP_MESSAGES = {
    400: lazy_gettext("リクエストが正しくありません。"),
    403: lazy_gettext("この操作を行う権限がありません。"),
    404: lazy_gettext("指定されたものは見つかりません。"),
    405: lazy_gettext("このメソッドは使用できません。"),
    413: lazy_gettext("リクエストが大きすぎます。"),
    414: lazy_gettext("URLが長すぎます。"),
    417: lazy_gettext("Expectヘッダーの要求には応じられません。"),
    431: lazy_gettext("リクエストのヘッダーが大きすぎます。"),
    500: lazy_gettext("内部エラーが発生しました。"),
    501: lazy_gettext("この転送符号化には対応していません。"),
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


def _guard_request() -> None:
    """``before_request``, ahead of the CSRF check (which reads the form): an over-long URL is 414; a query
    string or form that is not UTF-8 is 400 before anything reads it.

    werkzeug would read bad bytes in a query as U+FFFD (a search would run for something nobody typed), keep bad
    escapes in a urlencoded form as literal text ("%ED%A0%80" stored in an address) and read bad bytes in a
    multipart field as U+FFFD too.
    """
    if len(request.environ.get("RAW_URI") or request.full_path) > MAX_URL_LENGTH:
        abort(414)
    if not utf8_urlencoded(request.query_string):
        raise InvalidInput(_("クエリ文字列が正しい UTF-8 ではありません。"))
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        if request.mimetype == "application/x-www-form-urlencoded":
            valid = utf8_urlencoded(request.get_data(cache=True))  # the form is parsed from this cached copy
        elif request.mimetype == "multipart/form-data":
            valid = not any("\ufffd" in value for values in request.form.listvalues() for value in values)
        else:
            valid = True
        if not valid:
            raise InvalidInput(_("フォームの入力が正しい UTF-8 ではありません。"))


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
    app.before_request(_guard_request)
    csrf.init_app(app)

    from apdl import auth
    from apdl.views import (
        agent,
        api,
        aps,
        cards,
        diagnosis,
        main,
        oplog,
        presets,
        report,
        residents,
        status,
        tenants,
        terminals,
    )

    for blueprint in (auth.bp, main.bp, aps.bp, tenants.bp, presets.bp, residents.bp, cards.bp, diagnosis.bp,
                      report.bp, oplog.bp, agent.bp, terminals.bp, status.bp, api.bp):
        app.register_blueprint(blueprint)
    csrf.exempt(auth.backchannel_logout)  # a server-to-server POST carrying a signed logout token
    for view in (agent.agent_pair, agent.agent_poll, agent.agent_respond):
        csrf.exempt(view)  # the card agent: no browser, no cookie; its client certificate authenticates it
    csrf.exempt(api.bp)  # business systems: no browser, no cookie; their client certificate authenticates them
    app.jinja_env.globals["current_operator"] = auth.current_operator
    app.jinja_env.globals["card_status_of"] = _card_status_for_the_operator
    app.jinja_env.globals["status_labels"] = cardstatus.STATUS_LABELS
    app.jinja_env.globals["action_label"] = action_label
    app.jinja_env.globals["actor_label"] = actor_label  # 業務内ID@利用機関, never a session id or sub
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
        if isinstance(exc, AgentCardUnavailable) and exc.kind == "timeout":  # the cause is known: say it
            silent = lazy_gettext(
                "端末のカードエージェントが応答しません。端末でカードエージェントが動いているか確認してください。")
            return render_template("error.html", message=silent), 503
        if isinstance(exc, CardUnavailable):
            return render_template("error.html",
                               message=lazy_gettext("カードを読み取れません。カードを確認してください。")), 503
        if isinstance(exc, CardError):
            app.logger.warning("card error: %s", exc)
            return render_template("error.html",
                               message=lazy_gettext("カードの操作に失敗しました。")), 502
        return render_template("error.html", message=str(exc)), getattr(exc, "status", 400)

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> Any:
        # Say which check failed: a browser or proxy that drops the Referer needs other advice than a stale page.
        reasons = {
            "The referrer header is missing.": lazy_gettext(
                "送信元のページ（Referer ヘッダ）がわからないため、受け付けませんでした。ブラウザやプロキシが"
                " Referer を送らない設定になっていないか確認してください。"),
            "The referrer does not match the host.": lazy_gettext(
                "他のサイトのページからの送信は受け付けません。このサイトの画面から操作してください。"),
        }
        message = reasons.get(exc.description or "", lazy_gettext("画面の有効期限が切れました。やり直してください。"))
        return render_template("error.html", message=message), 400

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        code = exc.code or 500
        if request.path.startswith("/api/"):
            return jsonify(error=str(HTTP_MESSAGES.get(code, HTTP_MESSAGES[400]))), code
        return render_template("error.html", message=HTTP_MESSAGES.get(code, HTTP_MESSAGES[400])), code


def unreadable_request_answer(app: Flask, code: int, api: bool) -> tuple[bytes, str]:
    """Body and Content-Type for a request gunicorn itself refused to read (apdl.gunicorn_worker): JSON under
    /api/, as the application answers there; otherwise the module's error page, the message in Japanese and
    English (the request's language is unknown). Nothing of the request is repeated."""
    message = HTTP_MESSAGES.get(code, HTTP_MESSAGES[400])
    with app.test_request_context("/"):
        if api:
            return app.json.dumps({"error": str(message)}).encode(), "application/json"
        with force_locale("en"):
            english = str(message)
        return render_template("error.html", message=f"{message} / {english}").encode(), "text/html; charset=utf-8"


class _Commands(click.Group):
    """The ``apdl`` command group: every command runs in one request context whose language is the shell's
    (``LANG=en_US.UTF-8`` for English, Japanese otherwise), as opauth's commands choose theirs."""

    def __init__(self, app: Flask, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = app

    def invoke(self, ctx: click.Context) -> Any:
        with self.app.test_request_context("/", query_string={"lang": i18n.shell_language()}):
            return super().invoke(ctx)


def _cli(app: Flask) -> None:
    group = _Commands(app, "apdl", help="AP download module administration.")

    @group.command("migrate")
    def migrate() -> None:
        """Bring the module's database to the newest schema (its own Alembic migrations)."""
        db.upgrade(app.config["DATABASE_URL"])
        click.echo(_("apdlのデータベースは最新です。"))

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
            result = cardstatus.import_feed(db.get_session(), data, fmt=feed_format, batch_id=batch_id,
                                            actor=actor, tenant_code=app.config["ADMIN_TENANT"])
        except cardstatus.FeedRejected as exc:
            click.echo(str(exc), err=True)
            for line in exc.lines():
                click.echo(line, err=True)
            if exc.total > len(exc.problems):
                click.echo(_("…ほか%(num)d件", num=exc.total - len(exc.problems)), err=True)
            raise click.exceptions.Exit(1) from exc
        except ApdlError as exc:
            click.echo(str(exc), err=True)
            raise click.exceptions.Exit(1) from exc
        if result.repeated:
            click.echo(ngettext("バッチ %(batch)s は取込済みです（%(num)d件）。何も変更していません。",
                                "バッチ %(batch)s は取込済みです（%(num)d件）。何も変更していません。",
                                result.rows, batch=result.batch_id))
        else:
            click.echo(ngettext("バッチ %(batch)s を取り込みました: %(num)d件、うち変更 %(changed)d件。",
                                "バッチ %(batch)s を取り込みました: %(num)d件、うち変更 %(changed)d件。",
                                result.rows, batch=result.batch_id, changed=result.changed))

    group.add_command(_terminal_cli(app))
    group.add_command(_oplog_cli(app))
    app.cli.add_command(group)


def _terminal_cli(app: Flask) -> click.Group:
    """``flask --app apdl.app apdl terminal ...``: 端末管理 from the command line (as the admin tenant's tool)."""
    from cryptography import x509

    from apdl import terminal_registry
    from apdl.models import RegisteredTerminal

    terminal = click.Group("terminal", help="端末管理: the terminals whose card agents may connect.")

    def run(work: Any) -> Any:
        actor = f"cli:{getpass.getuser()}"
        session = db.get_session()  # in the command's request context (apdl's _Commands), in its language
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
            raise InvalidInput(_("利用機関 %(tenant)s に端末 %(name)s は登録されていません。",
                                 tenant=tenant, name=name))
        return row

    @terminal.command("register")
    @click.option("--tenant", required=True, callback=_tenant_code,
                  help="The 利用機関's code (the terminal belongs to it).")
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
        if cert_path is not None:
            from apdl import clientcert

            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            subject = terminal_registry.subject_of(cert)
            if subject is None:
                raise click.BadParameter(_("端末のSSL通信証明書（OU=terminal <端末名>）ではありません。"),
                                         param_hint="--cert")
            organization, name = organization or subject[0], name or subject[1]
            if pin:
                pin_fingerprint = clientcert.fingerprint(cert)
        elif pin:
            raise click.BadParameter(_("--pin には --cert が必要です。"), param_hint="--pin")
        form = {"name": name, "organization": organization, "pinned_fingerprint": pin_fingerprint}
        row = run(lambda session, actor: terminal_registry.register(session, form, tenant_code=tenant, actor=actor))
        if row.pinned_fingerprint:
            said = _("利用機関 %(tenant)s の端末 %(name)s を登録しました（O=%(organization)s、証明書を固定）。",
                     tenant=tenant, name=row.name, organization=row.organization)
        else:
            said = _("利用機関 %(tenant)s の端末 %(name)s を登録しました（O=%(organization)s）。",
                     tenant=tenant, name=row.name, organization=row.organization)
        click.echo(said)

    def switch(verb: str, enabled: bool, doc: str) -> click.Command:
        @click.option("--tenant", required=True)
        @click.option("--name", required=True)
        def command(tenant: str, name: str) -> None:
            run(lambda session, actor: terminal_registry.set_enabled(session, one(session, tenant, name), enabled,
                                                                     actor=actor))
            if enabled:
                click.echo(_("利用機関 %(tenant)s の端末 %(name)s を有効にしました。", tenant=tenant, name=name))
            else:
                click.echo(_("利用機関 %(tenant)s の端末 %(name)s を無効にしました。", tenant=tenant, name=name))

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
        if fingerprint.strip():
            click.echo(_("利用機関 %(tenant)s の端末 %(name)s を証明書に固定しました。", tenant=tenant, name=name))
        else:
            click.echo(_("利用機関 %(tenant)s の端末 %(name)s の証明書の固定を解除しました。",
                         tenant=tenant, name=name))

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


def _tenant_code(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A ``--tenant`` option's check: a 利用機関 code, or empty where the option may be left out."""
    if value and not registry.TENANT_CODE.match(value):
        raise click.BadParameter(_("利用機関コードではありません。"))
    return value


def _oplog_cli(app: Flask) -> click.Group:
    """``flask --app apdl.app apdl oplog ...``: the operation log from the command line (every tenant's)."""
    from apdl import oplog, oplog_search

    group = click.Group("oplog", help="操作ログ: the hash-chained operation log.")

    @group.command("list")
    @click.option("--tenant", default="", callback=_tenant_code, help="Only this tenant's entries.")
    @click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True,
                  help="How many of the newest entries.")
    def list_command(tenant: str, limit: int) -> None:
        """The newest entries, newest first (id, time UTC, tenant, actor, action, target, detail)."""
        for e in oplog_search.latest(db.get_session(), tenant=tenant, limit=limit):  # machine values, tab-separated
            at = e.at.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
            click.echo(f"{e.id}\t{at}Z\t{e.tenant_code}\t{e.actor}\t{e.action}\t{e.target}\t{e.detail}")

    @group.command("verify")
    def verify_command() -> None:
        """Check the hash chain: exit 0 when intact, 1 with the id of the first entry that does not match."""
        session = db.get_session()  # in the command's request context (apdl's _Commands), in its language
        result = oplog.check_chain(session)
        if result.broken is not None:
            click.echo(_("操作ログの連鎖が ID %(id)s の記録で一致しません。", id=result.broken), err=True)
            raise click.exceptions.Exit(1)
        if result.truncated:
            click.echo(_("操作ログの最新の記録が連鎖の先頭と一致しません。最新の記録が削除された可能性があります。"),
                       err=True)
            raise click.exceptions.Exit(1)
        click.echo(ngettext("操作ログの連鎖は正常です（%(num)d件）。",
                            "操作ログの連鎖は正常です（%(num)d件）。", result.checked))

    return group
