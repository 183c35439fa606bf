"""Validating a presented certificate chain against our own CAs, revocation included.

Built on pyhanko-certvalidator: trust anchors are our root CA(s), nothing is
fetched over the network and missing revocation information is a failure.

Two sources of revocation information:

- ``crls=`` given: judge by exactly those CRLs. A CRL is usable only if it is
  what our CAs issue: a full, direct CRL (no issuingDistributionPoint, delta or
  unknown extension), signed by the CA whose name it carries and current at the
  validation moment. An unusable CRL is set aside, so a certificate whose only
  CRL is unusable fails with ``no_revocation_info`` and the reason it was set aside.
- the default (the mutual-TLS enforcement point): the database. Path validation
  (signatures, validity, usage up to our root) runs once per chain and is kept
  in this process until the next CRL number of any of our CAs; every call then
  reads the status of each certificate of the path from its own row (one indexed
  query), so a committed revocation counts on the very next call, and checks that
  the CA above each of them has a stored CRL current at the moment (a CA whose
  CRLs stopped being published fails closed, as relying parties would). "Not
  revoked" is never cached, and no CRL is parsed or signed here: the cost does
  not grow with the number of revocations.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator import errors as pv_errors
from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy, RevocationCheckingRule
from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from ca.crl import REASON_CODES
from ca.models import CaKind, Certificate, CertificateAuthority, Crl, RevocationReason, RevocationState

# pyhanko's "hard-fail" checks only certificates that declare a CRL distribution point or OCSP;
# ours require a CRL for every certificate below a root.
_CRL_REQUIRED = CertRevTrustPolicy(RevocationCheckingPolicy(
    ee_certificate_rule=RevocationCheckingRule.CRL_REQUIRED,
    intermediate_ca_cert_rule=RevocationCheckingRule.CRL_REQUIRED))
# Path validation alone: revocation is then read from the database (``_validate_against_database``).
_PATH_ONLY = CertRevTrustPolicy(RevocationCheckingPolicy(
    ee_certificate_rule=RevocationCheckingRule.NO_CHECK,
    intermediate_ca_cert_rule=RevocationCheckingRule.NO_CHECK))
# The CRL extensions our CAs write (ca/crl.py); anything else makes a CRL partial, indirect or delta.
_DIRECT_CRL_EXTENSIONS = frozenset({ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.CRL_NUMBER})


@dataclass(frozen=True)
class ValidationResult:
    """The verdict on one presented chain; ``reason`` is empty when ``valid``."""

    valid: bool
    reason: str = ""  # malformed, untrusted, revoked, no_revocation_info, expired, usage, invalid
    message: str = ""
    subject: str = ""
    serial: str = ""  # lowercase hex, as in ``Certificate.serial``
    revocation_reason: str | None = None


def _load(der: bytes) -> asn1_x509.Certificate:
    cert = asn1_x509.Certificate.load(der)
    cert.native  # noqa: B018 - force a full parse so garbage fails here, not deep inside validation
    return cert


def crl_problem(crl_der: bytes, issuers: Sequence[x509.Certificate], at: datetime) -> str:
    """Why this CRL cannot vouch for any of ``issuers``' certificates at ``at``; empty if it can."""
    try:
        crl = x509.load_der_x509_crl(crl_der)
        extensions = list(crl.extensions)
    except ValueError as exc:
        return f"the CRL cannot be read: {exc}"
    named = [cert for cert in issuers if cert.subject == crl.issuer]
    if not named:
        return f"the CRL is issued by {crl.issuer.rfc4514_string()}, which is none of our CAs"
    if not any(crl.is_signature_valid(cert.public_key()) for cert in named):  # type: ignore[arg-type]
        return f"the CRL of {crl.issuer.rfc4514_string()} is not signed by that CA's key"
    scope = [ext.oid.dotted_string for ext in extensions if ext.oid not in _DIRECT_CRL_EXTENSIONS]
    if scope:
        return (f"the CRL of {crl.issuer.rfc4514_string()} is not a full, direct CRL "
                f"(extensions {', '.join(scope)}: issuing distribution point, delta or unknown)")
    next_update = crl.next_update_utc
    if next_update is None or next_update <= at:
        return f"the CRL of {crl.issuer.rfc4514_string()} expired (nextUpdate {next_update})"
    if crl.last_update_utc > at:
        return f"the CRL of {crl.issuer.rfc4514_string()} is not valid yet (thisUpdate {crl.last_update_utc})"
    return ""


