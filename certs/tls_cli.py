"""CLI for SSL通信証明書: `flask --app app ssl issue|list|delete|reissue`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from ca.authority import CaSettings
from certs.tls_certs import (
    IssuedTlsCertificate,
    TlsCertificateData,
    delete_tls_certificate,
    issue_tls_certificate,
    reissue_tls_certificate,
    tls_certificates,
)
from db import get_session, new_session
from kernel.audit import AuditAction, audited_unit_of_work
from kernel.cli import (
    OutputFile,
    cli_actor,
    echo_rows,
    ensure_output_directory,
    input_file,
    json_option,
    write_secret,
)
from kernel.errors import OpauthError
from operators.business_systems import system_of
from operators.tenancy import CLI_SCOPE

T = TypeVar("T")

ssl_group = AppGroup("ssl", help="SSL通信証明書: issue, list, delete, reissue.")


def _deliver(issued: IssuedTlsCertificate, out: Path | None, p12_out: Path | None) -> None:
    cert = issued.certificate
    click.echo(f"issued serial {cert.serial} for {cert.subject}", err=True)
    from ca.inquiry import export_certificate

    body, _media, _name = export_certificate(get_session(), cert, "chain.pem")
    if out is not None:
        out.write_bytes(body)
    else:
        click.echo(body.decode())
    if issued.pkcs12 is not None:
        target = p12_out or Path(issued.pkcs12.filename)
        write_secret(target, issued.pkcs12.data, new=False)  # 0600 before the key is in it
        click.echo(f"PKCS#12 written to {target}; its password (shown once): {issued.pkcs12.password}", err=True)


def _check_default_p12_target(csr_path: Path | None, p12_out: Path | None) -> None:
    """Without a CSR the key is generated here and its PKCS#12 goes to the current directory unless --p12-out
    names a file: check it can be written before anything is issued."""
    if csr_path is None and p12_out is None:
        ensure_output_directory(Path.cwd(), param_hint="'--p12-out' (default: the current directory)")


def _run(work: Callable[[], T], target: str) -> T:
    try:
        return audited_unit_of_work(get_session(), new_session, work=work,
                                    failure_action=AuditAction.ISSUANCE_REJECTED, actor=cli_actor(), target=target)
    except OpauthError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


@ssl_group.command("issue")
@click.option("--tenant", required=True, help="tenant code (市町村・任意団体)")
@click.option("--business-id", default="", help="bind to this business system (業務ID)")
@click.option("--terminal", default="", help="or bind to this terminal (端末名)")
@click.option("--host", "hosts", multiple=True, required=True, help="host name or IP for the SAN (repeatable)")
@click.option("--csr", "csr_path", type=input_file(),
              help="CSR file; without it a key is generated and written as PKCS#12")
@click.option("--out", type=OutputFile(), help="certificate chain (PEM) here")
@click.option("--p12-out", type=OutputFile(), help="PKCS#12 here (default: its file name in the current directory)")
def issue(tenant: str, business_id: str, terminal: str, hosts: tuple[str, ...], csr_path: Path | None,
          out: Path | None, p12_out: Path | None) -> None:
    """SSL通信証明書発行."""
    _check_default_p12_target(csr_path, p12_out)
    settings = CaSettings.from_config(current_app.config)
    csr = csr_path.read_bytes()[: settings.config["MAX_CSR_BYTES"] + 1] if csr_path else None
    data = {"tenant": tenant, "business_id": business_id, "terminal": terminal, "hosts": list(hosts)}
    issued = _run(lambda: issue_tls_certificate(get_session(), settings=settings, scope=CLI_SCOPE,
                                                data=TlsCertificateData.from_mapping(data), csr_bytes=csr,
                                                actor=cli_actor()), "ssl_certificate")
    _deliver(issued, out, p12_out)


@ssl_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="include deleted (revoked) certificates")
@json_option
def list_command(show_all: bool, as_json: bool) -> None:
    """照会: the active SSL communication certificates (``binding``: 業務ID or terminal name)."""
    echo_rows(("serial", "status", "not_after", "binding", "subject"),
              ({"serial": c.serial, "status": c.status,
                "not_after": c.not_after if as_json else f"{c.not_after:%Y-%m-%d}",
                "binding": s.business_id if (s := system_of(c))
                else (c.details or {}).get("terminal", ""), "subject": c.subject}
               for c in tls_certificates(get_session(), scope=CLI_SCOPE, active_only=not show_all)),
              as_json=as_json)


@ssl_group.command("delete")
@click.argument("serial")
def delete(serial: str) -> None:
    """削除: revoke (cessationOfOperation)."""
    _run(lambda: delete_tls_certificate(get_session(), scope=CLI_SCOPE, serial=serial, actor=cli_actor()),
         f"certificate:{serial[:40]}")
    click.echo(f"deleted (revoked) {serial}")


@ssl_group.command("reissue")
@click.argument("serial")
@click.option("--csr", "csr_path", type=input_file())
@click.option("--out", type=OutputFile())
@click.option("--p12-out", type=OutputFile())
def reissue(serial: str, csr_path: Path | None, out: Path | None, p12_out: Path | None) -> None:
    """再発行: new certificate with the same binding; the old one is revoked as superseded."""
    _check_default_p12_target(csr_path, p12_out)
    settings = CaSettings.from_config(current_app.config)
    csr = csr_path.read_bytes()[: settings.config["MAX_CSR_BYTES"] + 1] if csr_path else None
    issued = _run(lambda: reissue_tls_certificate(get_session(), settings=settings, scope=CLI_SCOPE, serial=serial,
                                                  csr_bytes=csr, actor=cli_actor()), f"certificate:{serial[:40]}")
    _deliver(issued, out, p12_out)


def init_app(app: Flask) -> None:
    app.cli.add_command(ssl_group)
