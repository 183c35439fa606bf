"""Pairwise subject identifiers (OpenID Connect Core §8.1): one pseudonym per operator and business system.

``sub = base64url(HMAC-SHA256(K, "biz:<業務ID>" || 0x00 || operator pk))``. The key K is an instance
secret kept in ``instance/keys/pairwise`` (mode 0600), never in the database, so a database copy alone
cannot link one system's users to another's. The sector is the business system, never the redirect
URI of the request. The value does not change with a password change or certificate reissue; a new
operator row (e.g. after moving to another tenant) is a new identity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_FILE = Path("keys") / "pairwise"


_read_keys: dict[Path, bytes] = {}  # the secret never changes once written: read once per process


def pairwise_key(instance_dir: Path) -> bytes:
    """The instance's pairwise secret, generated once (32 random bytes, mode 0600)."""
    path = instance_dir / KEY_FILE
    known = _read_keys.get(path)
    if known is not None:
        return known
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written aside and linked into place, so a concurrent worker never reads a half-written secret.
        draft = path.with_name(f".pairwise-{secrets.token_hex(8)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)
        except FileExistsError:  # another worker created it first: theirs counts
            pass
        finally:
            draft.unlink()
    key = path.read_text().strip().encode()
    _read_keys[path] = key
    return key


def sector_for(business_id: str) -> str:
    """The sector identifier of a business system."""
    return f"biz:{business_id}"


def pairwise_sub(key: bytes, *, sector: str, operator_pk: int) -> str:
    """The subject identifier an operator has towards one sector (43 base64url characters)."""
    message = sector.encode() + b"\x00" + str(operator_pk).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def b64url_sha256_from_hex(hex_digest: str) -> str:
    """A SHA-256 given in hex (as the certificate table keeps it), as base64url without padding."""
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode()