def validate_chain(
    session: Session,
    settings: CaSettings,
    *,
    leaf_der: bytes,
    intermediates_der: Iterable[bytes] = (),
    required_eku: set[str],
    key_usage: set[str],
    moment: datetime | None = None,
    crls: Iterable[bytes] | None = None,
) -> ValidationResult:
    """Validate ``leaf_der`` (DER) up to one of our roots, with revocation, for the given usage.

    ``required_eku`` takes asn1crypto names or dotted OIDs (``{"client_auth"}`` or
    ``{"1.3.6.1.5.5.7.3.2"}``), ``key_usage`` asn1crypto names (``{"digital_signature"}``).
    ``crls`` (DER) are the revocation information to judge by; None: the database (each
    certificate's own row, read on every call) with our CAs' stored CRLs, which must be current.
    Reads only, never signs. Synchronous: do not call it from inside a running event loop.
    """
    del settings  # everything it needs is in the database
    intermediates = tuple(intermediates_der)
    if crls is not None:
        return _validate_with_crls(session, leaf_der=leaf_der, intermediates_der=intermediates,
                                   eku=frozenset(required_eku), usage=frozenset(key_usage), moment=moment,
                                   crls=list(crls))
    return _validate_against_database(session, leaf_der=leaf_der, intermediates_der=intermediates,
                                      eku=frozenset(required_eku), usage=frozenset(key_usage), moment=moment)


# --- our CAs: parsed once per process ---------------------------------------------------------------

@dataclass(frozen=True)
class _Anchors:
    """Our CA certificates, parsed (they never change once their row is committed)."""

    roots: tuple[asn1_x509.Certificate, ...]
    others: tuple[asn1_x509.Certificate, ...]
    root_ders: frozenset[bytes]
    issuers: tuple[x509.Certificate, ...]
    names: dict[int, str]


_CaRow = tuple[int, CaKind, bytes, str]
_anchors_cache: dict[tuple[_CaRow, ...], _Anchors] = {}
_lock = threading.Lock()


def _anchors(rows: tuple[_CaRow, ...]) -> _Anchors:
    with _lock:
        found = _anchors_cache.get(rows)
    if found is None:
        found = _Anchors(
            roots=tuple(asn1_x509.Certificate.load(der) for _id, kind, der, _n in rows if kind is CaKind.ROOT),
            others=tuple(asn1_x509.Certificate.load(der) for _id, kind, der, _n in rows if kind is not CaKind.ROOT),
            root_ders=frozenset(der for _id, kind, der, _n in rows if kind is CaKind.ROOT),
            issuers=tuple(x509.load_der_x509_certificate(der) for _id, _k, der, _n in rows),
            names={ca_id: name for ca_id, _k, _d, name in rows})
        with _lock:
            if len(_anchors_cache) > 8:  # CAs are few; a long-lived process sees a handful of sets
                _anchors_cache.clear()
            _anchors_cache[rows] = found
    return found


def _validator(leaf: asn1_x509.Certificate, presented: Sequence[asn1_x509.Certificate], anchors: _Anchors,
               *, crls: list[bytes] | None, moment: datetime | None) -> CertificateValidator:
    policy = _PATH_ONLY if crls is None else _CRL_REQUIRED
    context = ValidationContext(trust_roots=list(anchors.roots), crls=crls or [], allow_fetching=False,
                                revinfo_policy=policy, moment=moment)
    return CertificateValidator(leaf, intermediate_certs=[*presented, *anchors.others], validation_context=context)


def _run(validator: CertificateValidator, eku: frozenset[str], usage: frozenset[str]) -> object:
    return asyncio.run(validator.async_validate_usage(  # type: ignore[no-untyped-call]
        set(usage), {asn1_x509.KeyPurposeId.map(name) for name in eku}))


def _refusal(exc: Exception, subject: str, serial: str, set_aside: Sequence[str] = ()) -> ValidationResult:
    """pyhanko's verdict as a ``ValidationResult``."""
    if isinstance(exc, pv_errors.RevokedError):
        reason = getattr(exc, "reason", None)
        return ValidationResult(False, "revoked", str(exc), subject, serial,
                                getattr(reason, "native", None) if reason is not None else None)
    if isinstance(exc, pv_errors.PathBuildingError):
        return ValidationResult(False, "untrusted", str(exc), subject, serial)
    if isinstance(exc, pv_errors.InsufficientRevinfoError):
        unusable = f" (unusable CRLs set aside: {'; '.join(set_aside)})" if set_aside else ""
        return ValidationResult(False, "no_revocation_info", f"{exc}{unusable}", subject, serial)
    if isinstance(exc, (pv_errors.ExpiredError, pv_errors.NotYetValidError)):
        return ValidationResult(False, "expired", str(exc), subject, serial)
    if isinstance(exc, pv_errors.InvalidCertificateError):
        return ValidationResult(False, "usage", str(exc), subject, serial)
    return ValidationResult(False, "invalid", str(exc), subject, serial)


