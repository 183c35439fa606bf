"""環境基本設定: the screen, the REST API (/api/v1/settings) and the CLI (``flask --app app settings``).

Thin: each entry point parses, calls operators/instance_settings.py, commits
once and applies the stored settings to this process (config.instance.refresh);
other processes pick them up before their next request.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Any

import click
from flask import Blueprint, Flask, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask.cli import AppGroup
from flask_babel import gettext as _
from sqlalchemy.engine import make_url

from config import INSTANCE_SETTINGS, PINNED, settings_markdown
from config import instance as store
from db import get_session, new_session
from kernel.audit import Actor, AuditAction, audited_unit_of_work
from kernel.errors import OpauthError
from kernel.web import json_body
from operators.instance_settings import (
    GROUPS,
    Change,
    SettingsInvalid,
    apply_changes,
    display,
    label,
    list_settings,
    plan_changes,
)
from operators.login.auth import current_actor, requires, requires_recent_auth
from operators.permissions import Permission

bp = Blueprint("settings_admin", __name__)
api_bp = Blueprint("settings_api", __name__, url_prefix="/api/v1")

SECRETS = frozenset({"SECRET_KEY", "KEY_PASSPHRASE"})


def _given() -> dict[str, Any]:
    return dict(current_app.extensions.get(store.GIVEN, {}))


def _rows() -> list[store.Effective]:
    return list_settings(get_session(), config=current_app.config, given=_given())


def shown(key: str, value: Any) -> str:
    """A value safe to show: secrets only as set/unset, database URLs without their password."""
    if key in SECRETS:
        return "(set)" if value else "(empty)"
    if key == "DATABASE_URL" and value:
        try:
            return make_url(str(value)).render_as_string(hide_password=True)
        except Exception:  # an unparsable URL: show nothing of it rather than a password
            return "(set)"
    return display(value)


def as_json(row: store.Effective) -> dict[str, Any]:
    """One setting as the API shows it."""
    secret = row.key in SECRETS or row.key == "DATABASE_URL"
    return {
        "key": row.key,
        "env": f"OPAUTH_{row.key}",
        "value": shown(row.key, row.value) if secret else row.value,
        "source": str(row.source),
        "instance": row.instance,
        "pinned": row.pinned,
        "restart_required": row.restart,
        "stored": None if secret else row.stored,
        "environment": (shown(row.key, row.environment) if secret and row.environment is not None
                        else row.environment),
        "pending": row.pending,
        "conflict": row.conflict,
    }


def _commit_changes(proposed: dict[str, Any], actor: Actor) -> list[Change]:
    session = get_session()
    changes = audited_unit_of_work(
        session, new_session, failure_action=AuditAction.SETTINGS_REJECTED, actor=actor, target="settings",
        work=lambda: apply_changes(session, config=current_app.config, given=_given(), proposed=proposed,
                                   actor=actor))
    store.refresh(current_app._get_current_object())  # type: ignore[attr-defined]
    return changes


# --- web UI ----------------------------------------------------------------------------------------

def _form_values(rows: dict[str, store.Effective]) -> dict[str, Any]:
    """The fields the administrator changed (unchanged fields are not proposed)."""
    proposed: dict[str, Any] = {}
    for key, rule in INSTANCE_SETTINGS.items():
        if key not in rows:
            continue
        if rule.kind == "bool":
            if f"present_{key}" not in request.form:
                continue
            raw: Any = "true" if request.form.get(key) else "false"
        else:
            if key not in request.form:
                continue
            raw = request.form.get(key, "")[:2000]
        if str(raw).strip() != display(rows[key].value):
            proposed[key] = raw
    return proposed


def _render_form(rows: list[store.Effective], *, errors: dict[str, str] | None = None,
                 values: dict[str, Any] | None = None, status: int = 200) -> Any:
    by_key = {r.key: r for r in rows}
    groups = [(title, [(key, item_label, by_key[key]) for key, item_label in items if key in by_key])
              for title, items in GROUPS]
    listed = {key for _title, items in GROUPS for key, _label in items}
    others = [r for r in rows if r.instance and r.key not in listed]  # stored settings added later
    bootstrap = [r for r in rows if not r.instance]
    conflicts = [r for r in rows if r.conflict]
    return render_template("operators/settings.html", groups=groups, others=others, bootstrap=bootstrap,
                           conflicts=conflicts, errors=errors or {}, values=values or {}, shown=shown,
                           display=display, label=label), status


@bp.route("/admin/settings")
@requires(Permission.MANAGE_SETTINGS)
def index() -> Any:
    """環境基本設定: every setting, its effective value and where it comes from."""
    return _render_form(_rows())


@bp.route("/admin/settings/confirm", methods=["POST"])
@requires(Permission.MANAGE_SETTINGS)
@requires_recent_auth
def confirm() -> Any:
    """The changes the administrator asked for, checked, shown before they are applied."""
    rows = _rows()
    proposed = _form_values({r.key: r for r in rows})
    try:
        changes = plan_changes(get_session(), config=current_app.config, given=_given(), proposed=proposed)
    except SettingsInvalid as exc:
        return _render_form(rows, errors=exc.errors, values=proposed, status=400)
    if not changes:
        flash(_("変更された設定はありません。"))
        return redirect(url_for("settings_admin.index")), 303
    return render_template("operators/settings_confirm.html", changes=changes, label=label, display=display)


@bp.route("/admin/settings/apply", methods=["POST"])
@requires(Permission.MANAGE_SETTINGS)
@requires_recent_auth
def apply() -> Any:
    """Store the confirmed changes (audited) and apply them at once."""
    keys = [k for k in request.form.getlist("keys") if k in INSTANCE_SETTINGS]
    proposed = {key: request.form.get(f"new_{key}", "")[:2000] for key in keys}
    try:
        changes = _commit_changes(proposed, current_actor())
    except SettingsInvalid as exc:
        return _render_form(_rows(), errors=exc.errors, values=proposed, status=400)
    for change in changes:
        if change.restart:
            flash(_("%(name)s を変更しました（再起動後に有効になります）。", name=label(change.key)))
        else:
            flash(_("%(name)s を変更しました。", name=label(change.key)))
    return redirect(url_for("settings_admin.index")), 303


# --- REST API --------------------------------------------------------------------------------------

@api_bp.route("/settings")
@requires(Permission.MANAGE_SETTINGS)
def api_list() -> Any:
    """GET /api/v1/settings: every setting with value and source."""
    return jsonify(items=[as_json(r) for r in _rows()])


@api_bp.route("/settings/<key>")
@requires(Permission.MANAGE_SETTINGS)
def api_get(key: str) -> Any:
    """GET /api/v1/settings/{key}."""
    row = next((r for r in _rows() if r.key == key.upper()), None)
    if row is None:
        return jsonify(error="not_found", message=f"no setting {key[:64]!r}"), 404
    return jsonify(as_json(row))


@api_bp.route("/settings", methods=["PATCH"])
@requires(Permission.MANAGE_SETTINGS)
def api_patch() -> Any:
    """PATCH /api/v1/settings: ``{"KEY": value, ...}``; all checked first, all or nothing."""
    body = json_body()
    proposed = {str(k).upper(): v for k, v in body.items()}
    try:
        changes = _commit_changes(proposed, current_actor())
    except SettingsInvalid as exc:
        return jsonify(error=exc.code, message=exc.message, errors=exc.errors), 400
    except OpauthError as exc:
        return jsonify(error=exc.code, message=exc.message), exc.status
    return jsonify(changed=[{"key": c.key, "old": c.old, "new": c.new, "restart_required": c.restart}
                            for c in changes],
                   items=[as_json(r) for r in _rows()])


# --- CLI -------------------------------------------------------------------------------------------

def _cli_actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(name=f"cli:{user}", tenant="system", source="cli")


@click.group("settings", cls=AppGroup)
def settings_group() -> None:
    """環境基本設定: list, get and set the instance's settings (and print the README table)."""


