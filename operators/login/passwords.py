"""Password hashing with argon2id (argon2-cffi); one module so parameters live in one place.

The parameters come from the settings (``ARGON2_*``); hashes made with older
parameters still verify and are re-hashed at the next successful login.
"""

from __future__ import annotations

import functools
import secrets
import string
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app, has_app_context
from flask_babel import gettext as _

_ALPHABET = string.ascii_letters + string.digits
MAX_PASSWORD_LENGTH = 256


@dataclass(frozen=True)
class Argon2Parameters:
    """argon2id cost parameters (RFC 9106)."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4

    @classmethod
    def from_config(cls, config: Any) -> Argon2Parameters:
        return cls(time_cost=int(config.get("ARGON2_TIME_COST", cls.time_cost)),
                   memory_kib=int(config.get("ARGON2_MEMORY_KIB", cls.memory_kib)),
                   parallelism=int(config.get("ARGON2_PARALLELISM", cls.parallelism)))


@functools.lru_cache(maxsize=8)
def _hasher(params: Argon2Parameters) -> PasswordHasher:
    return PasswordHasher(time_cost=params.time_cost, memory_cost=params.memory_kib,
                          parallelism=params.parallelism, type=Type.ID)


@functools.lru_cache(maxsize=8)
def _dummy_hash(params: Argon2Parameters) -> str:
    # Verified when the operator does not exist, so both paths cost the same.
    return _hasher(params).hash(secrets.token_urlsafe(16))


def _params() -> Argon2Parameters:
    if has_app_context():
        return Argon2Parameters.from_config(current_app.config)
    return Argon2Parameters()


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` with the configured parameters."""
    return _hasher(_params()).hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant-work check; a missing operator (``stored_hash`` None/empty) still costs one verify."""
    params = _params()
    try:
        return _hasher(params).verify(stored_hash or _dummy_hash(params), password) and bool(stored_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when ``stored_hash`` was made with other parameters than the configured ones."""
    try:
        return _hasher(_params()).check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


def generate_password(length: int = 16) -> str:
    """A random password of letters and digits (half-width alphanumerics, as the seed's screen asks)."""
    while True:
        candidate = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        if (any(c.islower() for c in candidate) and any(c.isupper() for c in candidate)
                and any(c.isdigit() for c in candidate)):
            return candidate


def check_policy(password: str, *, operator_id: str, min_length: int | None = None) -> str | None:
    """The reason ``password`` is unacceptable (length, contains the operator ID), or None.

    Reuse of earlier passwords needs the database: see ``operators.login.service.change_password``.
    """
    if min_length is None:
        min_length = int(current_app.config["PASSWORD_MIN_LENGTH"]) if has_app_context() else 12
    if len(password) < min_length:
        return str(_("パスワードは%(n)d文字以上にしてください。", n=min_length))
    if len(password) > MAX_PASSWORD_LENGTH:
        return str(_("パスワードは%(n)d文字以下にしてください。", n=MAX_PASSWORD_LENGTH))
    if operator_id and operator_id.lower() in password.lower():
        return str(_("パスワードにオペレータIDを含めることはできません。"))
    return None
