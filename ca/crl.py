"""CRLs (RFC 5280 section 5): produced per CA, stored, served from storage, re-signed when stale.

A CRL is due for re-signing when (a) a certificate of its CA changed status
since it was signed (``RevocationState.status_version``), or (b) its nextUpdate
is closer than ``CRL_REFRESH_HOURS``. Signing happens outside requests: after
the committing status change (``ca/publishing.py``), and on schedule by
``flask --app app pki worker`` / ``pki refresh``. Requests serve the latest
stored CRL (``latest_crl``) and, when it is due, only ask for a new one.

The DER is written by hand, streaming the revoked rows (four columns, batched,
no ORM objects): cryptography's ``CertificateRevocationListBuilder`` copies its
entry list on every ``add_revoked_certificate`` (quadratic for a million
entries). Tests parse the result with cryptography, openssl and pkilint.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from flask_babel import lazy_gettext
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ca.authority import CaSettings, issuer_for
from ca.keys import Signer
from ca.models import Certificate, CertificateAuthority, Crl, RevocationReason, RevocationState
from db import utcnow
from kernel.errors import NotFound

# RFC 5280 5.3.1 CRLReason codes.
REASON_CODES: dict[RevocationReason, int] = {
    RevocationReason.UNSPECIFIED: 0,
    RevocationReason.KEY_COMPROMISE: 1,
    RevocationReason.CA_COMPROMISE: 2,
    RevocationReason.AFFILIATION_CHANGED: 3,
    RevocationReason.SUPERSEDED: 4,
    RevocationReason.CESSATION_OF_OPERATION: 5,
    RevocationReason.CERTIFICATE_HOLD: 6,
    RevocationReason.PRIVILEGE_WITHDRAWN: 9,
}
STREAM_BATCH = 10_000
# (serial hex, revoked_at, reason, invalidity date): the four columns a CRL entry needs.
Entry = tuple[str, datetime | None, RevocationReason | None, datetime | None]

# AlgorithmIdentifier DER for the signature algorithms our CA keys use.
_SIG_ALGS: dict[tuple[str, str], bytes] = {
    ("ec", "sha256"): bytes.fromhex("300a06082a8648ce3d040302"),
    ("ec", "sha384"): bytes.fromhex("300a06082a8648ce3d040303"),
    ("rsa", "sha256"): bytes.fromhex("300d06092a864886f70d01010b0500"),
    ("rsa", "sha384"): bytes.fromhex("300d06092a864886f70d01010c0500"),
}
_OID_REASON_CODE = bytes.fromhex("0603551d15")
_OID_INVALIDITY_DATE = bytes.fromhex("0603551d18")


# --- minimal DER ---------------------------------------------------------------------------------

def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _len(len(content)) + content


def _integer(n: int) -> bytes:
    return _tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def _time(moment: datetime) -> bytes:
    """UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 5.1.2.4)."""
    if 1950 <= moment.year < 2050:
        return _tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())
    return _generalized_time(moment)


def _generalized_time(moment: datetime) -> bytes:
    return _tlv(0x18, moment.strftime("%Y%m%d%H%M%SZ").encode())


def _extension(oid_der: bytes, value: bytes, *, critical: bool = False) -> bytes:
    return _tlv(0x30, oid_der + (b"\x01\x01\xff" if critical else b"") + _tlv(0x04, value))


def _reason_extension(reason: RevocationReason) -> bytes:
    return _extension(_OID_REASON_CODE, _tlv(0x0A, bytes((REASON_CODES[reason],))))


# "unspecified" is expressed by leaving the reasonCode out (RFC 5280 5.3.1: SHOULD be absent).
_REASON_EXTENSIONS = {r: _reason_extension(r) for r in REASON_CODES if r is not RevocationReason.UNSPECIFIED}


def encode_entry(serial_hex: str, revoked_at: datetime | None, reason: RevocationReason | None,
                 invalidity_date: datetime | None) -> bytes:
    """One revokedCertificates entry: serial, revocationDate, reasonCode and invalidityDate extensions."""
    assert revoked_at is not None  # selected with revoked_at IS NOT NULL
    extensions = b""
    if reason is not None and reason in _REASON_EXTENSIONS:
        extensions += _REASON_EXTENSIONS[reason]
    if invalidity_date is not None:
        extensions += _extension(_OID_INVALIDITY_DATE, _generalized_time(invalidity_date))
    body = _integer(int(serial_hex, 16)) + _time(revoked_at)
    if extensions:
        body += _tlv(0x30, extensions)
    return _tlv(0x30, body)


def signature_algorithm(signer: Signer) -> bytes:
    """The AlgorithmIdentifier (DER) of the signer's signatures."""
    key = signer.private_key
    family = "ec" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa"
    return _SIG_ALGS[(family, signer.hash_algorithm.name)]


