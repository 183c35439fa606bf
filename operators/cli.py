"""Flask CLI for tenants, joint use and operators (``flask --app app tenant|operator ...``); thin.

The CLI acts as システム管理者 (all tenants) and records ``cli:<user>`` as the actor.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from flask_babel import force_locale
from flask_babel import gettext as _

from ca.authority import CaSettings
from db import get_session, new_session
from kernel.audit import AuditAction, audited_unit_of_work
from kernel.cli import OutputDirectory, OutputFile, cli_actor, echo_rows, input_file, json_option, write_secret
from kernel.errors import InvalidInput, OpauthError
from operators import csv_io
from operators.business_systems import get_by_business_id
from operators.in_business import parse_permissions, set_in_business_id
from operators.login.service import LoginSettings, change_password
from operators.models import AuthMethod
from operators.operator_data import OperatorData
from operators.registration import bulk_change_passwords, register_and_issue, revoke_operator
from operators.tenancy import (
    CLI_SCOPE,
    get_operator,
    get_tenant,
    in_business_system,
    joint_use_systems,
    well_formed_business_id,
)
from operators.tenants import TenantData, create_tenant, list_tenants, set_joint_use

T = TypeVar("T")


def _run(work: Callable[[], T], *, failure: AuditAction, target: str) -> T:
    try:
        with force_locale("en"):  # services' messages are translated; the CLI speaks English and has no request
            return audited_unit_of_work(get_session(), new_session, work=work, failure_action=failure,
                                        actor=cli_actor(), target=target)
    except OpauthError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


@click.group("tenant", cls=AppGroup)
def tenant_group() -> None:
    """市町村・任意団体 and 共同利用業務設定."""


@tenant_group.command("list")
@json_option
def tenant_list(as_json: bool) -> None:
    """List tenants in display order with their joint-use business systems."""
    session = get_session()
    echo_rows(("display_order", "code", "kind", "name", "joint_use"),
              ({"display_order": t.display_order, "code": t.code, "kind": t.kind.value, "name": t.name,
                "joint_use": [s.business_id for s in joint_use_systems(session, t)]} for t in list_tenants(session)),
              as_json=as_json)


@tenant_group.command("create")
@click.option("--code", required=True)
@click.option("--name", required=True)
@click.option("--kind", default="municipality", type=click.Choice(["municipality", "prefecture", "voluntary"]))
def tenant_create(code: str, name: str, kind: str) -> None:
    """市町村・任意団体設定: create a tenant."""
    tenant = _run(lambda: create_tenant(get_session(), data=TenantData.from_mapping(
        {"code": code, "name": name, "kind": kind}), actor=cli_actor()),
        failure=AuditAction.TENANT_REJECTED, target=f"tenant:{code[:20]}")
    click.echo(f"created tenant {tenant.code}")


@tenant_group.command("joint-use")
@click.argument("business_id")
@click.argument("tenant_codes", nargs=-1)
def tenant_joint_use(business_id: str, tenant_codes: tuple[str, ...]) -> None:
    """Set exactly which tenants may use BUSINESS_ID (共同利用業務設定)."""
    session = get_session()
    result = _run(lambda: set_joint_use(
        session, settings=CaSettings.from_config(current_app.config),
        system=get_by_business_id(session, well_formed_business_id(business_id)),
        tenant_codes=list(tenant_codes), actor=cli_actor()),
                  failure=AuditAction.TENANT_REJECTED, target=f"business_system:{business_id[:2]}")
    click.echo(f"{business_id}: {' '.join(t.code for t in result) or '(none)'}")


@click.group("operator", cls=AppGroup)
def operator_group() -> None:
    """操作者: register with certificate, import/export CSV, passwords, in-business IDs, revoke."""


@operator_group.command("register")
@click.option("--tenant", "tenant_code", required=True)
@click.option("--operator-id", required=True)
@click.option("--name", required=True)
@click.option("--business-ids", default="", help="permitted 業務IDs, e.g. 05,07")
@click.option("--department", default="")
@click.option("--email", default="")
@click.option("--auth-method", default="password", type=click.Choice(["password", "biometric"]))
@click.option("--role", default="operator", type=click.Choice(["operator", "tenant_manager", "business_admin"]))
@click.option("--administers", "administers_business_id", default="")
@click.option("--csr", "csr_path", type=input_file(), help="issue from this CSR instead of generating a key")
@click.option("--p12-out", type=OutputFile(new=True),
              help="where to write the PKCS#12 (created with mode 0600; must not exist)")
@click.option("--cert-out", type=OutputFile(), help="write the certificate (PEM)")
def operator_register(tenant_code: str, csr_path: Path | None, p12_out: Path | None, cert_out: Path | None,
                      **fields: Any) -> None:
    """操作者登録 + オペレータ証明書. Prints the one-time password and the PKCS#12 password."""
    if csr_path is None and p12_out is None:
        raise click.UsageError("give --p12-out (key generated here) or --csr")
    session = get_session()
    settings = CaSettings.from_config(current_app.config)

    def work() -> Any:
        csr_bytes = csr_path.read_bytes()[:settings.config["MAX_CSR_BYTES"] + 1] if csr_path else None
        return register_and_issue(session, scope=CLI_SCOPE, settings=settings,
                                  tenant=get_tenant(session, CLI_SCOPE, tenant_code),
                                  data=OperatorData.from_mapping(fields), password=None, actor=cli_actor(),
                                  csr_bytes=csr_bytes)

    result = _run(work, failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{tenant_code}/{fields['operator_id']}")
    issued = result.issued
    assert issued is not None
    if issued.pkcs12 is not None and p12_out is not None:
        write_secret(p12_out, issued.pkcs12.data)
        click.echo(f"PKCS#12 written to {p12_out}; its password (shown once): {issued.pkcs12.password}")
    if cert_out is not None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert_out.write_bytes(x509.load_der_x509_certificate(issued.certificate.der).public_bytes(
            serialization.Encoding.PEM))
    click.echo(f"registered {tenant_code}/{result.operator.operator_id}; certificate {issued.certificate.serial}")
    click.echo(f"one-time login password (shown once): {result.password}")


@operator_group.command("issue-pending")
@click.option("--tenant", "tenant_code", required=True)
@click.option("--out-dir", type=OutputDirectory(), required=True,
              help="directory for the PKCS#12 files (created 0700; files 0600)")
def operator_issue_pending(tenant_code: str, out_dir: Path) -> None:
    """オペレータ証明書 for every active operator without a live one (e.g. after import); prints the passwords."""

    from operators.models import Operator
    from operators.operator_certs import issue_operator_certificate, without_live_certificate
    from operators.tenancy import operators_of

    session = get_session()
    settings = CaSettings.from_config(current_app.config)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def work() -> list[Any]:
        tenant = get_tenant(session, CLI_SCOPE, tenant_code)
        pending = session.scalars(without_live_certificate(operators_of(CLI_SCOPE, tenant))
                                  .order_by(Operator.operator_id))
        return [issue_operator_certificate(session, settings=settings, operator=op, actor=cli_actor())
                for op in list(pending)]

    issued = _run(work, failure=AuditAction.ISSUANCE_REJECTED, target=f"tenant:{tenant_code[:20]}")
    for item in issued:
        assert item.pkcs12 is not None
        path = out_dir / item.pkcs12.filename
        write_secret(path, item.pkcs12.data)
        click.echo(f"{item.certificate.common_name}\t{path}\t{item.pkcs12.password}")
    click.echo(f"{len(issued)} certificates issued", err=True)


@operator_group.command("import")
@click.option("--tenant", "tenant_code", required=True)
@click.option("--drop-unpermitted", is_flag=True, help="drop 許可業務 the tenant may not use (migration)")
@click.argument("csv_path", type=input_file())
def operator_import(tenant_code: str, drop_unpermitted: bool, csv_path: Path) -> None:
    """一括登録 / 移行 from a CSV (UTF-8 or Shift_JIS); all or nothing, progress on stderr."""
    session = get_session()

    def work() -> int:
        tenant = get_tenant(session, CLI_SCOPE, tenant_code)
        raw = csv_path.open("rb").read(csv_io.MAX_CSV_BYTES + 1)
        if len(raw) > csv_io.MAX_CSV_BYTES:
            raise csv_io.CsvRowError(0, "the file is too large")
        rows = csv_io.validate(session, tenant=tenant, text=csv_io.decode(raw), drop_unpermitted=drop_unpermitted)
        done = 0
        for progress in csv_io.import_operators(session, scope=CLI_SCOPE, tenant=tenant, rows=rows,
                                                actor=cli_actor(), source=csv_path.name):
            click.echo(f"{progress.done}/{progress.total}", err=True)
            done = progress.done
        return done

    count = _run(work, failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{tenant_code[:20]}")
    click.echo(f"imported {count} operators into {tenant_code}")


@operator_group.command("export")
@click.option("--tenant", "tenant_code", required=True)
@click.option("--encoding", default="utf-8", type=click.Choice(["utf-8", "cp932"]))
@click.option("--out", type=OutputFile(), required=True)
@click.option("--operator-id", "operator_id", default="")
@click.option("--name", default="")
@click.option("--department", default="")
@click.option("--phone", default="")
@click.option("--email", default="")
@click.option("--info", default="")
@click.option("--extra-info", "extra_info", default="")
def operator_export(tenant_code: str, encoding: str, out: Path, **filters: str) -> None:
    """オペレータ情報出力 (CSV, no passwords); each filter is a substring match."""
    session = get_session()
    body = _run(lambda: csv_io.export_csv(session, scope=CLI_SCOPE, tenant=get_tenant(session, CLI_SCOPE, tenant_code),
                                          filters=filters, actor=cli_actor(), encoding=encoding),
                failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{tenant_code[:20]}")
    out.write_bytes(body)
    click.echo(f"written {out}")


@operator_group.command("passwords")
@click.option("--tenant", "tenant_code", required=True)
@click.option("--out", type=OutputFile(new=True), required=True,
              help="CSV of the new passwords (created with mode 0600; must not exist)")
@click.argument("operator_ids", nargs=-1, required=True)
def operator_passwords(tenant_code: str, out: Path, operator_ids: tuple[str, ...]) -> None:
    """パスワード一括変更."""
    session = get_session()

    def work() -> list[Any]:
        tenant = get_tenant(session, CLI_SCOPE, tenant_code)
        chosen = [get_operator(session, CLI_SCOPE, tenant, i) for i in operator_ids]
        return bulk_change_passwords(session, scope=CLI_SCOPE, tenant=tenant, operators=chosen, actor=cli_actor(),
                                     settings=LoginSettings.from_config(current_app.config))

    results = _run(work, failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{tenant_code[:20]}")
    write_secret(out, ("オペレータID,パスワード\r\n" + "".join(f"{o.operator_id},{p}\r\n" for o, p in results))
                  .encode("utf-8"))
    click.echo(f"{len(results)} passwords changed; written to {out}")


@operator_group.command("change-password")
@click.option("--tenant", "tenant_code", default="system", show_default=True)
@click.argument("operator_id")
def operator_change_password(tenant_code: str, operator_id: str) -> None:
    """Change an operator's own password, e.g. the one-time one, under the password policy.

    Prompts for the current password and the new one twice (without a terminal: three lines on stdin).
    """
    current = click.prompt("current password", hide_input=True)
    new = click.prompt("new password", hide_input=True, confirmation_prompt="new password (again)")
    session = get_session()

    def work() -> None:
        tenant = get_tenant(session, CLI_SCOPE, tenant_code)
        operator = get_operator(session, CLI_SCOPE, tenant, operator_id)
        if operator.auth_method is AuthMethod.BIOMETRIC:
            raise InvalidInput(_("このオペレータは生体認証でログインするため、パスワードはありません。"))
        change_password(session, operator=operator, current=current[:1024], new=new[:1024], confirm=new[:1024],
                        settings=LoginSettings.from_config(current_app.config), actor=cli_actor())

    _run(work, failure=AuditAction.PASSWORD_CHANGE_REJECTED, target=f"operator:{tenant_code[:20]}/{operator_id[:64]}")
    click.echo(f"password changed for {tenant_code}/{operator_id}; the operator's sessions have ended")


@operator_group.command("in-business-id")
@click.option("--tenant", "tenant_code", required=True)
@click.option("--business-id", required=True)
@click.option("--operator-id", required=True)
@click.option("--id", "in_business_id", required=True)
@click.option("--permissions", default="")
def operator_in_business_id(tenant_code: str, business_id: str, operator_id: str, in_business_id: str,
                            permissions: str) -> None:
    """業務内ID管理: map an operator to an in-business ID and permissions."""
    session = get_session()

    def work() -> Any:
        tenant = get_tenant(session, CLI_SCOPE, tenant_code)
        return set_in_business_id(session, operator=get_operator(session, CLI_SCOPE, tenant, operator_id),
                                  system=in_business_system(session, CLI_SCOPE, tenant, business_id),
                                  in_business_id=in_business_id, permissions=parse_permissions(permissions),
                                  actor=cli_actor())

    _run(work, failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{tenant_code}/{operator_id}")
    click.echo("ok")


@operator_group.command("revoke")
@click.option("--tenant", "tenant_code", required=True)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.argument("operator_id")
def operator_revoke(tenant_code: str, yes: bool, operator_id: str) -> None:
    """操作者失効: no login anywhere, every certificate revoked, biometrics removed; the record stays."""
    if not yes:
        click.confirm(f"revoke operator {tenant_code}/{operator_id}?", abort=True)
    session = get_session()

    def work() -> Any:
        tenant = get_tenant(session, CLI_SCOPE, tenant_code)
        return revoke_operator(session, scope=CLI_SCOPE, operator=get_operator(session, CLI_SCOPE, tenant, operator_id),
                               actor=cli_actor())

    result = _run(work, failure=AuditAction.OPERATOR_REJECTED, target=f"operator:{tenant_code}/{operator_id}")
    click.echo(f"revoked {operator_id}: {len(result.certificates)} certificates revoked, "
               f"{result.biometric_credentials_removed} biometric credentials removed")


def init_app(app: Flask) -> None:
    """Register the tenant and operator command groups."""
    app.cli.add_command(tenant_group)
    app.cli.add_command(operator_group)
