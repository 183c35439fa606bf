"""Signers: the CA's private key behind a small interface.

Issuance code only ever asks a ``Signer`` for ``private_key`` (an object that
cryptography's builders accept) and ``hash_algorithm``. The software signer
keeps an encrypted PKCS#8 file; a PKCS#11 signer is a new class registered
under the ``pkcs11:`` URI scheme, with no change to issuance.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)


class Signer(Protocol):
    """What issuance needs from a CA key."""

    @property
    def private_key(self) -> CertificateIssuerPrivateKeyTypes: ...

    @property
    def hash_algorithm(self) -> hashes.SHA256 | hashes.SHA384: ...

    def public_key(self) -> CertificateIssuerPublicKeyTypes: ...


def generate_private_key(algorithm: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A new key of the configured algorithm (ec-p256, ec-p384, rsa-2048, rsa-3072)."""
    if algorithm == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[4:]))
    raise ValueError(f"unknown key algorithm {algorithm!r}")


def hash_for_key(key: CertificateIssuerPrivateKeyTypes | CertificateIssuerPublicKeyTypes
                 ) -> hashes.SHA256 | hashes.SHA384:
    """SHA-384 for P-384 and larger curves, SHA-256 otherwise."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


@dataclass(frozen=True)
class SoftwareSigner:
    """A key held in this process, loaded from an encrypted PKCS#8 PEM file."""

    key: CertificateIssuerPrivateKeyTypes

    @property
    def private_key(self) -> CertificateIssuerPrivateKeyTypes:
        return self.key

    @property
    def hash_algorithm(self) -> hashes.SHA256 | hashes.SHA384:
        return hash_for_key(self.key)

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self.key.public_key()

    def __repr__(self) -> str:  # never show key material
        return "SoftwareSigner(<private key>)"


class KeyStoreError(Exception):
    """A key could not be stored or loaded (missing file, wrong passphrase)."""


def _path_from_uri(uri: str, base: Path) -> Path:
    if not uri.startswith("file:"):
        raise KeyStoreError(f"unsupported key URI scheme in {uri!r} (supported: file:)")
    path = Path(uri[len("file:"):])
    return path if path.is_absolute() else base / path


def store_software_key(key: CertificateIssuerPrivateKeyTypes, *, uri: str, base: Path,
                       passphrase: bytes) -> None:
    """Write ``key`` as AES-256 encrypted PKCS#8 PEM, mode 0600, refusing to overwrite."""
    path = _path_from_uri(uri, base)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def load_signer(uri: str, *, base: Path, passphrase: bytes) -> Signer:
    """Open the key named by ``uri``; the scheme picks the signer class."""
    path = _path_from_uri(uri, base)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyStoreError(f"cannot read CA key {uri}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError):
        raise KeyStoreError(f"cannot decrypt CA key {uri}: wrong passphrase or damaged file") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise KeyStoreError(f"unsupported CA key type in {uri}")
    return SoftwareSigner(key)


def ensure_passphrase(instance_dir: Path, configured: str) -> bytes:
    """The configured passphrase, or one generated once into the instance (mode 0600)."""
    if configured:
        return configured.encode()
    path = instance_dir / "keys" / "passphrase"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip().encode()