@settings_group.command("list")
@click.option("--json", "as_json_output", is_flag=True, help="JSON instead of a table")
def list_command(as_json_output: bool) -> None:
    """Every setting: value in effect, source (default / instance / environment), restart and conflicts."""
    rows = _rows()
    if as_json_output:
        click.echo(json.dumps([as_json(r) for r in rows], ensure_ascii=False, indent=1, default=str))
        return
    click.echo("KEY\tVALUE\tSOURCE\tKEPT\tNOTE")
    for r in rows:
        kept = "instance" if r.instance else "environment"
        notes = []
        if r.conflict:
            notes.append(f"CONFLICT: environment {shown(r.key, r.environment)} != instance {display(r.stored)}")
        if r.pending is not None:
            notes.append(f"after restart: {display(r.pending)}")
        click.echo(f"{r.key}\t{shown(r.key, r.value)}\t{r.source}\t{kept}\t{'; '.join(notes)}")
    for r in rows:
        if r.conflict:
            click.echo(f"warning: OPAUTH_{r.key} differs from the instance's value: this process does not "
                       f"issue certificates", err=True)


@settings_group.command("get")
@click.argument("key")
def get_command(key: str) -> None:
    """Print the value of KEY in effect (and its source on stderr)."""
    row = next((r for r in _rows() if r.key == key.upper()), None)
    if row is None:
        raise click.ClickException(f"no setting {key!r}")
    click.echo(shown(row.key, row.value))
    click.echo(f"source: {row.source}" + (" (CONFLICT with the instance)" if row.conflict else ""), err=True)


@settings_group.command("set")
@click.argument("key")
@click.argument("value")
@click.option("--yes", is_flag=True, help="do not ask before changing what goes into certificates")
def set_command(key: str, value: str, yes: bool) -> None:
    """Store VALUE for KEY with the instance (checked and audited, like 環境基本設定)."""
    proposed = {key.upper(): value}
    try:
        planned = plan_changes(get_session(), config=current_app.config, given=_given(), proposed=proposed)
        get_session().rollback()
        if not yes and any(c.key in PINNED for c in planned):
            for c in planned:
                click.echo(f"{c.key}: {display(c.old)} -> {display(c.new)} (written into certificates from now on)")
            click.confirm("Change it?", abort=True)
        changes = _commit_changes(proposed, _cli_actor())
    except OpauthError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    if not changes:
        click.echo(f"{key.upper()}: unchanged")
    for c in changes:
        click.echo(f"{c.key}: {display(c.old)} -> {display(c.new)}"
                   + (" (takes effect after a restart)" if c.restart else ""))


@settings_group.command("markdown")
def markdown_command() -> None:
    """Print every setting as a Markdown table (the README's settings section)."""
    click.echo(settings_markdown())


def init_app(app: Flask) -> None:
    """Register the screen, the API (no CSRF: HTTP Basic on every request) and the CLI group."""
    app.register_blueprint(bp)
    app.register_blueprint(api_bp)
    app.extensions["csrf"].exempt(api_bp)
    app.cli.add_command(settings_group)

