"""Initialising an instance once: schema, CA hierarchy, system tenant, bootstrap admin, TLS certificate.

``init_instance`` is idempotent: a second run changes nothing that exists and
only re-issues the server's TLS certificate when it is missing, about to expire
(``SERVER_CERT_RENEW_DAYS``) or does not cover the configured names.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.orm import Session

import db
from ca.authority import CaSettings, chain_certificates, current_issuer, init_hierarchy, pem_bundle
from ca.issuance import issue_certificate
from ca.keys import generate_private_key
from ca.models import Certificate, CertificateAuthority, CertificateProfile
from ca.profiles import validity_days
from ca.revocation import refresh
from config.serving import tls_paths
from db import get_session, utcnow
from kernel.audit import SYSTEM_ACTOR, AuditAction, record_event
from kernel.cli import fail
from kernel.errors import OpauthError
from operators.instance_settings import given_settings, seed_at_init
from operators.login.auth import ensure_system_tenant
from operators.login.passwords import generate_password, hash_password
from operators.models import Operator, Role

BOOTSTRAP_ADMIN_ID = "admin"
TLS_HOSTS = ("localhost", "127.0.0.1", "::1")
# The bootstrap administrator's one-time password goes to this file (mode 0600), never to a log.
INITIAL_PASSWORD_FILE = "initial-admin-password"


@dataclass(frozen=True)
class InitReport:
    created_ca: bool
    admin_password: str | None  # shown once, never stored in the clear
    tls_issued: bool
    admin_password_file: Path | None = None  # where the one-time password was written (mode 0600)


def initial_password_path(instance_dir: Path) -> Path:
    """The 0600 file holding the bootstrap administrator's one-time password."""
    return instance_dir / INITIAL_PASSWORD_FILE


def init_instance(session: Session, settings: CaSettings) -> InitReport:
    """Create whatever is missing; commits in steps so nothing is half-initialised."""
    # First, before the CA exists: the URLs it signs come from the instance's settings from now on.
    seed_at_init(session, config=settings.config, given=given_settings(), actor=SYSTEM_ACTOR)
    had_ca = session.scalar(select(CertificateAuthority.id).limit(1)) is not None
    if not had_ca:
        issuing = init_hierarchy(session, settings, actor=SYSTEM_ACTOR.name)
        record_event(session, action=AuditAction.CA_INITIALISED, actor=SYSTEM_ACTOR,
                     target=f"ca:{issuing.id}", detail={"subject": issuing.subject,
                                                         "key_algorithm": settings.key_algorithm})
    tenant = ensure_system_tenant(session)
    password = None
    password_file = None
    has_admin = session.scalar(select(Operator.id).where(Operator.role == Role.SYSTEM_ADMIN).limit(1))
    if has_admin is None:
        password = generate_password()
        session.add(Operator(tenant_id=tenant.id, operator_id=BOOTSTRAP_ADMIN_ID, name="システム管理者",
                             role=Role.SYSTEM_ADMIN, password_hash=hash_password(password),
                             must_change_password=True))
        record_event(session, action=AuditAction.BOOTSTRAP_ADMIN_CREATED, actor=SYSTEM_ACTOR,
                     target=f"operator:{tenant.code}/{BOOTSTRAP_ADMIN_ID}")
        # Out of the process's output, which may be a log or the journal: the operator reads the file.
        # Written before the commit, so an administrator never exists whose password nobody has.
        password_file = initial_password_path(settings.instance_dir)
        _write(password_file, f"{password}\n".encode(), 0o600)
    else:
        _remove_spent_password_file(session, settings.instance_dir, tenant_id=tenant.id)
    session.commit()
    tls_issued = ensure_tls_certificate(session, settings)
    refresh(session, settings)  # OCSP responders and first CRLs: the PKI URLs answer from the start
    session.commit()
    return InitReport(created_ca=not had_ca, admin_password=password, tls_issued=tls_issued,
                      admin_password_file=password_file)


def _remove_spent_password_file(session: Session, instance_dir: Path, *, tenant_id: int) -> None:
    # Once the one-time password has been changed the file holds nothing of use; a password file must not linger.
    path = initial_password_path(instance_dir)
    if not path.exists():
        return
    admin = session.scalar(select(Operator).where(Operator.tenant_id == tenant_id,
                                                  Operator.operator_id == BOOTSTRAP_ADMIN_ID))
    if admin is None or not admin.must_change_password:
        path.unlink()


