"""Certificate profiles: the one place that decides each certificate type's extensions.

Every end-entity certificate gets basic constraints, key usage, extended key
usage, SKI/AKI, a CRL distribution point and an AIA (OCSP + caIssuers) that
point at URLs this server serves (see ``ca/pki_views.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ca.models import CertificateProfile

# opauth's OID arc: a UUID-derived OID (ITU-T X.667, 2.25.<uuid>) needs no registration.
OPAUTH_ARC = "2.25.287471147951195946185896941797366432038"
# Operator certificates: SEQUENCE OF PrintableString, the operator's permitted 業務ID values.
PERMITTED_BUSINESS_IDS_OID = x509.ObjectIdentifier(OPAUTH_ARC + ".1")


@dataclass(frozen=True)
class PkiUrls:
    """Where relying parties fetch this CA's CRL, OCSP answers and certificate."""

    crl: str
    ocsp: str
    ca_issuers: str


def pki_urls(base_url: str, authority_id: int) -> PkiUrls:
    """The URLs served by ``ca/pki_views.py`` for the CA with this id."""
    return PkiUrls(
        crl=f"{base_url}/pki/crl/{authority_id}.crl",
        ocsp=f"{base_url}/pki/ocsp",
        ca_issuers=f"{base_url}/pki/ca/{authority_id}.der",
    )


def _key_usage(*, digital_signature: bool = False, key_encipherment: bool = False,
               cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False,
        key_encipherment=key_encipherment, data_encipherment=False, key_agreement=False,
        key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _permitted_business_ids(business_ids: Sequence[str]) -> x509.UnrecognizedExtension:
    class _Ids(core.SequenceOf):
        _child_spec = core.PrintableString

    return x509.UnrecognizedExtension(PERMITTED_BUSINESS_IDS_OID, _Ids(list(business_ids)).dump())


def extensions_for(
    profile: CertificateProfile,
    *,
    public_key: CertificateIssuerPublicKeyTypes,
    issuer_public_key: CertificateIssuerPublicKeyTypes | None,
    urls: PkiUrls | None,
    sans: Sequence[x509.GeneralName] = (),
    business_ids: Sequence[str] = (),
) -> list[tuple[x509.ExtensionType, bool]]:
    """(extension, critical) pairs for a certificate of ``profile``.

    ``issuer_public_key`` is None only for the self-signed root; ``urls`` (the
    issuer's CRL/OCSP/caIssuers) is None only for the root.
    """
    exts: list[tuple[x509.ExtensionType, bool]] = []
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    if profile is CertificateProfile.ROOT_CA:
        exts.append((x509.BasicConstraints(ca=True, path_length=1), True))
        exts.append((_key_usage(digital_signature=True, cert_sign=True), True))
    elif profile is CertificateProfile.ISSUING_CA:
        exts.append((x509.BasicConstraints(ca=True, path_length=0), True))
        exts.append((_key_usage(digital_signature=True, cert_sign=True), True))
    else:
        exts.append((x509.BasicConstraints(ca=False, path_length=None), True))
        if profile is CertificateProfile.BUSINESS_SERVER:
            exts.append((_key_usage(digital_signature=True, key_encipherment=is_rsa), True))
            eku = [ExtendedKeyUsageOID.SERVER_AUTH]
        elif profile is CertificateProfile.OPERATOR:
            exts.append((_key_usage(digital_signature=True), True))
            eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
        elif profile is CertificateProfile.TLS:
            exts.append((_key_usage(digital_signature=True, key_encipherment=is_rsa), True))
            eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        elif profile is CertificateProfile.OCSP_SIGNING:
            exts.append((_key_usage(digital_signature=True), True))
            eku = [ExtendedKeyUsageOID.OCSP_SIGNING]
            exts.append((x509.OCSPNoCheck(), False))
        else:  # pragma: no cover - exhaustive over the enum
            raise ValueError(f"unknown profile {profile}")
        exts.append((x509.ExtendedKeyUsage(eku), False))
        if profile in (CertificateProfile.BUSINESS_SERVER, CertificateProfile.TLS) and not sans:
            raise ValueError(f"{profile} certificates need at least one subjectAltName")
        if sans:
            exts.append((x509.SubjectAlternativeName(list(sans)), False))
        if profile is CertificateProfile.OPERATOR and business_ids:
            exts.append((_permitted_business_ids(business_ids), False))

    exts.append((x509.SubjectKeyIdentifier.from_public_key(public_key), False))
    if issuer_public_key is not None:
        exts.append((x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), False))
    if urls is not None:
        exts.append((x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(urls.crl)],
            relative_name=None, reasons=None, crl_issuer=None)]), False))
        access = [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                         x509.UniformResourceIdentifier(urls.ca_issuers))]
        if profile not in (CertificateProfile.ISSUING_CA, CertificateProfile.OCSP_SIGNING):
            access.insert(0, x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                                    x509.UniformResourceIdentifier(urls.ocsp)))
        exts.append((x509.AuthorityInformationAccess(access), False))
    return exts


def validity_days(profile: CertificateProfile, config: dict[str, object]) -> int:
    """Configured lifetime of a certificate of ``profile``."""
    key = {
        CertificateProfile.ROOT_CA: "ROOT_CA_VALIDITY_DAYS",
        CertificateProfile.ISSUING_CA: "ISSUING_CA_VALIDITY_DAYS",
        CertificateProfile.BUSINESS_SERVER: "BUSINESS_SERVER_VALIDITY_DAYS",
        CertificateProfile.OPERATOR: "OPERATOR_VALIDITY_DAYS",
        CertificateProfile.TLS: "TLS_VALIDITY_DAYS",
        CertificateProfile.OCSP_SIGNING: "OCSP_SIGNING_VALIDITY_DAYS",
    }[profile]
    value = config[key]
    assert isinstance(value, int)
    return value
