"""Lifting login locks: web UI and API for system administrators, and a CLI command.

Thin: each entry point finds the operator through the tenancy guard, calls
``login_service.unlock`` and commits once.
"""

from __future__ import annotations

from typing import Any

import click
from flask import Blueprint, Flask, flash, jsonify, redirect, render_template, request, url_for
from flask.cli import AppGroup
from flask_babel import gettext as _

from db import get_session
from kernel.audit import Actor
from kernel.errors import OpauthError
from operators.login.auth import current_actor, current_operator, requires, requires_recent_auth
from operators.login.service import find_operator, locked_operators, unlock
from operators.permissions import Permission
from operators.tenancy import get_operator, managed_tenant, scope_of

bp = Blueprint("login_admin", __name__)
api_bp = Blueprint("login_api", __name__, url_prefix="/api/v1")


def _unlock(tenant_code: str, operator_id: str) -> bool:
    operator = current_operator()
    assert operator is not None
    session = get_session()
    scope = scope_of(operator)
    target = get_operator(session, scope, managed_tenant(session, scope, tenant_code), operator_id)
    was_locked = unlock(session, operator=target, actor=current_actor())
    session.commit()
    return was_locked


@bp.route("/admin/locked-operators")
@requires(Permission.UNLOCK_OPERATORS)
def locked() -> Any:
    """Operators locked by failed logins, with an unlock button."""
    return render_template("auth/locked.html", rows=locked_operators(get_session()))


@bp.route("/admin/locked-operators/unlock", methods=["POST"])
@requires(Permission.UNLOCK_OPERATORS)
@requires_recent_auth
def unlock_operator() -> Any:
    tenant_code = request.form.get("tenant", "")[:20]
    operator_id = request.form.get("operator_id", "")[:64]
    try:
        _unlock(tenant_code, operator_id)
    except OpauthError as exc:
        flash(exc.message)
        return redirect(url_for("login_admin.locked")), 303
    who = f"{tenant_code}/{operator_id}"
    flash(_("%(op)s のロックを解除しました。", op=who))
    return redirect(url_for("login_admin.locked")), 303


@api_bp.route("/operators/<tenant_code>/<operator_id>/unlock", methods=["POST"])
@requires(Permission.UNLOCK_OPERATORS)
def api_unlock(tenant_code: str, operator_id: str) -> Any:
    """POST /api/v1/operators/{tenant_code}/{operator_id}/unlock."""
    try:
        was_locked = _unlock(tenant_code, operator_id)
    except OpauthError as exc:
        return jsonify(error=exc.code, message=exc.message), exc.status
    return jsonify(tenant=tenant_code, operator_id=operator_id, was_locked=was_locked)


@click.group("login", cls=AppGroup)
def login_group() -> None:
    """Operator login: lift locks."""


@login_group.command("unlock")
@click.argument("tenant_code")
@click.argument("operator_id")
def unlock_command(tenant_code: str, operator_id: str) -> None:
    """Lift the login lock of OPERATOR_ID in TENANT_CODE and reset its failure count."""
    import getpass

    session = get_session()
    operator = find_operator(session, tenant_code=tenant_code, operator_id=operator_id)
    if operator is None:
        raise click.ClickException(f"no operator {operator_id!r} in tenant {tenant_code!r}")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    was_locked = unlock(session, operator=operator, actor=Actor(name=f"cli:{user}", tenant="system", source="cli"))
    session.commit()
    click.echo(f"{tenant_code}/{operator_id}: " + ("unlocked" if was_locked else "was not locked; failures reset"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(api_bp)
    # Machine clients authenticate each request (HTTP Basic): no ambient cookies, no CSRF token.
    app.extensions["csrf"].exempt(api_bp)
    app.cli.add_command(login_group)
