"""Delivering a server-generated key: a password-protected PKCS#12 built in memory, handed out once.

Used for operator certificates (オペレータ証明書) and reusable for SSL communication
certificates. The private key exists only in this process while the PKCS#12 is
built; it is never written to the database, a log or a URL. The PKCS#12 uses
PBES2 (AES-256-CBC, PBKDF2-SHA256) and an HMAC-SHA256 MAC, which OpenSSL 3
and current Windows and macOS import.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12

# Unambiguous characters only: the password is read off a screen and typed on a terminal.
_ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")
KDF_ROUNDS = 100_000


@dataclass(frozen=True)
class Pkcs12Bundle:
    """A PKCS#12 file and the password that opens it (show both once; store neither)."""

    data: bytes
    password: str
    filename: str


def generate_transport_password(length: int = 20) -> str:
    """A random password for a PKCS#12 (about 113 bits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def build_pkcs12(
    *,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    friendly_name: str,
    filename: str,
    password: str | None = None,
) -> Pkcs12Bundle:
    """Key, certificate and CA chain in one encrypted PKCS#12; a random password unless given."""
    password = password or generate_transport_password()
    encryption = (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode())
    )
    data = pkcs12.serialize_key_and_certificates(
        name=friendly_name.encode("utf-8"), key=key, cert=certificate, cas=list(chain),
        encryption_algorithm=encryption)
    return Pkcs12Bundle(data=data, password=password, filename=filename)
