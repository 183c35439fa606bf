"""Certificate profiles: the one place that decides each certificate type's extensions.

Every end-entity certificate gets basic constraints, key usage, extended key
usage, SKI/AKI, certificatePolicies (``CERTIFICATE_POLICY_OID``), a CRL
distribution point and an AIA (OCSP + caIssuers) that point at URLs this server
serves (see ``certs/pki_views.py``). The OCSP responder's certificate carries no
CRL distribution point nor AIA: it is id-pkix-ocsp-nocheck, so relying parties
never check its status, and the response names the CA it answers for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ca.models import CertificateProfile

# Operator certificates name their permitted 業務IDs as X.509 roles (id-at-role, RFC 5755 RoleSyntax)
# in the standard subjectDirectoryAttributes extension (RFC 5280 4.2.1.8): one role per business
# system, roleName = URI "urn:opauth:business:<業務ID>". No private OID arc is needed, and
# generic tools (openssl, pkilint, asn1 decoders) can read it.
ID_AT_ROLE = "2.5.4.72"
BUSINESS_ROLE_PREFIX = "urn:opauth:business:"


class _RoleSyntax(core.Sequence):
    _fields = [  # noqa: RUF012 - asn1crypto's declaration style
        ("role_authority", asn1_x509.GeneralNames, {"implicit": 0, "optional": True}),
        ("role_name", asn1_x509.GeneralName, {"explicit": 1}),
    ]


class _AttributeValues(core.SetOf):
    _child_spec = core.Any


class _Attribute(core.Sequence):
    _fields = [("type", core.ObjectIdentifier), ("values", _AttributeValues)]  # noqa: RUF012


class _SubjectDirectoryAttributes(core.SequenceOf):
    _child_spec = _Attribute


def _business_roles(business_ids: Sequence[str]) -> x509.UnrecognizedExtension:
    roles = [
        core.Any.load(_RoleSyntax({"role_name": asn1_x509.GeneralName(
            name="uniform_resource_identifier", value=BUSINESS_ROLE_PREFIX + business_id)}).dump())
        for business_id in business_ids
    ]
    value = _SubjectDirectoryAttributes([_Attribute({"type": ID_AT_ROLE, "values": roles})])
    return x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.9"), value.dump())


def permitted_business_ids(cert: x509.Certificate) -> list[str]:
    """The 業務IDs an operator certificate permits (empty when it carries none)."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("2.5.29.9"))
    except x509.ExtensionNotFound:
        return []
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    ids: list[str] = []
    for attribute in _SubjectDirectoryAttributes.load(ext.value.value):
        if attribute["type"].dotted != ID_AT_ROLE:
            continue
        for value in attribute["values"]:
            name = _RoleSyntax.load(value.dump())["role_name"].native
            if isinstance(name, str) and name.startswith(BUSINESS_ROLE_PREFIX):
                ids.append(name[len(BUSINESS_ROLE_PREFIX):])
    return ids


@dataclass(frozen=True)
class PkiUrls:
    """Where relying parties fetch this CA's CRL, OCSP answers and certificate."""

    crl: str
    ocsp: str
    ca_issuers: str


def pki_urls(base_url: str, authority_id: int) -> PkiUrls:
    """The URLs served by ``certs/pki_views.py`` for the CA with this id."""
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


def extensions_for(
    profile: CertificateProfile,
    *,
    public_key: CertificateIssuerPublicKeyTypes,
    issuer_public_key: CertificateIssuerPublicKeyTypes | None,
    urls: PkiUrls | None,
    sans: Sequence[x509.GeneralName] = (),
    business_ids: Sequence[str] = (),
    policy_oid: str | None = None,
) -> list[tuple[x509.ExtensionType, bool]]:
    """(extension, critical) pairs for a certificate of ``profile``.

    ``issuer_public_key`` is None only for the self-signed root; ``urls`` (the
    issuer's CRL/OCSP/caIssuers) is None only for the root. ``policy_oid`` goes into
    certificatePolicies of every certificate but the root (which asserts none: it is the anchor).
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
            exts.append((_business_roles(business_ids), False))

    exts.append((x509.SubjectKeyIdentifier.from_public_key(public_key), False))
    if issuer_public_key is not None:
        exts.append((x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), False))
    if policy_oid and profile is not CertificateProfile.ROOT_CA:
        exts.append((x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(policy_oid), None)]),
                     False))
    if urls is not None and profile is not CertificateProfile.OCSP_SIGNING:
        exts.append((x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(urls.crl)],
            relative_name=None, reasons=None, crl_issuer=None)]), False))
        access = [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                         x509.UniformResourceIdentifier(urls.ca_issuers))]
        if profile is not CertificateProfile.ISSUING_CA:
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