_PV_ERRORS = (pv_errors.PathValidationError, pv_errors.ValidationError, pv_errors.PathBuildingError)


# --- judged by given CRLs ---------------------------------------------------------------------------

_CA_ROWS = select(CertificateAuthority.id, CertificateAuthority.kind, CertificateAuthority.cert_der,
                  CertificateAuthority.name).order_by(CertificateAuthority.id)


def _validate_with_crls(session: Session, *, leaf_der: bytes, intermediates_der: tuple[bytes, ...],
                        eku: frozenset[str], usage: frozenset[str], moment: datetime | None,
                        crls: list[bytes]) -> ValidationResult:
    try:
        leaf = _load(leaf_der)
        presented = [_load(der) for der in intermediates_der]
    except (ValueError, TypeError) as exc:
        return ValidationResult(False, "malformed", f"not a DER certificate: {exc}")
    subject = leaf.subject.human_friendly
    serial = format(leaf.serial_number, "x")
    anchors = _anchors(tuple((r[0], r[1], r[2], r[3]) for r in session.execute(_CA_ROWS)))
    if leaf.self_signed != "no" and leaf.dump() not in anchors.root_ders:
        return ValidationResult(False, "untrusted", "a self-signed certificate that is not one of our roots",
                                subject, serial)
    usable: list[bytes] = []
    set_aside: list[str] = []
    for der in crls:
        problem = crl_problem(der, anchors.issuers, moment or datetime.now(UTC))
        if problem:
            set_aside.append(problem)
        else:
            usable.append(der)
    try:
        _run(_validator(leaf, presented, anchors, crls=usable, moment=moment), eku, usage)
    except _PV_ERRORS as exc:
        return _refusal(exc, subject, serial, set_aside)
    return ValidationResult(True, "", "", subject, serial)


# --- judged by the database -------------------------------------------------------------------------

@dataclass(frozen=True)
class _ValidPath:
    """A chain pyhanko accepted, minus revocation: what may be reused until the next CRL number."""

    fingerprints: tuple[str, ...]  # SHA-256 of each certificate below the root, the CA's first, the leaf last
    not_before: datetime  # the whole path is within its validity between these two moments
    not_after: datetime
    subject: str
    serial: str


# Each CA with its newest CRL's number and validity (one row per CA; RevocationState names the newest).
# Built once on the plain tables and run on the session's connection: no ORM work per request.
_ca = CertificateAuthority.__table__
_crl = Crl.__table__
_state = RevocationState.__table__
_cert = Certificate.__table__
_CAS_AND_CRLS = (
    select(_ca.c.id, _ca.c.kind, _ca.c.cert_der, _ca.c.name, _crl.c.number, _crl.c.this_update,
           _crl.c.next_update)
    .select_from(_ca)
    .outerjoin(_state, _state.c.authority_id == _ca.c.id)
    .outerjoin(_crl, and_(_crl.c.authority_id == _ca.c.id, _crl.c.number == _state.c.crl_number))
    .order_by(_ca.c.id))
_STATUS = (select(_cert.c.fingerprint_sha256, _cert.c.authority_id, _cert.c.serial, _cert.c.revoked_at,
                  _cert.c.revocation_reason)
           .where(_cert.c.fingerprint_sha256.in_(bindparam("fingerprints", expanding=True))))

_PATH_CACHE_LIMIT = 10_000
_paths: dict[tuple[object, ...], _ValidPath] = {}
_paths_epoch: list[object] = [None]


def _cached_path(key: tuple[object, ...], epoch: object) -> _ValidPath | None:
    with _lock:
        if _paths_epoch[0] != epoch:  # a new CRL number somewhere: start afresh
            _paths.clear()
            _paths_epoch[0] = epoch
        return _paths.get(key)


def _remember_path(key: tuple[object, ...], epoch: object, path: _ValidPath) -> None:
    with _lock:
        if _paths_epoch[0] != epoch:
            return
        if len(_paths) >= _PATH_CACHE_LIMIT:
            _paths.clear()
        _paths[key] = path


def _asn1_reason(reason: RevocationReason | None) -> str:
    """The asn1crypto name of a reason, as pyhanko reports it from a CRL (``key_compromise``)."""
    code = REASON_CODES.get(reason, 0) if reason is not None else 0
    return str(asn1_crl.CRLReason(code).native)


