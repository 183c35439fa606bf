"""Flask CLI commands (``flask --app app ...``); thin wrappers over the same services as the UI and API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from ca.inquiry import export_certificate, get_certificate
from ca.models import RevocationReason
from ca.revocation import (
    REMOVE_FROM_CRL,
    parse_invalidity_date,
    parse_reason,
    publish,
    refresh,
    revoke_by_serial,
)
from certs.audit_checkpoints import default_directory, record_checkpoint, sign_checkpoint, verify_checkpoints
from certs.business_server import issue_business_server_certificate
from certs.inquiry import find_certificates
from db import get_session, new_session
from kernel.audit import AuditAction, AuditResult, audited_unit_of_work, verify_chain
from kernel.audit_log import MAX_PER_PAGE, AuditFilters, compact_detail, event_json, list_events
from kernel.cli import (
    OutputFile,
    cli_actor,
    echo_rows,
    ensure_output_directory,
    fail,
    input_file,
    json_option,
    run_rounds,
)
from kernel.errors import OpauthError
from operators.business_systems import BusinessSystemData, list_business_systems


@click.group("business-system", cls=AppGroup)
def business_system_group() -> None:
    """業務システム: list business systems."""


@business_system_group.command("list")
@json_option
def business_system_list(as_json: bool) -> None:
    """List business systems (業務ID, name, top URL)."""
    echo_rows(("business_id", "name", "top_url"),
              ({"business_id": s.business_id, "name": s.name, "top_url": s.top_url}
               for s in list_business_systems(get_session())), as_json=as_json)


@click.group("cert", cls=AppGroup)
def cert_group() -> None:
    """Certificates: issue, list, show."""


def _business_options(fn: Any) -> Any:
    for name, required in reversed((("business-id", True), ("name", True), ("admin-org", False),
                                    ("top-url", True), ("operator-admin-url", True),
                                    ("personalize-url", True), ("phone", False), ("email", False))):
        fn = click.option(f"--{name}", required=required, default="" if not required else None)(fn)
    return fn


@cert_group.command("issue-business-server")
@_business_options
@click.option("--csr", "csr_path", type=input_file(), required=True, help="CSR file (PEM or DER)")
@click.option("--out", type=OutputFile(), help="write the certificate here")
@click.option("--format", "fmt", default="pem", type=click.Choice(["pem", "der", "chain.pem", "p7b"]))
def issue_business_server(csr_path: Path, out: Path | None, fmt: str, **fields: str) -> None:
    """業務サーバ証明書発行: save the business system and issue its server certificate from a CSR."""
    session = get_session()
    actor = cli_actor()
    limit = current_app.config["MAX_CSR_BYTES"]
    try:
        def work() -> Any:
            data = BusinessSystemData.from_mapping(fields)
            with csr_path.open("rb") as fh:
                csr_bytes = fh.read(limit + 1)
            return issue_business_server_certificate(session, settings=CaSettings.from_config(current_app.config),
                                                     data=data, csr_bytes=csr_bytes, actor=actor,
                                                     may_change_system=True)

        cert = audited_unit_of_work(session, new_session, work=work, failure_action=AuditAction.CSR_REJECTED,
                                    actor=actor, target=f"business_system:{fields['business_id'][:3]}")
        body, _media, _name = export_certificate(session, cert, fmt)
    except OpauthError as exc:
        fail(exc)
        return
    click.echo(f"issued serial {cert.serial} for {cert.subject}", err=True)
    if out is None:
        click.echo(body.decode() if fmt.endswith("pem") else body.hex())
    else:
        out.write_bytes(body)


@cert_group.command("list")
@click.option("--profile")
@click.option("--business-id")
@click.option("--status")
@click.option("--page", default=1, type=int)
@json_option
def cert_list(profile: str | None, business_id: str | None, status: str | None, page: int, as_json: bool) -> None:
    """List certificates, newest first, one page at a time (the page count goes to stderr)."""
    try:
        result = find_certificates(get_session(), profile=profile, business_id=business_id, status=status,
                                   page=page, per_page=current_app.config["PAGE_SIZE"])
    except OpauthError as exc:
        fail(exc)
        return
    echo_rows(("serial", "profile", "status", "not_after", "subject"),
              ({"serial": c.serial, "profile": c.profile, "status": c.status,
                "not_after": c.not_after if as_json else f"{c.not_after:%Y-%m-%d}", "subject": c.subject}
               for c in result.items), as_json=as_json)
    click.echo(f"page {result.page}/{result.pages}, {result.total} certificates", err=True)


@cert_group.command("show")
@click.argument("serial")
@click.option("--format", "fmt", default="pem", type=click.Choice(["pem", "der", "chain.pem", "p7b"]))
@click.option("--out", type=OutputFile())
def cert_show(serial: str, fmt: str, out: Path | None) -> None:
    session = get_session()
    try:
        body, _media, _name = export_certificate(session, get_certificate(session, serial=serial), fmt)
    except OpauthError as exc:
        fail(exc)
        return
    if out is None:
        click.echo(body.decode() if fmt.endswith("pem") else body.hex())
    else:
        out.write_bytes(body)


def _revocation_command(serial: str, reason: RevocationReason | None, invalidity_date: str | None) -> None:
    session = get_session()
    actor = cli_actor()
    try:
        def work() -> Any:
            cert = revoke_by_serial(session, serial=serial, reason=reason, actor=actor,
                                    invalidity_date=parse_invalidity_date(invalidity_date))
            publish(session, CaSettings.from_config(current_app.config), cert)
            return cert

        cert = audited_unit_of_work(session, new_session, work=work, failure_action=AuditAction.REVOCATION_REJECTED,
                                    actor=actor, target=f"certificate:{serial[:40]}")
    except OpauthError as exc:
        fail(exc)
        return
    state = f"{cert.status} ({cert.revocation_reason})" if cert.revocation_reason else cert.status
    click.echo(f"{cert.serial}\t{state}\t{cert.subject}")


@cert_group.command("revoke")
@click.argument("serial")
@click.option("--reason", required=True, metavar="REASON",
              help="RFC 5280 reason: " + ", ".join([*(r.value for r in RevocationReason), REMOVE_FROM_CRL])
              + " (removeFromCRL releases a certificateHold)")
@click.option("--invalidity-date", help="ISO 8601 with time zone, e.g. 2026-11-25T09:00:00Z")
def cert_revoke(serial: str, reason: str, invalidity_date: str | None) -> None:
    """失効: revoke a certificate (audited; a new CRL and OCSP responses are signed at once)."""
    try:
        parsed = parse_reason(reason)
    except OpauthError as exc:
        fail(exc)
        return
    _revocation_command(serial, parsed, invalidity_date)


@cert_group.command("release-hold")
@click.argument("serial")
def cert_release_hold(serial: str) -> None:
    """保留解除: release a certificateHold (removeFromCRL)."""
    _revocation_command(serial, None, None)


@click.group("pki", cls=AppGroup)
def pki_group() -> None:
    """CRL and OCSP upkeep."""


@pki_group.command("refresh")
def pki_refresh() -> None:
    """Renew OCSP responders, re-sign due CRLs and OCSP responses (run from cron, e.g. hourly)."""
    session = get_session()
    report = refresh(session, CaSettings.from_config(current_app.config))
    session.commit()
    for authority_id, number in report.crls:
        click.echo(f"CA {authority_id}: CRL number {number}")
    for authority_id, serial in report.responders:
        click.echo(f"CA {authority_id}: OCSP signing certificate {serial}")
    click.echo(f"OCSP responses re-signed: {report.ocsp_resigned}")


@pki_group.command("worker")
@click.option("--interval", type=click.IntRange(min=1), default=60, show_default=True,
              help="Seconds between rounds.")
@click.option("--rounds", type=click.IntRange(min=0), default=0, help="Stop after this many rounds (0: never).")
def pki_worker(interval: int, rounds: int) -> None:
    """Keep CRLs and OCSP answers current: `pki refresh` every INTERVAL seconds (run it beside the web server)."""

    def round_(session: Session) -> None:
        report = refresh(session, CaSettings.from_config(current_app.config))
        session.commit()
        click.echo(f"CRL numbers {dict(report.crls)}; OCSP responses re-signed: {report.ocsp_resigned}")

    run_rounds(round_, interval=interval, rounds=rounds, what="pki refresh")


@click.group("audit", cls=AppGroup)
def audit_group() -> None:
    """Audit log."""


_CHECKPOINT_DIR = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
    help="checkpoint directory (default: INSTANCE_DIR/audit-checkpoints); keep it off the database host")


def _checkpoint_directory(directory: Path | None) -> Path:
    return directory or default_directory(CaSettings.from_config(current_app.config))


def _verify(directory: Path) -> bool:
    """Print the chain and checkpoint verdicts; True when both are sound."""
    session = get_session()
    verdict = verify_chain(session)
    if verdict.ok:
        click.echo(f"audit chain OK: {verdict.checked} entries")
    else:
        where = f"entry {verdict.first_broken_id}" if verdict.first_broken_id else "the end of the log"
        click.echo(f"audit chain BROKEN at {where}: {verdict.reason} ({verdict.checked} entries verified before it)",
                   err=True)
    anchored = verify_checkpoints(session, directory=directory)
    for problem in anchored.problems:
        click.echo(f"audit checkpoint FAILED: {problem}", err=True)
    if anchored.latest is not None:
        click.echo(f"checkpoints: {anchored.checkpoints} signed; the newest anchors entry {anchored.latest.sequence} "
                   f"({anchored.latest.signed_at}); {anchored.entries_since} entries since")
    elif anchored.ok:
        click.echo(f"checkpoints: none in {directory}: a cut tail cannot be detected until "
                   "`flask --app app audit checkpoint` runs")
    return verdict.ok and anchored.ok


@audit_group.command("verify")
@_CHECKPOINT_DIR
def audit_verify(directory: Path | None) -> None:
    """Walk the hash chain and compare it with the signed checkpoints; exit 1 naming what was tampered with."""
    if not _verify(_checkpoint_directory(directory)):
        sys.exit(1)


@audit_group.command("checkpoint")
@_CHECKPOINT_DIR
def audit_checkpoint(directory: Path | None) -> None:
    """Verify the log, then sign its newest entry with the audit key into the checkpoint file (run it by timer)."""
    target = _checkpoint_directory(directory)
    ensure_output_directory(target, param_hint="'--dir'")  # before the checkpoint entry is committed
    if not _verify(target):
        click.echo("no checkpoint signed: the log does not verify", err=True)
        sys.exit(1)
    session = get_session()
    settings = CaSettings.from_config(current_app.config)
    try:
        event = record_checkpoint(session, settings, directory=target, actor=cli_actor())
        session.commit()
        checkpoint = sign_checkpoint(settings, directory=target, sequence=event.id, entry_hash=event.entry_hash)
    except OpauthError as exc:
        session.rollback()
        fail(exc)
        return
    click.echo(f"checkpoint signed: entry {checkpoint.sequence} {checkpoint.entry_hash} -> {target}")


@audit_group.command("list")
@click.option("--action", help="exact action, or every action under a prefix ending in a dot (certificate.)")
@click.option("--actor", help="part of the actor's name")
@click.option("--tenant", help="the actor's tenant code (exact)")
@click.option("--result", type=click.Choice([r.value for r in AuditResult]))
@click.option("--since", help="first UTC day, YYYY-MM-DD (inclusive)")
@click.option("--until", help="last UTC day, YYYY-MM-DD (inclusive)")
@click.option("--target", "q", help="part of the target")
@click.option("--limit", type=click.IntRange(min=1, max=MAX_PER_PAGE), default=50, show_default=True,
              help="the newest this many entries")
@json_option
def audit_list(limit: int, as_json: bool, **values: str | None) -> None:
    """The newest audit entries, filtered (as the 監査ログ screen and GET /api/v1/audit-events)."""
    try:
        page = list_events(get_session(), AuditFilters.of(**values), per_page=limit)
    except OpauthError as exc:
        fail(exc)
        return
    columns = ("id", "created_at", "actor", "tenant", "source", "action", "target", "result", "detail")
    rows = [event_json(e) if as_json else {**event_json(e), "detail": compact_detail(e.detail)} for e in page.items]
    echo_rows(columns, rows, as_json=as_json)


def init_app(app: Flask) -> None:
    for command in (business_system_group, cert_group, audit_group, pki_group):
        app.cli.add_command(command)
