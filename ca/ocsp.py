"""OCSP responder (RFC 6960, with the RFC 5019 profile for caching).

Responses are signed by a delegated responder: an OCSP-signing certificate
(``CertificateProfile.OCSP_SIGNING``: id-kp-OCSPSigning, id-pkix-ocsp-nocheck)
issued by the CA that is asked about, with its own encrypted PKCS#8 key,
replaced ``OCSP_SIGNING_RENEW_DAYS`` before it expires.

Pre-signed responses: the answer for a certificate (per CertID hash
algorithm) is stored and served again while it still states the
certificate's current status and its nextUpdate is further than
``OCSP_REFRESH_HOURS`` away. Every request compares the stored status with the
certificate row, so a revocation is visible on the very next request even if
nobody re-signed anything. A request carrying a nonce cannot be answered from
storage (the nonce must be echoed inside the signed data): it is signed fresh
and not stored. Clients that send nonces (openssl by default) therefore cost
one signature each; browsers and RFC 5019 clients send none.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from sqlalchemy import Connection, and_, bindparam, select
from sqlalchemy.orm import Session

from ca.authority import CaSettings, issuer_for, signer_for
from ca.crl import dialect_insert, lock_state
from ca.issuance import issue_certificate
from ca.keys import Signer, generate_private_key, store_software_key
from ca.models import Certificate, CertificateAuthority, CertificateProfile, OcspResponse, RevocationReason
from ca.profiles import validity_days
from db import utcnow
from kernel.audit import SYSTEM_ACTOR, AuditAction, record_event

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024
# CertID hashes only identify the issuer (RFC 6960 4.1.1); SHA-1 is what most clients still send.
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha1": hashes.SHA1(),  # noqa: S303
    "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


class OcspAnswerKind(enum.StrEnum):
    """What an answer says, for logs and tests (the DER is what clients read)."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"
    MALFORMED = "malformedRequest"
    UNAUTHORIZED = "unauthorized"
    INTERNAL_ERROR = "internalError"


@dataclass(frozen=True)
class OcspAnswer:
    """A DER OCSPResponse and what HTTP caching may do with it."""

    der: bytes
    kind: OcspAnswerKind
    this_update: datetime | None = None
    next_update: datetime | None = None
    cacheable: bool = False  # True when the same bytes answer everyone asking (no nonce)
    from_storage: bool = False


_UNSUCCESSFUL_KINDS = {
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST: OcspAnswerKind.MALFORMED,
    ocsp.OCSPResponseStatus.UNAUTHORIZED: OcspAnswerKind.UNAUTHORIZED,
    ocsp.OCSPResponseStatus.INTERNAL_ERROR: OcspAnswerKind.INTERNAL_ERROR,
}


def unsuccessful(status: ocsp.OCSPResponseStatus) -> OcspAnswer:
    """An unsigned error response (malformedRequest, unauthorized, internalError)."""
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)
    return OcspAnswer(der=der, kind=_UNSUCCESSFUL_KINDS[status])


# --- the responder certificate ----------------------------------------------------------------------

@dataclass(frozen=True)
class Responder:
    """A CA's current OCSP signing certificate and its key."""

    certificate_id: int
    certificate: x509.Certificate
    signer: Signer
    not_after: datetime


# Statements built once on the plain tables: building select()s per request cost more than running them.
_cert = Certificate.__table__
_stored = OcspResponse.__table__
_NEWEST_RESPONDER = (
    select(_cert.c.id, _cert.c.not_after, _cert.c.details)
    .where(_cert.c.authority_id == bindparam("authority_id"), _cert.c.profile == CertificateProfile.OCSP_SIGNING,
           _cert.c.revoked_at.is_(None))
    .order_by(_cert.c.id.desc()).limit(1))
_CERTIFICATE_DER = select(_cert.c.der).where(_cert.c.id == bindparam("id"))
_ResponderRow = tuple[int, datetime, dict[str, Any]]  # id, not_after, details


def _newest_responder(session: Session, authority_id: int) -> _ResponderRow | None:
    row = session.execute(_NEWEST_RESPONDER, {"authority_id": authority_id}).first()
    return None if row is None else (row[0], row[1], row[2])


def _usable(row: _ResponderRow | None, settings: CaSettings) -> bool:
    renew = timedelta(days=settings.config["OCSP_SIGNING_RENEW_DAYS"])
    return row is not None and row[1] - renew > utcnow() and "key_uri" in row[2]


# A certificate never changes once signed: its parsed form is kept, by row id and key URI (the URI,
# unique per key, keeps two databases used by one process apart).
_responder_certs: dict[tuple[int, str], x509.Certificate] = {}