def server_names(config: dict[str, object]) -> list[str]:
    """The names opauth's own TLS certificate must cover: the public host, SERVER_NAMES, then loopback."""
    names: list[str] = []
    public_host = urlsplit(str(config["PUBLIC_BASE_URL"])).hostname
    listed = [n.strip().lower() for n in str(config.get("SERVER_NAMES", "")).split(",")]
    for name in [public_host or "", *listed, *TLS_HOSTS]:
        name = name.strip("[]").rstrip(".")
        if name and name not in names:
            names.append(name)
    return names


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _covers(cert: x509.Certificate, wanted: list[x509.GeneralName]) -> bool:
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(wanted) == set(present)


def ensure_tls_certificate(session: Session, settings: CaSettings) -> bool:
    """Issue opauth's own TLS certificate unless the one on disk is fresh and names exactly what is configured.

    Re-issued (with a new key) when missing, when fewer than ``SERVER_CERT_RENEW_DAYS`` remain, or when
    the public host or ``SERVER_NAMES`` changed; the file is replaced atomically and read by nginx at start.
    """
    paths = tls_paths(settings.instance_dir)
    names = server_names(settings.config)
    sans = [_general_name(n) for n in names]
    replaces_id = None
    if paths["cert"].exists() and paths["key"].exists():
        current = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
        renew_before = timedelta(days=int(settings.config.get("SERVER_CERT_RENEW_DAYS", 30)))
        if current.not_valid_after_utc - utcnow() > renew_before and _covers(current, sans):
            return False
        # Not revoked: a running nginx keeps serving it until restarted; it simply expires.
        fingerprint = hashlib.sha256(current.public_bytes(serialization.Encoding.DER)).hexdigest()
        replaces_id = session.scalar(select(Certificate.id).where(Certificate.fingerprint_sha256 == fingerprint))
    key = generate_private_key(settings.key_algorithm)
    common_name = next((n for n in names if isinstance(_general_name(n), x509.DNSName)), "localhost")
    # Domain-validated shape (CN only): an O without L/ST breaks the CA/B Forum OV subject rules.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    row = issue_certificate(session, issuer=current_issuer(session, settings), profile=CertificateProfile.TLS,
                            subject=subject, public_key=key.public_key(), sans=sans,
                            days=validity_days(CertificateProfile.TLS, settings.config),
                            issued_by=SYSTEM_ACTOR.name, replaces_id=replaces_id,
                            details={"purpose": "opauth server TLS"})
    record_event(session, action=AuditAction.CERTIFICATE_ISSUED, actor=SYSTEM_ACTOR,
                 target=f"certificate:{row.serial}", detail={"profile": "tls", "sans": row.sans})
    chain = chain_certificates(session)
    session.commit()  # recorded first; only then does the certificate leave the database
    leaf = x509.load_der_x509_certificate(row.der)
    _write(paths["key"], key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(settings.passphrase)), 0o600)
    _write(paths["cert"], pem_bundle([leaf, *chain[:-1]]), 0o644)
    _write(paths["ca"], pem_bundle(chain), 0o644)
    return True


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


@click.command("init")
@with_appcontext
def init_command() -> None:
    """Create the database schema, CA hierarchy, bootstrap administrator and TLS certificate (idempotent)."""
    db.upgrade(current_app.config["DATABASE_URL"])
    settings = CaSettings.from_config(current_app.config)
    try:
        report = init_instance(get_session(), settings)
    except OpauthError as exc:  # e.g. OPAUTH_PKI_BASE_URL disagrees with the instance's stored value
        fail(exc)
        return
    click.echo("CA hierarchy created." if report.created_ca else "CA hierarchy already present: reused.")
    if report.tls_issued:
        click.echo(f"TLS certificate for localhost written to {tls_paths(settings.instance_dir)['cert']}")
    if report.admin_password:
        _announce_bootstrap_admin(report.admin_password, report.admin_password_file)


def _announce_bootstrap_admin(password: str, path: Path | None) -> None:
    # stdout of `make run` may be a log file or the journal: the password itself only goes to a terminal.
    click.echo("")
    click.echo("  Bootstrap administrator (change the password at first login):")
    click.echo("    tenant:      system (システム管理)")
    click.echo(f"    operator ID: {BOOTSTRAP_ADMIN_ID}")
    if sys.stdout.isatty():
        click.echo(f"    password:    {password}  (one-time)")
    click.echo(f"    the one-time password is in {path} (mode 0600); delete the file after the first login")
    click.echo("")


@click.command("db-upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply database migrations (Alembic) up to the newest revision."""
    db.upgrade(current_app.config["DATABASE_URL"])
    click.echo("database schema is up to date")


def init_app(app: Flask) -> None:
    """Register ``flask init`` and ``flask db-upgrade``."""
    app.cli.add_command(init_command)
    app.cli.add_command(db_upgrade)
