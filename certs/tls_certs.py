"""SSL通信証明書: certificates for the TLS channels themselves (発行・削除・照会・再発行).

A TLS communication certificate (serverAuth + clientAuth) is bound to a tenant
and to a business system or a terminal. Business servers present one when they
call opauth's machine API; terminals present one for mutual TLS. The key comes
from a CSR, or is generated here and delivered once in a password-protected
PKCS#12 (``ca/delivery.py``). Delete = revoke (cessationOfOperation), so it
leaves the active list; reissue = a new certificate, the old one superseded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID
from flask_babel import lazy_gettext
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.authority import CaSettings, chain_certificates, current_issuer
from ca.csr import parse_csr
from ca.delivery import Pkcs12Bundle, build_pkcs12
from ca.issuance import issue_certificate
from ca.keys import generate_private_key
from ca.models import Certificate, CertificateProfile, RevocationReason
from ca.names import allowed_hosts, check_host, check_subject_value, common_name_for, general_name_for_host
from ca.profiles import validity_days
from ca.revocation import revoke
from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import Conflict, InvalidInput, NotFound
from operators.business_systems import find_by_business_id, registered_hosts
from operators.models import BusinessSystem, Tenant, TenantKind
from operators.tenancy import Scope, get_tenant, joint_use_systems

_TERMINAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class TlsCertificateData:
    """Validated input: whose certificate (tenant + business system or terminal) and for which hosts."""

    tenant_code: str
    business_id: str
    terminal: str
    hosts: tuple[str, ...]

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> TlsCertificateData:
        values = {k: data.get(k, "") for k in ("tenant", "business_id", "terminal", "hosts")}
        for key, value in values.items():
            if not isinstance(value, (str, list)):
                raise InvalidInput(lazy_gettext("%(field)s は文字列で指定してください。", field=key))
        tenant = str(values["tenant"]).strip()
        business_id = str(values["business_id"]).strip()
        terminal = str(values["terminal"]).strip()
        raw_hosts = values["hosts"]
        items = raw_hosts if isinstance(raw_hosts, list) else re.split(r"[\s,]+", str(raw_hosts))
        if not tenant:
            raise InvalidInput(lazy_gettext("市町村・任意団体 (tenant) は必須です。"))
        if bool(business_id) == bool(terminal):
            raise InvalidInput(lazy_gettext(
                "証明書の対象として 業務ID (business_id) か 端末名 (terminal) のどちらか一方だけを指定してください。"))
        if terminal and not _TERMINAL.match(terminal):
            raise InvalidInput(lazy_gettext(
                "端末名 (terminal) に使えるのは半角英数字と . _ - だけです（63文字以内）。"))
        hosts: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise InvalidInput(lazy_gettext("ホスト名 (hosts) にはホスト名を指定してください。"))
            if item.strip():
                host = check_host(item.strip(), "hosts", label=str(lazy_gettext("ホスト名または IP アドレス")))
                if host not in hosts:
                    hosts.append(host)
        if not hosts:
            raise InvalidInput(lazy_gettext("ホスト名または IP アドレス (hosts) を一つ以上指定してください。"))
        if len(hosts) > 20:
            raise InvalidInput(lazy_gettext("ホスト名は20個までです。"))
        return cls(tenant_code=tenant, business_id=business_id, terminal=terminal, hosts=tuple(hosts))


@dataclass(frozen=True)
class IssuedTlsCertificate:
    certificate: Certificate
    pkcs12: Pkcs12Bundle | None  # only when the key was generated here; hand it out once


def _subject(tenant: Tenant, system: BusinessSystem | None, terminal: str, hosts: tuple[str, ...]) -> x509.Name:
    """C=JP, O=tenant, OU=business system or terminal, CN=first host that fits; values refused, never cut."""
    values = [
        (NameOID.COUNTRY_NAME, "JP"),
        (NameOID.ORGANIZATION_NAME, tenant.name),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, f"{system.business_id} {system.name}" if system else f"terminal {terminal}"),
    ]
    common_name = common_name_for(hosts)
    if common_name is not None:
        values.append((NameOID.COMMON_NAME, common_name))
    return x509.Name([x509.NameAttribute(oid, check_subject_value(oid, value, from_csr=False))
                      for oid, value in values])


def _ensure_uses(session: Session, tenant: Tenant, system: BusinessSystem) -> None:
    """A certificate bound to a business system names a tenant that uses it (共同利用業務設定), or the システム管理
    tenant, which runs the installation and its business servers; anything else is ``Conflict``."""
    if tenant.kind is TenantKind.SYSTEM or any(s.id == system.id for s in joint_use_systems(session, tenant)):
        return
    raise Conflict(lazy_gettext(
        "%(tenant)s（%(code)s）は業務 %(business_id)s %(name)s を共同利用していません。業務システムの SSL通信証明書は、"
        "その業務の共同利用許可団体（共同利用業務設定）かシステム管理の団体にだけ発行できます。",
        tenant=tenant.name, code=tenant.code, business_id=system.business_id, name=system.name))


def _sign(session: Session, *, settings: CaSettings, tenant: Tenant, system: BusinessSystem | None,
          terminal: str, hosts: tuple[str, ...], csr_bytes: bytes | None, actor: Actor,
          replaces: Certificate | None) -> IssuedTlsCertificate:
    if system is not None:
        # Checked here, on issue and on reissue alike: the system's URLs and its joint use may have changed since.
        _ensure_uses(session, tenant, system)
        hosts = tuple(allowed_hosts(hosts, registered=registered_hosts(system), from_csr=False))
    key = None
    if csr_bytes is not None:
        public_key = parse_csr(csr_bytes, max_bytes=settings.config["MAX_CSR_BYTES"]).public_key()
    else:
        key = generate_private_key(settings.key_algorithm)
        public_key = key.public_key()
    row = issue_certificate(
        session, issuer=current_issuer(session, settings), profile=CertificateProfile.TLS,
        subject=_subject(tenant, system, terminal, hosts), public_key=public_key,  # type: ignore[arg-type]
        sans=[general_name_for_host(h) for h in hosts],
        days=validity_days(CertificateProfile.TLS, settings.config), issued_by=actor.name,
        business_system_id=system.id if system else None, tenant_id=tenant.id,
        replaces_id=replaces.id if replaces else None,
        details={"kind": "ssl_communication", "terminal": terminal, "key_generated_here": key is not None})
    record_event(session, action=AuditAction.CERTIFICATE_ISSUED, actor=actor, target=f"certificate:{row.serial}",
                 detail={"profile": "tls", "tenant": tenant.code, "business_id": system.business_id if system
                         else None, "terminal": terminal, "sans": row.sans,
                         "replaces": replaces.serial if replaces else None, "key_generated_here": key is not None})
    bundle = None
    if key is not None:
        bundle = build_pkcs12(key=key, certificate=x509.load_der_x509_certificate(row.der),
                              chain=chain_certificates(session), friendly_name=hosts[0],
                              filename=f"ssl-{row.serial[:16]}.p12")
    return IssuedTlsCertificate(certificate=row, pkcs12=bundle)


def issue_tls_certificate(session: Session, *, settings: CaSettings, scope: Scope, data: TlsCertificateData,
                          csr_bytes: bytes | None, actor: Actor) -> IssuedTlsCertificate:
    """SSL通信証明書発行: from the CSR, or with a key generated here (PKCS#12 returned once)."""
    tenant = get_tenant(session, scope, data.tenant_code)
    system = None
    if data.business_id:
        system = find_by_business_id(session, data.business_id)
        if system is None:
            raise NotFound(lazy_gettext("業務ID %(id)s の業務システムはありません。", id=data.business_id))
    return _sign(session, settings=settings, tenant=tenant, system=system, terminal=data.terminal,
                 hosts=data.hosts, csr_bytes=csr_bytes, actor=actor, replaces=None)


def get_tls_certificate(session: Session, *, scope: Scope, serial: str) -> Certificate:
    """One SSL communication certificate the scope may see (other tenants' are ``NotFound``)."""
    from ca.inquiry import get_certificate

    cert = get_certificate(session, serial=serial)
    if cert.profile is not CertificateProfile.TLS or cert.tenant_id is None:
        raise NotFound(lazy_gettext("指定された SSL 通信証明書はありません。"))
    tenant = session.get(Tenant, cert.tenant_id)
    assert tenant is not None
    get_tenant(session, scope, tenant.code)  # raises NotFound outside the scope
    return cert


def delete_tls_certificate(session: Session, *, scope: Scope, serial: str, actor: Actor) -> Certificate:
    """削除: revoke (cessationOfOperation); it leaves the active list and fails mutual TLS at once."""
    cert = get_tls_certificate(session, scope=scope, serial=serial)
    return revoke(session, certificate=cert, reason=RevocationReason.CESSATION_OF_OPERATION, actor=actor)


def reissue_tls_certificate(session: Session, *, settings: CaSettings, scope: Scope, serial: str,
                            csr_bytes: bytes | None, actor: Actor) -> IssuedTlsCertificate:
    """再発行: same binding and host names, a new key (from the CSR or generated); the old one superseded."""
    old = get_tls_certificate(session, scope=scope, serial=serial)
    tenant = session.get(Tenant, old.tenant_id)
    assert tenant is not None
    system = session.get(BusinessSystem, old.business_system_id) if old.business_system_id else None
    hosts = tuple(s.split(":", 1)[1] for s in old.sans)
    issued = _sign(session, settings=settings, tenant=tenant, system=system,
                   terminal=str((old.details or {}).get("terminal", "")), hosts=hosts, csr_bytes=csr_bytes,
                   actor=actor, replaces=old)
    if old.revoked_at is None:
        revoke(session, certificate=old, reason=RevocationReason.SUPERSEDED, actor=actor)
    return issued


def tls_certificates(session: Session, *, scope: Scope, active_only: bool) -> list[Certificate]:
    """SSL communication certificates of the tenants the scope may see, newest first."""
    from operators.tenancy import visible_tenants

    tenant_ids = select(visible_tenants(scope).subquery().c.id)
    query = select(Certificate).where(Certificate.profile == CertificateProfile.TLS,
                                      Certificate.tenant_id.in_(tenant_ids))
    if active_only:
        query = query.where(Certificate.revoked_at.is_(None))
    return list(session.scalars(query.order_by(Certificate.id.desc()).limit(500)))
