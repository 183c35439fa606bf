"""The CA hierarchy: created once at init (root + issuing CA), then loaded to sign."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from flask_babel import lazy_gettext
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from ca.issuance import Issuer, issue_certificate
from ca.keys import Signer, SoftwareSigner, generate_private_key, load_signer, store_software_key
from ca.models import CaKind, CertificateAuthority, CertificateProfile
from ca.profiles import pki_urls, validity_days
from db import utcnow
from kernel.errors import CaNotInitialised


@dataclass(frozen=True)
class CaSettings:
    """The part of the configuration the CA needs (explicit, so services need no Flask)."""

    instance_dir: Path
    passphrase: bytes
    key_algorithm: str
    pki_base_url: str
    organization: str
    config: dict[str, Any]
    # Pinned settings (config.PINNED) whose OPAUTH_* value differs from the instance's: no issuance then.
    conflicts: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CaSettings:
        from ca.keys import ensure_passphrase

        instance = Path(config["INSTANCE_DIR"])
        return cls(
            instance_dir=instance,
            passphrase=ensure_passphrase(instance, config["KEY_PASSPHRASE"]),
            key_algorithm=config["KEY_ALGORITHM"],
            pki_base_url=config["PKI_BASE_URL"],
            organization=config["ORGANIZATION"],
            config=config,
            conflicts=tuple(config.get("PINNED_CONFLICTS", ())),
        )


_signer_cache: dict[tuple[str, str, str], Signer] = {}
_signer_lock = threading.Lock()


def signer_for(settings: CaSettings, key_uri: str) -> Signer:
    """The signer behind ``key_uri``, opened once per process (CA and OCSP responder keys alike)."""
    # The passphrase is part of the key: a wrong one must fail even if the key was opened before.
    cache_key = (str(settings.instance_dir), key_uri, hashlib.sha256(settings.passphrase).hexdigest())
    with _signer_lock:
        signer = _signer_cache.get(cache_key)
        if signer is None:
            signer = load_signer(key_uri, base=settings.instance_dir, passphrase=settings.passphrase)
            _signer_cache[cache_key] = signer
        return signer


def active_authority(session: Session, kind: CaKind = CaKind.ISSUING) -> CertificateAuthority:
    ca = session.scalar(
        select(CertificateAuthority)
        .where(CertificateAuthority.kind == kind, CertificateAuthority.active.is_(True))
        .order_by(CertificateAuthority.id.desc())
    )
    if ca is None:
        raise _not_initialised()
    return ca


def _not_initialised() -> CaNotInitialised:
    return CaNotInitialised(lazy_gettext("認証局が初期化されていません。`flask --app app init` を実行してください。"))


def issuer_for(settings: CaSettings, ca: CertificateAuthority, signer: Signer | None = None) -> Issuer:
    """An ``Issuer`` that signs with ``ca``'s key (loaded from its key URI unless given)."""
    return _issuer(settings, authority_id=ca.id, cert_der=ca.cert_der, key_uri=ca.key_uri, signer=signer)


@dataclass(frozen=True)
class _CaCertificate:
    """What signing needs from a CA's own certificate."""

    name: x509.Name
    not_after: datetime


# A CA's certificate never changes once made, so it is parsed once per process, keyed by its bytes (the same
# id in another database, or a new CA, is another key). Bounded: a process sees a handful of CAs.
_parsed_ca_certificates: dict[bytes, _CaCertificate] = {}
_PARSED_LIMIT = 64


def _ca_certificate(der: bytes) -> _CaCertificate:
    parsed = _parsed_ca_certificates.get(der)
    if parsed is None:
        cert = x509.load_der_x509_certificate(der)
        parsed = _CaCertificate(name=cert.subject, not_after=cert.not_valid_after_utc)
        if len(_parsed_ca_certificates) >= _PARSED_LIMIT:
            _parsed_ca_certificates.clear()
        _parsed_ca_certificates[der] = parsed
    return parsed


def _issuer(settings: CaSettings, *, authority_id: int, cert_der: bytes, key_uri: str,
            signer: Signer | None = None) -> Issuer:
    parsed = _ca_certificate(cert_der)
    return Issuer(
        authority_id=authority_id,
        name=parsed.name,
        signer=signer or signer_for(settings, key_uri),
        urls=pki_urls(settings.pki_base_url, authority_id),
        not_after=parsed.not_after,
        policy_oid=str(settings.config.get("CERTIFICATE_POLICY_OID") or "") or None,
        refusal=" ".join(settings.conflicts),
    )


