"""CLI: `flask --app app oidc client list|show|set` and `flask --app app oidc keys list|rotate`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from db import get_session, new_session
from kernel.audit import AuditAction, audited_unit_of_work
from kernel.cli import cli_actor, run_rounds
from kernel.errors import OpauthError
from oidc.clients import client_for_business_id, client_settings_json, configured_clients, save_client_settings
from oidc.keys import key_listing, rotate
from oidc.logout import TIMEOUT_SECONDS, RoundReport, deliver_due, issuer_of

T = TypeVar("T")
LOGOUT_WORKER_INTERVAL = 10

oidc_group = AppGroup("oidc", help="Business login (OpenID Connect provider): clients and signing keys.")
client_group = AppGroup("client", help="Business login settings of business systems.")
keys_group = AppGroup("keys", help="Token-signing keys (ES256).")
oidc_group.add_command(client_group)
oidc_group.add_command(keys_group)


def _run(work: Callable[[], T], *, failure: AuditAction, target: str) -> T:
    try:
        return audited_unit_of_work(get_session(), new_session, work=work, failure_action=failure,
                                    actor=cli_actor(), target=target)
    except OpauthError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


def _echo(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@client_group.command("list")
def client_list() -> None:
    """Business systems with business login settings."""
    for system, client in configured_clients(get_session()):
        state = "enabled" if client.enabled else "disabled"
        click.echo(f"{system.business_id}\tbiz-{system.business_id}\t{state}\t{' '.join(client.redirect_uris)}")


@client_group.command("show")
@click.argument("business_id")
def client_show(business_id: str) -> None:
    """Show one business system's settings as JSON."""
    try:
        system, client = client_for_business_id(get_session(), business_id)
    except OpauthError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    _echo(client_settings_json(system, client))


@client_group.command("set")
@click.argument("business_id")
@click.option("--enable/--disable", "enabled", default=None, help="Turn business login on or off.")
@click.option("--redirect-uri", "redirect_uris", multiple=True,
              help="A redirect URI (repeat for several); replaces the registered list.")
@click.option("--backchannel-logout-uri", default=None, help="Back-channel logout URI ('' to remove).")
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True,
              help="Where RP-initiated logout may return (repeat for several); replaces the list.")
@click.option("--initiate-login-uri", default=None,
              help="The system's login initiation URI, linked from the operator top screen ('' to remove).")
def client_set(business_id: str, enabled: bool | None, redirect_uris: tuple[str, ...],
               backchannel_logout_uri: str | None, post_logout_redirect_uris: tuple[str, ...],
               initiate_login_uri: str | None) -> None:
    """Change a business system's settings; options not given keep their value."""
    session = get_session()

    def work() -> Any:
        system, client = client_for_business_id(session, business_id)
        current = client_settings_json(system, client)
        data = {"enabled": current["enabled"] if enabled is None else enabled,
                "redirect_uris": list(redirect_uris) if redirect_uris else current["redirect_uris"],
                "backchannel_logout_uri": current["backchannel_logout_uri"] if backchannel_logout_uri is None
                else backchannel_logout_uri,
                "post_logout_redirect_uris": list(post_logout_redirect_uris) if post_logout_redirect_uris
                else current["post_logout_redirect_uris"],
                "initiate_login_uri": current["initiate_login_uri"] if initiate_login_uri is None
                else initiate_login_uri}
        saved = save_client_settings(session, business_id=business_id, data=data, actor=cli_actor())
        return client_settings_json(system, saved)

    _echo(_run(work, failure=AuditAction.OIDC_CLIENT_REJECTED, target=f"business_system:{business_id[:8]}"))


@keys_group.command("list")
def keys_list() -> None:
    """Signing keys: kid, state, created, activated, kept until."""
    for key in key_listing(get_session()):
        click.echo(f"{key.kid}\t{key.state}\t{key.created_at:%Y-%m-%dT%H:%M:%SZ}\t"
                   f"{key.activated_at or '-'}\t{key.keep_until or '-'}")


@keys_group.command("rotate")
@click.option("--force", is_flag=True, help="Switch even if the next key was published less than a day ago.")
def keys_rotate(force: bool) -> None:
    """Sign with the published next key, keep the old one published, publish a new next key."""
    session = get_session()
    settings = CaSettings.from_config(current_app.config)
    result = _run(lambda: rotate(session, settings, actor=cli_actor(), force=force),
                  failure=AuditAction.OIDC_KEY_ROTATED, target="oidc_keys")
    click.echo(f"active {result.active_kid}; retired {result.retired_kid or '-'}; next {result.next_kid}")


def _deliver_round(session: Session, timeout: float) -> RoundReport:
    report = deliver_due(session, CaSettings.from_config(current_app.config), issuer=issuer_of(current_app.config),
                         timeout=timeout)
    for result in report.failed:
        click.echo(f"{result.business_id}\tdelivery {result.delivery_id}\t{result.error}", err=True)
    return report


@oidc_group.command("deliver-logouts")
@click.option("--timeout", default=TIMEOUT_SECONDS, show_default=True, help="Seconds to wait for each business system.")
def deliver_logouts(timeout: float) -> None:
    """Send the back-channel logout tokens that are due (run from cron, e.g. every minute)."""
    report = _deliver_round(get_session(), timeout)
    click.echo(f"{report.sent} logout tokens delivered, {len(report.failed)} failed")


@oidc_group.command("logout-worker")
@click.option("--interval", type=click.IntRange(min=1), default=LOGOUT_WORKER_INTERVAL, show_default=True,
              help="Seconds between rounds.")
@click.option("--rounds", type=click.IntRange(min=0), default=0, help="Stop after this many rounds (0: never).")
@click.option("--timeout", default=TIMEOUT_SECONDS, show_default=True, help="Seconds to wait for each business system.")
def logout_worker(interval: int, rounds: int, timeout: float) -> None:
    """`deliver-logouts` every INTERVAL seconds (run it beside the web server; `make run` does)."""

    def round_(session: Session) -> None:
        report = _deliver_round(session, timeout)
        if report.sent or report.failed:
            click.echo(f"{report.sent} logout tokens delivered, {len(report.failed)} failed")

    run_rounds(round_, interval=interval, rounds=rounds, what="logout delivery")


def init_app(app: Flask) -> None:
    """Register the ``oidc`` command group."""
    app.cli.add_command(oidc_group)