def ensure_responder(session: Session, settings: CaSettings, authority: CertificateAuthority) -> Responder:
    """The CA's OCSP signing certificate, issued (new key) if missing or due for renewal."""
    row = _newest_responder(session, authority.id)
    if not _usable(row, settings):
        lock_state(session, authority.id)  # one renewal per CA even with several workers
        row = _newest_responder(session, authority.id)
        if not _usable(row, settings):
            issued = _issue_responder(session, settings, authority)
            row = (issued.id, issued.not_after, issued.details)
    assert row is not None
    certificate_id, not_after, details = row
    cache_key = (certificate_id, str(details["key_uri"]))
    certificate = _responder_certs.get(cache_key)
    if certificate is None:
        der = session.execute(_CERTIFICATE_DER, {"id": certificate_id}).scalar_one()
        certificate = x509.load_der_x509_certificate(der)
        if len(_responder_certs) > 64:  # a few per CA over the years
            _responder_certs.clear()
        _responder_certs[cache_key] = certificate
    return Responder(certificate_id=certificate_id, certificate=certificate,
                     signer=signer_for(settings, details["key_uri"]), not_after=not_after)


def _issue_responder(session: Session, settings: CaSettings, authority: CertificateAuthority) -> Certificate:
    key = generate_private_key(settings.key_algorithm)
    stamp = utcnow().strftime("%Y%m%d%H%M%S")
    key_uri = f"file:keys/ocsp-{authority.id}-{stamp}-{secrets.token_hex(4)}.key.pem"
    store_software_key(key, uri=key_uri, base=settings.instance_dir, passphrase=settings.passphrase)
    ca_cert = x509.load_der_x509_certificate(authority.cert_der)
    ca_cn = [str(a.value) for a in ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, settings.organization),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{ca_cn[0] if ca_cn else authority.name} OCSP Responder"),
    ])
    row = issue_certificate(session, issuer=issuer_for(settings, authority), profile=CertificateProfile.OCSP_SIGNING,
                            subject=subject, public_key=key.public_key(),
                            days=validity_days(CertificateProfile.OCSP_SIGNING, settings.config),
                            issued_by=SYSTEM_ACTOR.name, details={"key_uri": key_uri, "purpose": "OCSP responder"})
    record_event(session, action=AuditAction.CERTIFICATE_ISSUED, actor=SYSTEM_ACTOR,
                 target=f"certificate:{row.serial}",
                 detail={"profile": str(row.profile), "subject": row.subject, "authority_id": authority.id})
    return row


# --- finding the CA a request asks about -----------------------------------------------------------

_ca_hashes: dict[tuple[int, bytes], dict[str, tuple[bytes, bytes]]] = {}


def _issuer_hashes(authority_id: int, cert_der: bytes) -> dict[str, tuple[bytes, bytes]]:
    """(issuerNameHash, issuerKeyHash) of a CA certificate for each supported hash algorithm."""
    cache_key = (authority_id, hashlib.sha256(cert_der).digest())
    cached = _ca_hashes.get(cache_key)
    if cached is None:
        parsed = asn1_x509.Certificate.load(cert_der)
        name_der = parsed.subject.dump()
        key_bits = parsed.public_key["public_key"].contents[1:]  # the BIT STRING's bytes, no unused-bits octet
        cached = {alg: (hashlib.new(alg, name_der).digest(), hashlib.new(alg, key_bits).digest())
                  for alg in _HASHES}
        _ca_hashes[cache_key] = cached
    return cached


_issuer_ids: dict[tuple[str, bytes, bytes], int] = {}


def find_authority_id(session: Session | Connection, algorithm: str, name_hash: bytes, key_hash: bytes) -> int | None:
    """The id of the CA whose name and key hashes the CertID carries, if it is one of ours.

    A CA's certificate never changes once its row exists, so a hit in the in-process
    map is final; a miss re-reads the CAs (a new CA is found on its first request).
    """
    key = (algorithm, name_hash, key_hash)
    found = _issuer_ids.get(key)
    if found is None:
        for authority_id, cert_der in session.execute(select(CertificateAuthority.id, CertificateAuthority.cert_der)):
            if not cert_der:
                continue
            for alg, (n_hash, k_hash) in _issuer_hashes(authority_id, cert_der).items():
                _issuer_ids[(alg, n_hash, k_hash)] = authority_id
        found = _issuer_ids.get(key)
    return found


# --- answering ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _CertId:
    algorithm: str
    name_hash: bytes
    key_hash: bytes
    serial: int
    nonce: bytes | None