def sign_bytes(signer: Signer, data: bytes) -> bytes:
    """The signer's signature over ``data`` with its hash (ECDSA, or RSA PKCS#1 v1.5)."""
    key = signer.private_key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(signer.hash_algorithm))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), signer.hash_algorithm)
    raise TypeError("unsupported CA key type")  # pragma: no cover - keys.py admits EC and RSA only


def build_crl(*, issuer_cert: x509.Certificate, signer: Signer, number: int, this_update: datetime,
              next_update: datetime, entries: Iterable[Entry]) -> tuple[bytes, int]:
    """Sign a v2 CRL over ``entries`` (serial hex, revoked_at, reason, invalidity date); (DER, count)."""
    revoked = bytearray()
    count = 0
    for serial, revoked_at, reason, invalidity_date in entries:
        revoked += encode_entry(serial, revoked_at, reason, invalidity_date)
        count += 1
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    crl_extensions = (
        _extension(bytes.fromhex("0603551d23"), aki.public_bytes())
        + _extension(bytes.fromhex("0603551d14"), x509.CRLNumber(number).public_bytes())
    )
    alg = signature_algorithm(signer)
    tbs = bytearray()
    tbs += _integer(1)  # v2
    tbs += alg
    tbs += issuer_cert.subject.public_bytes()
    tbs += _time(this_update) + _time(next_update)
    if count:  # an empty list is omitted, not encoded empty (RFC 5280 5.1.2.6)
        tbs += b"\x30" + _len(len(revoked))
        tbs += revoked
    del revoked
    tbs += _tlv(0xA0, _tlv(0x30, crl_extensions))
    tbs_der = b"\x30" + _len(len(tbs)) + bytes(tbs)
    del tbs
    signature = sign_bytes(signer, tbs_der)
    body = tbs_der + alg + _tlv(0x03, b"\x00" + signature)
    return b"\x30" + _len(len(body)) + body, count


# --- storage -------------------------------------------------------------------------------------

def dialect_insert(session: Session) -> Any:
    """The INSERT construct with ON CONFLICT support for the session's database."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _ensure_state(session: Session, authority_id: int) -> None:
    session.execute(dialect_insert(session)(RevocationState)
                    .values(authority_id=authority_id, status_version=0, crl_number=0, updated_at=utcnow())
                    .on_conflict_do_nothing(index_elements=["authority_id"]))


def bump_status_version(session: Session, authority_id: int) -> None:
    """Record that a certificate of this CA changed status: its stored CRL is now out of date."""
    _ensure_state(session, authority_id)
    session.execute(update(RevocationState).where(RevocationState.authority_id == authority_id)
                    .values(status_version=RevocationState.status_version + 1, updated_at=utcnow()))


def lock_state(session: Session, authority_id: int) -> None:
    """Write the CA's state row: it serialises CRL and responder production (row lock / SQLite write lock)."""
    _ensure_state(session, authority_id)
    session.execute(update(RevocationState).where(RevocationState.authority_id == authority_id)
                    .values(updated_at=utcnow()))


