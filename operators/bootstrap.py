"""Initialising an instance once: schema, CA hierarchy, system tenant, bootstrap admin, TLS certificate.

``init_instance`` is idempotent: a second run changes nothing that exists and
only renews the server's TLS certificate when it is missing or about to expire.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.authority import CaSettings, chain_certificates, current_issuer, init_hierarchy, pem_bundle
from ca.issuance import issue_certificate
from ca.keys import generate_private_key
from ca.models import CertificateAuthority, CertificateProfile
from ca.profiles import validity_days
from ca.revocation import refresh
from db import utcnow
from operators.audit import SYSTEM_ACTOR, AuditAction, record_event
from operators.auth import ensure_system_tenant
from operators.instance_settings import given_settings, seed_at_init
from operators.models import Operator, Role
from operators.passwords import generate_password, hash_password

BOOTSTRAP_ADMIN_ID = "admin"
TLS_HOSTS = ("localhost", "127.0.0.1", "::1")
TLS_RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class InitReport:
    created_ca: bool
    admin_password: str | None  # shown once, never stored in the clear
    tls_issued: bool


def tls_paths(instance_dir: Path) -> dict[str, Path]:
    tls = instance_dir / "tls"
    return {"cert": tls / "server.pem", "key": tls / "server.key", "ca": tls / "ca-bundle.pem"}


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
    has_admin = session.scalar(select(Operator.id).where(Operator.role == Role.SYSTEM_ADMIN).limit(1))
    if has_admin is None:
        password = generate_password()
        session.add(Operator(tenant_id=tenant.id, operator_id=BOOTSTRAP_ADMIN_ID, name="システム管理者",
                             role=Role.SYSTEM_ADMIN, password_hash=hash_password(password),
                             must_change_password=True))
        record_event(session, action=AuditAction.BOOTSTRAP_ADMIN_CREATED, actor=SYSTEM_ACTOR,
                     target=f"operator:{tenant.code}/{BOOTSTRAP_ADMIN_ID}")
    session.commit()
    tls_issued = ensure_tls_certificate(session, settings)
    refresh(session, settings)  # OCSP responders and first CRLs: the PKI URLs answer from the start
    session.commit()
    return InitReport(created_ca=not had_ca, admin_password=password, tls_issued=tls_issued)


def ensure_tls_certificate(session: Session, settings: CaSettings) -> bool:
    """Issue the server's own TLS certificate for localhost unless a fresh one is on disk."""
    paths = tls_paths(settings.instance_dir)
    if paths["cert"].exists() and paths["key"].exists():
        current = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
        if current.not_valid_after_utc - utcnow() > TLS_RENEW_BEFORE:
            return False
    key = generate_private_key(settings.key_algorithm)
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, settings.organization),
                         x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    sans: list[x509.GeneralName] = []
    for host in TLS_HOSTS:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    row = issue_certificate(session, issuer=current_issuer(session, settings), profile=CertificateProfile.TLS,
                            subject=subject, public_key=key.public_key(), sans=sans,
                            days=validity_days(CertificateProfile.TLS, settings.config),
                            issued_by=SYSTEM_ACTOR.name, details={"purpose": "opauth server TLS"})
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
