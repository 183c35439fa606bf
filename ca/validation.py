"""Validating a presented certificate chain against our own CAs, revocation included.

Built on pyhanko-certvalidator: trust anchors are our root CA(s), revocation
comes from our current CRLs taken from the database (``ca/crl.py`` re-signs a
CRL first whenever a certificate changed status since the stored one, so the
answer is never staler than the last committed revocation), nothing is fetched
over the network and missing revocation information is a failure: every
certificate below a root needs a usable CRL, whether or not it names a
distribution point. A CRL is usable only if it is what our CAs issue: a full,
direct CRL (no issuingDistributionPoint, delta or unknown extension), signed
by the CA whose name it carries and current at the validation moment. An
unusable CRL is set aside, so a certificate whose only CRL is unusable fails
with ``no_revocation_info`` and the reason the CRL was set aside.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator import errors as pv_errors
from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy, RevocationCheckingRule
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from ca.crl import current_crl
from ca.models import CaKind, CertificateAuthority

# pyhanko's "hard-fail" checks only certificates that declare a CRL distribution point or OCSP;
# ours require a CRL for every certificate below a root.
_CRL_REQUIRED = CertRevTrustPolicy(RevocationCheckingPolicy(
    ee_certificate_rule=RevocationCheckingRule.CRL_REQUIRED,
    intermediate_ca_cert_rule=RevocationCheckingRule.CRL_REQUIRED))
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
    """Validate ``leaf_der`` (DER) up to one of our roots, with our CRLs, for the given usage.

    ``required_eku`` takes asn1crypto names or dotted OIDs (``{"client_auth"}`` or
    ``{"1.3.6.1.5.5.7.3.2"}``), ``key_usage`` asn1crypto names (``{"digital_signature"}``).
    ``crls`` (DER) are the revocation information to judge by; None: our CAs' current CRLs.
    May re-sign a stale CRL into ``session`` (flushed, not committed). Synchronous: do not
    call it from inside a running event loop.
    """
    try:
        leaf = _load(leaf_der)
        presented = [_load(der) for der in intermediates_der]
    except (ValueError, TypeError) as exc:
        return ValidationResult(False, "malformed", f"not a DER certificate: {exc}")
    subject = leaf.subject.human_friendly
    serial = format(leaf.serial_number, "x")
    authorities = list(session.scalars(select(CertificateAuthority).order_by(CertificateAuthority.id)))
    roots = [asn1_x509.Certificate.load(ca.cert_der) for ca in authorities if ca.kind is CaKind.ROOT]
    ours = [asn1_x509.Certificate.load(ca.cert_der) for ca in authorities if ca.kind is not CaKind.ROOT]
    if leaf.self_signed != "no" and leaf.dump() not in {root.dump() for root in roots}:
        return ValidationResult(False, "untrusted", "a self-signed certificate that is not one of our roots",
                                subject, serial)
    if crls is None:
        crls = [current_crl(session, settings, ca).der for ca in authorities]
    issuers = [x509.load_der_x509_certificate(ca.cert_der) for ca in authorities]
    usable: list[bytes] = []
    set_aside: list[str] = []
    for der in crls:
        problem = crl_problem(der, issuers, moment or datetime.now(UTC))
        if problem:
            set_aside.append(problem)
        else:
            usable.append(der)
    context = ValidationContext(trust_roots=roots, crls=usable, allow_fetching=False, revinfo_policy=_CRL_REQUIRED,
                                moment=moment)
    validator = CertificateValidator(leaf, intermediate_certs=[*presented, *ours], validation_context=context)
    try:
        asyncio.run(validator.async_validate_usage(  # type: ignore[no-untyped-call]
            set(key_usage), {asn1_x509.KeyPurposeId.map(eku) for eku in required_eku}))
    except pv_errors.RevokedError as exc:
        reason = getattr(exc, "reason", None)
        return ValidationResult(False, "revoked", str(exc), subject, serial,
                                getattr(reason, "native", None) if reason is not None else None)
    except pv_errors.PathBuildingError as exc:
        return ValidationResult(False, "untrusted", str(exc), subject, serial)
    except pv_errors.InsufficientRevinfoError as exc:
        unusable = f" (unusable CRLs set aside: {'; '.join(set_aside)})" if set_aside else ""
        return ValidationResult(False, "no_revocation_info", f"{exc}{unusable}", subject, serial)
    except (pv_errors.ExpiredError, pv_errors.NotYetValidError) as exc:
        return ValidationResult(False, "expired", str(exc), subject, serial)
    except pv_errors.InvalidCertificateError as exc:
        return ValidationResult(False, "usage", str(exc), subject, serial)
    except (pv_errors.PathValidationError, pv_errors.ValidationError) as exc:
        return ValidationResult(False, "invalid", str(exc), subject, serial)
    return ValidationResult(True, "", "", subject, serial)