def _validate_against_database(session: Session, *, leaf_der: bytes, intermediates_der: tuple[bytes, ...],
                               eku: frozenset[str], usage: frozenset[str],
                               moment: datetime | None) -> ValidationResult:
    at = moment or datetime.now(UTC)
    connection = session.connection()
    rows = connection.execute(_CAS_AND_CRLS).all()
    ca_rows = tuple((r[0], r[1], r[2], r[3]) for r in rows)
    crl_windows = {r[0]: (r[5], r[6]) for r in rows if r[4] is not None}
    epoch = (ca_rows, tuple((r[0], r[4]) for r in rows))
    key = (hashlib.sha256(leaf_der).digest(), tuple(hashlib.sha256(d).digest() for d in intermediates_der),
           eku, usage)
    path = _cached_path(key, epoch)
    if path is None or not path.not_before <= at <= path.not_after:
        verdict = _validate_path(ca_rows, leaf_der=leaf_der, intermediates_der=intermediates_der, eku=eku,
                                 usage=usage, moment=moment)
        if isinstance(verdict, ValidationResult):
            return verdict
        path = verdict
        _remember_path(key, epoch, path)
    if not path.fingerprints:  # a root presented as the leaf: nothing above it could revoke it
        return ValidationResult(True, "", "", path.subject, path.serial)
    status = {row[0]: row for row in connection.execute(_STATUS, {"fingerprints": list(path.fingerprints)})}
    names = _anchors(ca_rows).names
    for position, fingerprint in enumerate(path.fingerprints):
        row = status.get(fingerprint)
        if row is None:  # chains to our root yet was never recorded: nothing vouches for it
            return ValidationResult(False, "no_revocation_info",
                                    "a certificate of the path is not in our records, so its status is unknown",
                                    path.subject, path.serial)
        _fp, authority_id, serial, revoked_at, reason = row
        which = "end-entity" if position == len(path.fingerprints) - 1 else "intermediate"
        if revoked_at is not None and revoked_at <= at:
            return ValidationResult(False, "revoked",
                                    f"the {which} certificate {serial} was revoked at "
                                    f"{revoked_at:%Y-%m-%d %H:%M:%S} UTC ({reason or 'unspecified'})",
                                    path.subject, path.serial, _asn1_reason(reason))
        window = crl_windows.get(authority_id)
        ca_name = names.get(authority_id, str(authority_id))
        if window is None:
            return ValidationResult(False, "no_revocation_info",
                                    f"{ca_name} has published no CRL yet (run `flask --app app pki refresh`)",
                                    path.subject, path.serial)
        this_update, next_update = window
        if not this_update <= at < next_update:
            return ValidationResult(False, "no_revocation_info",
                                    f"the CRL of {ca_name} is not current at {at:%Y-%m-%d %H:%M:%S} UTC "
                                    f"(thisUpdate {this_update}, nextUpdate {next_update}): "
                                    "revocation information is not being published",
                                    path.subject, path.serial)
    return ValidationResult(True, "", "", path.subject, path.serial)


def _validate_path(ca_rows: tuple[_CaRow, ...], *, leaf_der: bytes, intermediates_der: tuple[bytes, ...],
                   eku: frozenset[str], usage: frozenset[str],
                   moment: datetime | None) -> _ValidPath | ValidationResult:
    """pyhanko's path validation without revocation: the path, or the refusal."""
    try:
        leaf = _load(leaf_der)
        presented = [_load(der) for der in intermediates_der]
    except (ValueError, TypeError) as exc:
        return ValidationResult(False, "malformed", f"not a DER certificate: {exc}")
    subject = leaf.subject.human_friendly
    serial = format(leaf.serial_number, "x")
    anchors = _anchors(ca_rows)
    if leaf.self_signed != "no" and leaf.dump() not in anchors.root_ders:
        return ValidationResult(False, "untrusted", "a self-signed certificate that is not one of our roots",
                                subject, serial)
    try:
        validated = _run(_validator(leaf, presented, anchors, crls=None, moment=moment), eku, usage)
    except _PV_ERRORS as exc:
        return _refusal(exc, subject, serial)
    certs = list(validated.iter_certs(include_root=True))  # type: ignore[attr-defined]
    below_root = [c for c in validated.iter_certs(include_root=False)]  # type: ignore[attr-defined]
    return _ValidPath(
        fingerprints=tuple(hashlib.sha256(c.dump()).hexdigest() for c in below_root),
        not_before=max(c["tbs_certificate"]["validity"]["not_before"].native for c in certs),
        not_after=min(c["tbs_certificate"]["validity"]["not_after"].native for c in certs),
        subject=subject, serial=serial)
