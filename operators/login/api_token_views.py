"""API トークン管理: the web screen, the REST API (/api/v1/api-tokens) and ``flask tokens``.

Thin: parse, call ``operators.login.api_tokens``, commit once, render. The secret of a
new token is shown once (never stored, never in a URL or a log); pages that
show it are sent with ``Cache-Control: no-store``.
"""

from __future__ import annotations

import getpass
from typing import Any

import click
from flask import Blueprint, Flask, flash, jsonify, redirect, render_template, request, url_for
from flask.cli import AppGroup
from flask_babel import gettext as _
from sqlalchemy import select

from db import get_session
from kernel.audit import Actor, AuditAction
from kernel.errors import InvalidInput, OpauthError
from kernel.web import json_body, no_store
from operators.login.api_token_models import ApiToken
from operators.login.api_tokens import (
    DEFAULT_DAYS,
    MAX_DAYS,
    NewToken,
    create_token,
    get_visible_token,
    grantable_permissions,
    revoke_token,
    token_status,
    visible_tokens,
)
from operators.login.auth import current_actor, current_operator, requires, requires_recent_auth
from operators.login.service import find_operator
from operators.models import Operator
from operators.permissions import PERMISSION_LABELS, Permission
from operators.web import unit_of_work

bp = Blueprint("api_tokens", __name__)
api_bp = Blueprint("api_tokens_api", __name__, url_prefix="/api/v1")


def token_json(token: ApiToken) -> dict[str, Any]:
    """A token as the API and ``flask tokens list`` describe it (never the secret, never its hash)."""
    return {
        "id": token.id,
        "name": token.name,
        "prefix": token.display_prefix,
        "scopes": list(token.scopes),
        "tenant": token.operator.tenant.code,
        "operator_id": token.operator.operator_id,
        "status": token_status(token),
        "created_at": token.created_at.isoformat(),
        "created_by": token.created_by,
        "expires_at": token.expires_at.isoformat(),
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
        "last_used_from": token.last_used_from,
    }


def _me() -> Operator:
    operator = current_operator()
    assert operator is not None  # @requires ran first
    return operator


def _create(name: object, scopes: Any, days: object) -> NewToken:
    session = get_session()
    owner = _me()

    def work() -> NewToken:
        if not isinstance(scopes, list):
            raise InvalidInput(_("スコープ (scopes) は権限名の配列で指定してください。"))
        return create_token(session, owner=owner, name=name, scopes=scopes, days=days, actor=current_actor())

    return unit_of_work(work, failure=AuditAction.API_TOKEN_REJECTED,
                        target=f"operator:{owner.tenant.code}/{owner.operator_id}")


def _revoke(token_id: int) -> tuple[ApiToken, bool]:
    session = get_session()
    actor = current_actor()

    def work() -> tuple[ApiToken, bool]:
        token = get_visible_token(session, _me(), token_id)
        return token, revoke_token(session, token=token, actor=actor)

    return unit_of_work(work, failure=AuditAction.API_TOKEN_REJECTED, target=f"api_token:{token_id}")


# --- web UI ------------------------------------------------------------------------------------------

def _screen(error: str | None = None, status: int = 200) -> Any:
    operator = _me()
    return render_template("operators/api_tokens.html", tokens=visible_tokens(get_session(), operator),
                           grantable=grantable_permissions(operator), labels=PERMISSION_LABELS,
                           status_of=token_status,
                           default_days=DEFAULT_DAYS, max_days=MAX_DAYS, error=error,
                           form=request.form), status


@bp.route("/admin/api-tokens")
@requires(Permission.MANAGE_API_TOKENS)
def index() -> Any:
    """API トークン一覧 and the form for a new token."""
    return _screen()


@bp.route("/admin/api-tokens", methods=["POST"])
@requires(Permission.MANAGE_API_TOKENS)
@requires_recent_auth
def create() -> Any:
    try:
        new = _create(request.form.get("name", ""), request.form.getlist("scopes"), request.form.get("days", ""))
    except OpauthError as exc:
        return _screen(exc.message, 400)
    body = render_template("operators/api_token_created.html", token=new.token, secret=new.secret)
    response = no_store(body)
    response.status_code = 201
    return response


@bp.route("/admin/api-tokens/<id:token_id>/revoke")
@requires(Permission.MANAGE_API_TOKENS)
@requires_recent_auth
def revoke_confirm(token_id: int) -> Any:
    """Confirmation before a token is revoked: it cannot be undone, and the script using it stops working."""
    token = get_visible_token(get_session(), _me(), token_id)
    return render_template("operators/api_token_revoke.html", token=token, status=token_status(token))


@bp.route("/admin/api-tokens/<id:token_id>/revoke", methods=["POST"])
@requires(Permission.MANAGE_API_TOKENS)
@requires_recent_auth
def revoke(token_id: int) -> Any:
    try:
        token, changed = _revoke(token_id)
    except OpauthError as exc:
        flash(exc.message)
        return redirect(url_for("api_tokens.index")), 303
    flash(_("API トークン %(name)s を失効しました。", name=token.name) if changed
          else _("API トークン %(name)s は既に失効しています。", name=token.name))
    return redirect(url_for("api_tokens.index")), 303