def _parse(request_der: bytes) -> _CertId | None:
    if not request_der or len(request_der) > MAX_REQUEST_BYTES:
        return None
    try:
        req = ocsp.load_der_ocsp_request(request_der)  # refuses multi-certificate requests too
        algorithm = req.hash_algorithm.name
        nonce = None
        for ext in req.extensions:
            if isinstance(ext.value, x509.OCSPNonce):
                nonce = ext.value.nonce
            elif ext.critical:
                return None  # a critical extension we do not understand
        if req.serial_number < 0:  # RFC 5280 serials are positive
            return None
        return _CertId(algorithm=algorithm, name_hash=req.issuer_name_hash, key_hash=req.issuer_key_hash,
                       serial=req.serial_number, nonce=nonce)
    except Exception:  # malformed DER, unsupported algorithm: all the client's fault
        return None


# One statement built at import (building a select() with an alias per request cost more than the
# query): the stored answer, the certificate's current status and whether the answer's signer was revoked
# since, on plain tables (Core, no ORM entity handling), with the parameters bound per request.
_signer = Certificate.__table__.alias("ocsp_signer")
_STATUS_AND_STORED = (
    select(_cert.c.id, _cert.c.revoked_at, _cert.c.revocation_reason,
           _stored.c.revoked_at, _stored.c.revocation_reason, _stored.c.this_update,
           _stored.c.next_update, _stored.c.der, _signer.c.revoked_at)
    .select_from(_cert)
    .outerjoin(_stored, and_(_stored.c.certificate_id == _cert.c.id,
                             _stored.c.hash_algorithm == bindparam("algorithm")))
    .outerjoin(_signer, _signer.c.id == _stored.c.responder_id)
    .where(_cert.c.serial == bindparam("serial"), _cert.c.authority_id == bindparam("authority_id")))


def _lookup(db: Session | Connection, request_der: bytes,
            cert_id: _CertId | None = None) -> tuple[_CertId, int, Any] | OcspAnswer:
    """The request's CertID, its CA and the status/stored-answer row; or the unsuccessful answer it gets."""
    cert_id = cert_id or _parse(request_der)
    if cert_id is None:
        return unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    if cert_id.algorithm not in _HASHES:
        return unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    authority_id = find_authority_id(db, cert_id.algorithm, cert_id.name_hash, cert_id.key_hash)
    if authority_id is None:
        return unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    connection = db.connection() if isinstance(db, Session) else db
    row = connection.execute(
        _STATUS_AND_STORED,
        {"algorithm": cert_id.algorithm, "serial": format(cert_id.serial, "x"), "authority_id": authority_id},
    ).first()
    return cert_id, authority_id, row


def _reusable(cert_id: _CertId, row: Any, settings: CaSettings, now: datetime) -> OcspAnswer | None:
    """The stored answer if it still states the current status, is not near nextUpdate, and its
    signer has not been revoked since (a compromised responder key must stop speaking)."""
    (_id, revoked_at, reason, stored_revoked_at, stored_reason, stored_this, stored_next, stored_der,
     signer_revoked_at) = row
    refresh = timedelta(hours=settings.config["OCSP_REFRESH_HOURS"])
    if (cert_id.nonce is None and stored_der is not None and stored_revoked_at == revoked_at
            and stored_reason == reason and stored_next - refresh > now and signer_revoked_at is None):
        kind = OcspAnswerKind.GOOD if revoked_at is None else OcspAnswerKind.REVOKED
        return OcspAnswer(der=stored_der, kind=kind, this_update=stored_this, next_update=stored_next,
                          cacheable=True, from_storage=True)
    return None


def stored_answer(connection: Connection, settings: CaSettings, request_der: bytes) -> OcspAnswer | None:
    """The pre-signed answer to a request, read on ``connection`` alone; None when ``answer`` has work to do.

    Only a reusable stored answer comes back: anything to sign, refuse or store is left to ``answer``.
    """
    cert_id = _parse(request_der)
    if cert_id is None or cert_id.nonce is not None:  # a nonce is signed afresh: nothing stored answers it
        return None
    found = _lookup(connection, request_der, cert_id)
    if isinstance(found, OcspAnswer) or found[2] is None:
        return None
    cert_id, _authority_id, row = found
    return _reusable(cert_id, row, settings, utcnow())