# The active issuing CA as three columns, read on every issuance (a rotation applies to the next certificate);
# built once from the table's columns (a plain statement, no ORM loading).
_AUTHORITIES = cast(Table, CertificateAuthority.__table__)
_ACTIVE_ISSUING = (select(_AUTHORITIES.c.id, _AUTHORITIES.c.cert_der, _AUTHORITIES.c.key_uri)
                   .where(_AUTHORITIES.c.kind == CaKind.ISSUING, _AUTHORITIES.c.active.is_(True))
                   .order_by(_AUTHORITIES.c.id.desc()).limit(1))


def current_issuer(session: Session, settings: CaSettings) -> Issuer:
    """The active issuing CA, ready to sign."""
    session.flush()  # a CA added or retired in this transaction counts
    row = session.connection().execute(_ACTIVE_ISSUING).first()
    if row is None:
        raise _not_initialised()
    return _issuer(settings, authority_id=row.id, cert_der=row.cert_der, key_uri=row.key_uri)


def authorities(session: Session) -> list[CertificateAuthority]:
    """All CAs, root first."""
    return list(session.scalars(select(CertificateAuthority).order_by(CertificateAuthority.id)))


def chain_certificates(session: Session) -> list[x509.Certificate]:
    """The active issuing CA's certificate followed by its root's."""
    issuing = active_authority(session)
    chain = [x509.load_der_x509_certificate(issuing.cert_der)]
    parent = issuing.parent
    while parent is not None:
        chain.append(x509.load_der_x509_certificate(parent.cert_der))
        parent = parent.parent
    return chain


def _ca_name(settings: CaSettings, common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, settings.organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _new_authority(session: Session, settings: CaSettings, *, kind: CaKind, name: str,
                   parent: CertificateAuthority | None) -> tuple[CertificateAuthority, Signer]:
    key = generate_private_key(settings.key_algorithm)
    stamp = utcnow().strftime("%Y%m%d%H%M%S")
    key_uri = f"file:keys/{kind.value}-ca-{stamp}.key.pem"
    store_software_key(key, uri=key_uri, base=settings.instance_dir, passphrase=settings.passphrase)
    ca = CertificateAuthority(name=name, kind=kind, parent_id=parent.id if parent else None,
                              subject="", cert_der=b"", key_uri=key_uri,
                              not_before=utcnow(), not_after=utcnow(), active=True)
    session.add(ca)
    session.flush()  # the id names the CA's URLs
    return ca, SoftwareSigner(key)


def init_hierarchy(session: Session, settings: CaSettings, *, actor: str) -> CertificateAuthority:
    """Create root and issuing CA unless an active issuing CA exists; return the issuing CA."""
    existing = session.scalar(select(CertificateAuthority).where(
        CertificateAuthority.kind == CaKind.ISSUING, CertificateAuthority.active.is_(True)))
    if existing is not None:
        return existing
    org = settings.organization
    root, root_signer = _new_authority(session, settings, kind=CaKind.ROOT, name=f"{org} Root CA",
                                       parent=None)
    root_name = _ca_name(settings, f"{org} Root CA")
    root_cert_row = issue_certificate(
        session,
        issuer=Issuer(authority_id=root.id, name=root_name, signer=root_signer, urls=None, not_after=None),
        profile=CertificateProfile.ROOT_CA, subject=root_name, public_key=root_signer.public_key(),
        days=validity_days(CertificateProfile.ROOT_CA, settings.config), issued_by=actor, self_signed=True)
    _attach_certificate(root, root_cert_row.der)

    issuing, issuing_signer = _new_authority(session, settings, kind=CaKind.ISSUING,
                                             name=f"{org} Issuing CA 1", parent=root)
    issuing_name = _ca_name(settings, f"{org} Issuing CA 1")
    issuing_cert_row = issue_certificate(
        session, issuer=issuer_for(settings, root, root_signer),
        profile=CertificateProfile.ISSUING_CA, subject=issuing_name,
        public_key=issuing_signer.public_key(),
        days=validity_days(CertificateProfile.ISSUING_CA, settings.config), issued_by=actor)
    _attach_certificate(issuing, issuing_cert_row.der)
    session.flush()
    return issuing


def _attach_certificate(ca: CertificateAuthority, der: bytes) -> None:
    cert = x509.load_der_x509_certificate(der)
    ca.cert_der = der
    ca.subject = cert.subject.rfc4514_string()
    ca.not_before = cert.not_valid_before_utc
    ca.not_after = cert.not_valid_after_utc


def pem_bundle(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