def revoked_entries(session: Session, authority_id: int, *, alive_at: datetime) -> Iterable[Entry]:
    """The CA's revoked, unexpired certificates, four columns per row, fetched in batches."""
    stmt = (select(Certificate.serial, Certificate.revoked_at, Certificate.revocation_reason,
                   Certificate.invalidity_date)
            .where(Certificate.authority_id == authority_id, Certificate.revoked_at.is_not(None),
                   Certificate.not_after > alive_at)
            .execution_options(yield_per=STREAM_BATCH))
    yield from cast(Iterable[Entry], session.execute(stmt))  # rows unpack like tuples


def issue_crl(session: Session, settings: CaSettings, authority: CertificateAuthority) -> Crl:
    """Sign and store the next CRL of ``authority`` (flushed, not committed)."""
    lock_state(session, authority.id)
    session.execute(update(RevocationState).where(RevocationState.authority_id == authority.id)
                    .values(crl_number=RevocationState.crl_number + 1))
    number, status_version = session.execute(
        select(RevocationState.crl_number, RevocationState.status_version)
        .where(RevocationState.authority_id == authority.id)).one()
    now = utcnow().replace(microsecond=0)
    next_update = now + timedelta(hours=settings.config["CRL_VALIDITY_HOURS"])
    issuer = issuer_for(settings, authority)
    der, count = build_crl(issuer_cert=x509.load_der_x509_certificate(authority.cert_der), signer=issuer.signer,
                           number=number, this_update=now, next_update=next_update,
                           entries=revoked_entries(session, authority.id, alive_at=now))
    crl = Crl(authority_id=authority.id, number=number, this_update=now, next_update=next_update,
              status_version=status_version, entries=count, der=der, created_at=utcnow())
    session.add(crl)
    session.flush()
    return crl


def crl_is_due(session: Session, settings: CaSettings, authority_id: int) -> bool:
    """Whether the CA's stored CRL lags a status change or nears its nextUpdate (or is missing)."""
    return _needs_new_crl(session, settings, authority_id)


def _needs_new_crl(session: Session, settings: CaSettings, authority_id: int) -> bool:
    row = session.execute(
        select(Crl.status_version, Crl.next_update).where(Crl.authority_id == authority_id)
        .order_by(Crl.number.desc()).limit(1)).first()
    if row is None:
        return True
    version = session.scalar(select(RevocationState.status_version)
                             .where(RevocationState.authority_id == authority_id)) or 0
    margin = timedelta(hours=settings.config["CRL_REFRESH_HOURS"])
    return bool(row.status_version < version or row.next_update - margin <= utcnow())


def latest_crl(session: Session, authority_id: int) -> Crl | None:
    """The CA's newest stored CRL as it is (None before its first); never signs."""
    return session.scalar(select(Crl).where(Crl.authority_id == authority_id).order_by(Crl.number.desc()).limit(1))


def current_crl(session: Session, settings: CaSettings, authority: CertificateAuthority) -> Crl:
    """The CA's newest CRL, re-signed first if a status changed or nextUpdate is near (publisher, worker).

    May add a CRL to ``session`` (flushed): the caller commits, as with every service.
    """
    if _needs_new_crl(session, settings, authority.id):
        lock_state(session, authority.id)
        if _needs_new_crl(session, settings, authority.id):  # not done meanwhile by another worker
            return issue_crl(session, settings, authority)
    crl = latest_crl(session, authority.id)
    assert crl is not None
    return crl


def crl_by_number(session: Session, authority_id: int, number: int) -> Crl:
    """An earlier (or the current) CRL of a CA by its CRL number; ``NotFound`` otherwise."""
    crl = session.scalar(select(Crl).where(Crl.authority_id == authority_id, Crl.number == number))
    if crl is None:
        raise NotFound(lazy_gettext(
            "認証局 %(ca)s に CRL 番号 %(number)s はありません。", ca=authority_id, number=number))
    return crl


def crl_pem(der: bytes) -> bytes:
    """A DER CRL as PEM (``-----BEGIN X509 CRL-----``)."""
    return x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)

