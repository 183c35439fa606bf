"""Validating a presented certificate chain against our own CAs, revocation included.

Built on pyhanko-certvalidator: trust anchors are our root CA(s), revocation
comes from our current CRLs taken from the database (``ca/crl.py`` re-signs a
CRL first whenever a certificate changed status since the stored one, so the
answer is never staler than the last committed revocation), nothing is fetched
over the network and missing revocation information is a failure (hard-fail).
Later issues call this for mutual TLS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator import errors as pv_errors
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from ca.crl import current_crl
from ca.models import CaKind, CertificateAuthority


@dataclass(frozen=True)
class ValidationResult:
    """The verdict on one presented chain; ``reason`` is empty when ``valid``."""

    valid: bool
    reason: str = ""  # malformed, untrusted, revoked, expired, usage, invalid
    message: str = ""
    subject: str = ""
    serial: str = ""  # lowercase hex, as in ``Certificate.serial``
    revocation_reason: str | None = None


def _load(der: bytes) -> asn1_x509.Certificate:
    cert = asn1_x509.Certificate.load(der)
    cert.native  # noqa: B018 - force a full parse so garbage fails here, not deep inside validation
    return cert


def validate_chain(
    session: Session,
    settings: CaSettings,
    *,
    leaf_der: bytes,
    intermediates_der: Iterable[bytes] = (),
    required_eku: set[str],
    key_usage: set[str],
    moment: datetime | None = None,
) -> ValidationResult:
    """Validate ``leaf_der`` (DER) up to one of our roots, with our CRLs, for the given usage.

    ``required_eku`` takes asn1crypto names or dotted OIDs (``{"client_auth"}`` or
    ``{"1.3.6.1.5.5.7.3.2"}``), ``key_usage`` asn1crypto names (``{"digital_signature"}``).
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
    crls = [current_crl(session, settings, ca).der for ca in authorities]
    context = ValidationContext(trust_roots=roots, crls=crls, allow_fetching=False, revocation_mode="hard-fail",
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
    except (pv_errors.ExpiredError, pv_errors.NotYetValidError) as exc:
        return ValidationResult(False, "expired", str(exc), subject, serial)
    except pv_errors.InvalidCertificateError as exc:
        return ValidationResult(False, "usage", str(exc), subject, serial)
    except (pv_errors.PathValidationError, pv_errors.ValidationError) as exc:
        return ValidationResult(False, "invalid", str(exc), subject, serial)
    return ValidationResult(True, "", "", subject, serial)
