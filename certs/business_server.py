"""業務サーバ証明書: business server certificates issued from a CSR (seed 001 I.2.2(2)).

One service function, ``issue_business_server_certificate``, backs the web UI,
the REST API and the CLI. ``preview`` computes exactly what would be issued,
for the confirmation screen, with the same code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast

from cryptography import x509
from cryptography.x509.oid import NameOID
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ca.authority import CaSettings, current_issuer
from ca.csr import parse_csr
from ca.issuance import issue_certificate
from ca.models import Certificate, CertificateProfile
from ca.names import (
    allowed_host,
    allowed_hosts,
    check_subject_value,
    common_name_for,
    general_name_for_host,
    requested_names,
)
from ca.profiles import validity_days
from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import Forbidden, InvalidCsr
from operators.business_systems import (
    BusinessSystemData,
    find_by_business_id,
    save_and_audit,
)
from operators.models import BusinessSystem

# The subject as the seed's result screen shows it: 国名/地域, 都道府県, 市区町村, 組織, 部門名, 一般名.
SUBJECT_ORDER = (
    (NameOID.COUNTRY_NAME, lazy_gettext("証明書の発行先(国名/地域)")),
    (NameOID.STATE_OR_PROVINCE_NAME, lazy_gettext("証明書の発行先(都道府県)")),
    (NameOID.LOCALITY_NAME, lazy_gettext("証明書の発行先(市区町村)")),
    (NameOID.ORGANIZATION_NAME, lazy_gettext("証明書の発行先(組織)")),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, lazy_gettext("証明書の発行先(部門名)")),
    (NameOID.COMMON_NAME, lazy_gettext("証明書の発行先(一般名)")),
)


@dataclass(frozen=True)
class BusinessServerPreview:
    """What will be certified: subject (C forced to JP) and SANs from the system's URL hosts."""

    csr: x509.CertificateSigningRequest
    subject: x509.Name
    sans: tuple[x509.GeneralName, ...]

    def subject_rows(self) -> list[tuple[str, str]]:
        rows = []
        for oid, label in SUBJECT_ORDER:
            attrs = self.subject.get_attributes_for_oid(oid)
            rows.append((label, str(attrs[0].value) if attrs else ""))
        return rows


def preview(data: BusinessSystemData, csr_bytes: bytes, *, max_csr_bytes: int) -> BusinessServerPreview:
    """Validate the CSR and compute subject and SANs; raises ``InvalidCsr``/``InvalidInput``.

    The SAN lists the business system's registered hosts. Every name the CSR asks for (its CN,
    a requested subjectAltName) must be one of them; subject values are copied as given or refused.
    """
    csr = parse_csr(csr_bytes, max_bytes=max_csr_bytes)
    hosts = data.hosts()
    subject = csr.subject
    for attr in subject.get_attributes_for_oid(NameOID.COUNTRY_NAME):
        country = check_subject_value(NameOID.COUNTRY_NAME, attr.value, from_csr=True)
        if country.upper() != "JP":
            raise InvalidCsr(_("証明書発行要求の国名(C)は JP にしてください(%(value)s)。", value=country))
    attrs: list[x509.NameAttribute[str]] = [x509.NameAttribute(NameOID.COUNTRY_NAME, "JP")]
    for oid, _label in SUBJECT_ORDER[1:-1]:
        for attr in subject.get_attributes_for_oid(oid):
            value = check_subject_value(oid, attr.value, from_csr=True)
            if value.strip():
                attrs.append(x509.NameAttribute(oid, value))
    cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) > 1:
        raise InvalidCsr(_("証明書発行要求の一般名(CN)は一つにしてください。"))
    requested = check_subject_value(NameOID.COMMON_NAME, cns[0].value, from_csr=True) if cns else ""
    allowed_hosts(requested_names(csr), registered=hosts, from_csr=True)
    common_name = (allowed_host(requested, registered=hosts, from_csr=True) if requested.strip()
                   else common_name_for(hosts))
    if common_name is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    sans = tuple(general_name_for_host(h) for h in hosts)
    return BusinessServerPreview(csr=csr, subject=x509.Name(attrs), sans=sans)