# --- REST API ----------------------------------------------------------------------------------------

@api_bp.route("/api-tokens")
@requires(Permission.MANAGE_API_TOKENS)
def api_list() -> Any:
    """GET /api/v1/api-tokens: the caller's tokens (a system administrator's: every tenant's)."""
    return jsonify(items=[token_json(t) for t in visible_tokens(get_session(), _me())])


@api_bp.route("/api-tokens", methods=["POST"])
@requires(Permission.MANAGE_API_TOKENS)
def api_create() -> Any:
    """POST /api/v1/api-tokens ``{"name", "scopes": [...], "days"}``: 201 with the secret, shown this once."""
    body = json_body()
    new = _create(body.get("name"), body.get("scopes"), body.get("days"))
    response = jsonify(dict(token_json(new.token), token=new.secret))
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    response.headers["Location"] = f"/api/v1/api-tokens/{new.token.id}"
    return response


@api_bp.route("/api-tokens/<id:token_id>")
@requires(Permission.MANAGE_API_TOKENS)
def api_get(token_id: int) -> Any:
    return jsonify(token_json(get_visible_token(get_session(), _me(), token_id)))


@api_bp.route("/api-tokens/<id:token_id>/revoke", methods=["POST"])
@requires(Permission.MANAGE_API_TOKENS)
def api_revoke(token_id: int) -> Any:
    """POST /api/v1/api-tokens/{id}/revoke: the token is refused from the next request on."""
    token, changed = _revoke(token_id)
    return jsonify(dict(token_json(token), changed=changed))


# --- CLI ---------------------------------------------------------------------------------------------

@click.group("tokens", cls=AppGroup)
def tokens_group() -> None:
    """API tokens for scripts and business servers."""


def _cli_actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(name=f"cli:{user}", tenant="system", source="cli")


@tokens_group.command("create")
@click.argument("tenant_code")
@click.argument("operator_id")
@click.option("--name", required=True, help="What the token is for (e.g. 'renewal script on web01').")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="A permission the token carries (repeat); at most the operator's own.")
@click.option("--days", type=int, default=DEFAULT_DAYS, show_default=True, help=f"Validity, 1..{MAX_DAYS} days.")
def create_command(tenant_code: str, operator_id: str, name: str, scopes: tuple[str, ...], days: int) -> None:
    """Make a token acting as OPERATOR_ID of TENANT_CODE; prints the secret once, on the last line."""
    session = get_session()
    owner = find_operator(session, tenant_code=tenant_code[:20], operator_id=operator_id[:64])
    if owner is None:
        raise click.ClickException(f"no operator {operator_id!r} in tenant {tenant_code!r}")
    try:
        new = create_token(session, owner=owner, name=name, scopes=list(scopes), days=days, actor=_cli_actor())
    except OpauthError as exc:
        session.rollback()
        raise click.ClickException(exc.message) from None
    session.commit()
    click.echo(f"token {new.token.id} for {tenant_code}/{operator_id}, scopes {','.join(new.token.scopes)}, "
               f"expires {new.token.expires_at.isoformat()}; the secret is shown once:", err=True)
    click.echo(new.secret)


@tokens_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked and expired tokens.")
def list_command(show_all: bool) -> None:
    """Every operator's tokens: id, status, owner, name, scopes, expiry, last use."""
    session = get_session()
    tokens = session.scalars(select(ApiToken).order_by(ApiToken.id)).all()
    for token in tokens:
        status = token_status(token)
        if status != "active" and not show_all:
            continue
        used = token.last_used_at.isoformat() if token.last_used_at else "-"
        click.echo(f"{token.id}\t{status}\t{token.operator.tenant.code}/{token.operator.operator_id}\t"
                   f"{token.display_prefix}…\t{token.name}\t{','.join(token.scopes)}\t"
                   f"{token.expires_at.isoformat()}\t{used}")


@tokens_group.command("revoke")
@click.argument("token_id", type=int)
def revoke_command(token_id: int) -> None:
    """Revoke token TOKEN_ID (see `flask tokens list`)."""
    session = get_session()
    token = session.get(ApiToken, token_id) if 0 < token_id < 2**31 else None
    if token is None:
        raise click.ClickException(f"no API token {token_id}")
    changed = revoke_token(session, token=token, actor=_cli_actor())
    session.commit()
    click.echo(f"token {token_id}: " + ("revoked" if changed else "was already revoked"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(api_bp)
    # Machine clients authenticate every request (bearer token or HTTP Basic): no ambient cookies, no CSRF
    # token (a cookie-authenticated call still needs X-CSRFToken: operators.web.refuse_ambient_api_calls).
    app.extensions["csrf"].exempt(api_bp)
    app.cli.add_command(tokens_group)