def answer(session: Session, settings: CaSettings, request_der: bytes) -> OcspAnswer:
    """The OCSP response for a DER OCSPRequest; never raises for bad input.

    May store a (re-)signed response in ``session`` (flushed): the caller commits
    (``OcspAnswer.from_storage`` tells when there is nothing to commit).
    """
    found = _lookup(session, request_der)
    if isinstance(found, OcspAnswer):
        return found
    cert_id, authority_id, row = found
    now = utcnow()
    if row is None:
        return _sign(session, settings, authority_id, cert_id, status=None, now=now)
    reused = _reusable(cert_id, row, settings, now)
    if reused is not None:
        return reused
    certificate_id, revoked_at, reason = row[0], row[1], row[2]
    return _sign(session, settings, authority_id, cert_id, status=(certificate_id, revoked_at, reason), now=now)


def _sign(session: Session, settings: CaSettings, authority_id: int, cert_id: _CertId, *,
          status: tuple[int, datetime | None, RevocationReason | None] | None, now: datetime) -> OcspAnswer:
    """Sign an answer; store it for reuse when it carries no nonce and the certificate is ours."""
    authority = session.get(CertificateAuthority, authority_id)
    assert authority is not None
    responder = ensure_responder(session, settings, authority)
    this_update = now.replace(microsecond=0)
    next_update = min(this_update + timedelta(hours=settings.config["OCSP_VALIDITY_HOURS"]), responder.not_after)
    if status is None:
        cert_status, revoked_at, reason, kind = ocsp.OCSPCertStatus.UNKNOWN, None, None, OcspAnswerKind.UNKNOWN
    else:
        _id, revoked_at, reason = status
        if revoked_at is None:
            cert_status, kind = ocsp.OCSPCertStatus.GOOD, OcspAnswerKind.GOOD
        else:
            cert_status, kind = ocsp.OCSPCertStatus.REVOKED, OcspAnswerKind.REVOKED
    flag = None
    if reason is not None and reason is not RevocationReason.UNSPECIFIED:
        flag = x509.ReasonFlags(reason.value)
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=cert_id.name_hash, issuer_key_hash=cert_id.key_hash, serial_number=cert_id.serial,
        algorithm=_HASHES[cert_id.algorithm], cert_status=cert_status, this_update=this_update,
        next_update=next_update, revocation_time=revoked_at, revocation_reason=flag,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, responder.certificate).certificates([responder.certificate])
    if cert_id.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(cert_id.nonce), critical=False)
    der = builder.sign(responder.signer.private_key, responder.signer.hash_algorithm).public_bytes(Encoding.DER)
    if cert_id.nonce is None and status is not None:
        _store(session, certificate_id=status[0], algorithm=cert_id.algorithm, revoked_at=revoked_at, reason=reason,
               responder_id=responder.certificate_id, this_update=this_update, next_update=next_update, der=der)
    return OcspAnswer(der=der, kind=kind, this_update=this_update, next_update=next_update,
                      cacheable=cert_id.nonce is None)


def _store(session: Session, *, certificate_id: int, algorithm: str, revoked_at: datetime | None,
           reason: RevocationReason | None, responder_id: int, this_update: datetime, next_update: datetime,
           der: bytes) -> None:
    """Insert or replace the stored response (an upsert: concurrent workers may race here)."""
    values = {"certificate_id": certificate_id, "hash_algorithm": algorithm, "revoked_at": revoked_at,
              "revocation_reason": reason, "responder_id": responder_id, "this_update": this_update,
              "next_update": next_update, "der": der}
    stmt = dialect_insert(session)(OcspResponse).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["certificate_id", "hash_algorithm"],
        set_={k: stmt.excluded[k] for k in values if k not in ("certificate_id", "hash_algorithm")})
    session.execute(stmt)


def presign(session: Session, settings: CaSettings, certificate: Certificate,
            algorithms: tuple[str, ...] = ("sha1", "sha256")) -> None:
    """(Re-)sign and store the responses for ``certificate`` (after a status change, or ahead of time)."""
    authority = session.get(CertificateAuthority, certificate.authority_id)
    assert authority is not None
    now = utcnow()
    for algorithm in algorithms:
        name_hash, key_hash = _issuer_hashes(authority.id, authority.cert_der)[algorithm]
        cert_id = _CertId(algorithm=algorithm, name_hash=name_hash, key_hash=key_hash,
                          serial=int(certificate.serial, 16), nonce=None)
        _sign(session, settings, authority.id, cert_id,
              status=(certificate.id, certificate.revoked_at, certificate.revocation_reason), now=now)


def stale_responses(session: Session, settings: CaSettings) -> list[int]:
    """Ids of certificates whose stored responses are due for re-signing (nextUpdate within the margin)."""
    due = utcnow() + timedelta(hours=settings.config["OCSP_REFRESH_HOURS"])
    return list(session.scalars(select(OcspResponse.certificate_id).where(OcspResponse.next_update <= due)
                                .distinct()))
