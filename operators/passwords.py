"""Password hashing with argon2id (argon2-cffi); one module so parameters live in one place."""

from __future__ import annotations

import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile defaults
# Verified when the operator does not exist, so both paths cost the same.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

_ALPHABET = string.ascii_letters + string.digits


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant-work check; a missing operator (``stored_hash`` None/empty) still costs one verify."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and bool(stored_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def generate_password(length: int = 16) -> str:
    """A random password of letters and digits (half-width alphanumerics, as the seed's screen asks)."""
    while True:
        candidate = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        if (any(c.islower() for c in candidate) and any(c.isupper() for c in candidate)
                and any(c.isdigit() for c in candidate)):
            return candidate


def check_policy(password: str, *, operator_id: str, min_length: int = 12) -> str | None:
    """The reason ``password`` is unacceptable, or None."""
    if len(password) < min_length:
        return f"the password must be at least {min_length} characters"
    if len(password) > 256:
        return "the password must be at most 256 characters"
    if operator_id and operator_id.lower() in password.lower():
        return "the password must not contain the operator ID"
    return None