@dataclass(frozen=True)
class LatestCertificate:
    """The id and serial of a business system's newest server certificate (what a re-issue names)."""

    id: int
    serial: str


# Built once from the table's columns (a plain statement, no ORM loading); reads two columns through
# ix_certificate_business_system_latest, never the DER.
_CERTIFICATES = cast(Table, Certificate.__table__)
_LATEST = (select(_CERTIFICATES.c.id, _CERTIFICATES.c.serial)
           .where(_CERTIFICATES.c.business_system_id == bindparam("system_id"),
                  _CERTIFICATES.c.profile == CertificateProfile.BUSINESS_SERVER)
           .order_by(_CERTIFICATES.c.id.desc()).limit(1))


def latest_certificate(session: Session, business_system_id: int) -> LatestCertificate | None:
    """The newest business server certificate of a business system."""
    session.flush()  # certificates added through the ORM in this transaction count too
    row = session.connection().execute(_LATEST, {"system_id": business_system_id}).first()
    return LatestCertificate(id=row.id, serial=row.serial) if row is not None else None


def _registered(session: Session, data: BusinessSystemData, *, may_change_system: bool) -> BusinessSystem | None:
    """The business system as registered when ``data`` describes it unchanged (the common case, e.g. a
    renewal script: one lookup); None when it is new or changed, which needs ``may_change_system``
    (業務システム管理): the certificate's names come from the system's URLs, so whoever may only issue must
    not choose them. Checked before anything else of the request."""
    system = find_by_business_id(session, data.business_id)
    if system is not None and all(getattr(system, name) == value for name, value in asdict(data).items()):
        return system
    if may_change_system:
        return None
    if system is None:
        raise Forbidden(_("業務ID %(business_id)s の業務システムは登録されていません。登録には業務システム管理の"
                          "権限 (business_systems.manage) が必要です。", business_id=data.business_id))
    changed = ", ".join(name for name, value in asdict(data).items() if getattr(system, name) != value)
    raise Forbidden(_("業務システムの登録内容 (%(fields)s) の変更には業務システム管理の権限 "
                      "(business_systems.manage) が必要です。登録内容のまま発行するには、変更しない項目を"
                      "送らないでください。", fields=changed))


def issue_business_server_certificate(
    session: Session,
    *,
    settings: CaSettings,
    data: BusinessSystemData,
    csr_bytes: bytes,
    actor: Actor,
    may_change_system: bool,
) -> Certificate:
    """Save the business system (``may_change_system``: the caller may register or change it) and issue its
    server certificate, in the caller's transaction."""
    registered = _registered(session, data, may_change_system=may_change_system)
    planned = preview(data, csr_bytes, max_csr_bytes=settings.config["MAX_CSR_BYTES"])
    system, created = (registered, False) if registered is not None else save_and_audit(session, data, actor)
    previous = None if created else latest_certificate(session, system.id)
    public_key = planned.csr.public_key()
    cert = issue_certificate(
        session,
        issuer=current_issuer(session, settings),
        profile=CertificateProfile.BUSINESS_SERVER,
        subject=planned.subject,
        public_key=public_key,  # type: ignore[arg-type]  # vetted by parse_csr
        sans=planned.sans,
        days=validity_days(CertificateProfile.BUSINESS_SERVER, settings.config),
        issued_by=actor.name,
        business_system_id=system.id,
        replaces_id=previous.id if previous else None,
    )
    set_committed_value(cert, "business_system", system)  # the caller's JSON needs it: no second lookup
    record_event(session, action=AuditAction.CERTIFICATE_ISSUED, actor=actor,
                 target=f"certificate:{cert.serial}",
                 detail={"profile": str(cert.profile), "subject": cert.subject, "sans": cert.sans,
                         "business_id": system.business_id,
                         "replaces": previous.serial if previous else None})
    return cert
