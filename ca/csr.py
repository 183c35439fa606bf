"""Parsing and vetting certificate signing requests (証明書発行要求ファイル).

Every way a CSR can be wrong ends in ``InvalidCsr`` with a message a person can act on.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

from kernel.errors import InvalidCsr

ALLOWED_CURVES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_CSR_LABELS = {b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"}
_WEAK_HASHES = (hashes.MD5, hashes.SHA1)


def parse_csr(data: bytes, *, max_bytes: int = 64 * 1024) -> x509.CertificateSigningRequest:
    """Load a PEM or DER CSR, verify its self-signature and key strength."""
    if not data or not data.strip():
        raise InvalidCsr("the CSR file is empty")
    if len(data) > max_bytes:
        raise InvalidCsr(f"the CSR is too large ({len(data)} bytes; at most {max_bytes})")
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN"):
        match = _PEM_BLOCK.match(stripped)
        label = match.group(1) if match else b"?"
        if label not in _CSR_LABELS:
            raise InvalidCsr(
                f"expected a PEM 'CERTIFICATE REQUEST' block, found '{label.decode(errors='replace')}'")
        try:
            csr = x509.load_pem_x509_csr(stripped)
        except ValueError:
            raise InvalidCsr("the PEM CERTIFICATE REQUEST block is damaged or truncated") from None
    else:
        try:
            csr = x509.load_der_x509_csr(data)
        except ValueError:
            raise InvalidCsr(
                "not a CSR: expected PEM (-----BEGIN CERTIFICATE REQUEST-----) or DER (PKCS#10)") from None
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidCsr("the CSR's public key cannot be read (unsupported or damaged)") from None
    check_public_key(public_key)
    try:
        signature_hash = csr.signature_hash_algorithm
    except UnsupportedAlgorithm:
        raise InvalidCsr("the CSR is signed with an unsupported algorithm") from None
    if isinstance(signature_hash, _WEAK_HASHES):
        raise InvalidCsr(f"the CSR is signed with {signature_hash.name.upper()}, which is too weak; use SHA-256")
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise InvalidCsr("the CSR's signature does not verify: it was altered or signed with another key")
    try:
        csr.subject.rfc4514_string()
        list(csr.extensions)
    except ValueError as exc:
        raise InvalidCsr(f"the CSR's subject or extensions are malformed: {exc}") from None
    return csr


def check_public_key(public_key: object) -> CertificateIssuerPublicKeyTypes:
    """Reject keys opauth will not certify: RSA under 2048 bits, unknown curves, other types."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise InvalidCsr(f"RSA keys must be at least {MIN_RSA_BITS} bits (this one has {public_key.key_size})")
        if public_key.key_size > MAX_RSA_BITS:
            raise InvalidCsr(f"RSA keys larger than {MAX_RSA_BITS} bits are not accepted")
        exponent = public_key.public_numbers().e
        if exponent < 65537 or exponent % 2 == 0:
            raise InvalidCsr("the RSA public exponent must be odd and at least 65537")
        return public_key
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ALLOWED_CURVES:
            raise InvalidCsr(
                f"the elliptic curve {public_key.curve.name} is not accepted (use P-256, P-384 or P-521)")
        return public_key
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise InvalidCsr("Ed25519/Ed448 keys are not accepted yet (use ECDSA P-256/P-384 or RSA)")
    raise InvalidCsr("unsupported public key type (use ECDSA P-256/P-384 or RSA 2048+)")
