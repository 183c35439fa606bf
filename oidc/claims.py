"""Who may sign in to which business system, and what the business system learns about them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from oidc.models import OidcClient
from oidc.pairwise import b64url_sha256_from_hex, pairwise_sub, sector_for
from operators.login.service import locked_until
from operators.models import BusinessSystem, InBusinessId, Operator
from operators.tenancy import may_use_business_system

CLAIM_TENANT = "https://opauth/tenant"
CLAIM_IN_BUSINESS_ID = "https://opauth/in_business_id"
CLAIM_PERMISSIONS = "https://opauth/permissions"
CLAIM_OPERATOR_CERT = "https://opauth/op_cert#S256"


class Refusal(enum.StrEnum):
    """Why an operator may not sign in to a business system (audited; the client sees access_denied)."""

    REVOKED = "operator_revoked"
    LOCKED = "operator_locked"
    NOT_PERMITTED = "system_not_permitted"  # not in 許可業務, no 共同利用 for the tenant, or system disabled
    CLIENT_DISABLED = "business_login_disabled"


def refusal_for(session: Session, *, operator: Operator, system: BusinessSystem,
                client: OidcClient | None) -> Refusal | None:
    """None when ``operator`` may sign in to ``system`` now; otherwise why not.

    Permitted means: the system is among the operator's 許可業務, their tenant has it by 共同利用,
    the system and its business login are enabled, and the operator is neither revoked nor locked.
    """
    if operator.revoked_at is not None:
        return Refusal.REVOKED
    if locked_until(session, operator) is not None:
        return Refusal.LOCKED
    if client is None or not client.enabled:
        return Refusal.CLIENT_DISABLED
    if not may_use_business_system(session, operator, system):
        return Refusal.NOT_PERMITTED
    return None


# Table-level statements, run on the session's connection: no ORM entities to build for two values.
_IN_BUSINESS = InBusinessId.__table__.c
_IN_BUSINESS_ID = select(_IN_BUSINESS.in_business_id, _IN_BUSINESS.permissions).where(
    _IN_BUSINESS.operator_id == bindparam("operator"), _IN_BUSINESS.business_system_id == bindparam("system"))


class LoginKind(enum.StrEnum):
    """How the operator logged in to opauth, as RFC 8176 ``amr`` and opauth's ``acr`` tell it."""

    PASSWORD = "password"
    BIOMETRIC = "biometric"

    @property
    def amr(self) -> list[str]:
        # WebAuthn with user verification: a hardware key plus the user; the server cannot tell a PIN from
        # a fingerprint, so no "fpt".
        return ["pwd"] if self is LoginKind.PASSWORD else ["hwk", "user"]

    @property
    def acr(self) -> str:
        return f"urn:opauth:acr:{self.value}"


@dataclass(frozen=True)
class Subject:
    """The operator as one business system sees them, with the facts of the login that approved it."""

    operator: Operator
    system: BusinessSystem
    sub: str
    sid: str
    auth_time: int
    login_kind: LoginKind
    operator_cert_sha256: str  # hex; empty unless a biometric login presented an operator certificate

    def get_user_id(self) -> str:
        """Authlib's user id: the pairwise subject."""
        return self.sub


def subject_for(session: Session, pairwise_key: bytes, *, operator: Operator, system: BusinessSystem, sid: str,
                auth_time: int, login_method: str, operator_cert_sha256: str) -> Subject:
    """Build the ``Subject`` (pairwise ``sub`` for this system) of one login."""
    kind = LoginKind.BIOMETRIC if login_method == LoginKind.BIOMETRIC.value else LoginKind.PASSWORD
    return Subject(operator=operator, system=system,
                   sub=pairwise_sub(pairwise_key, sector=sector_for(system.business_id), operator_pk=operator.id),
                   sid=sid, auth_time=auth_time, login_kind=kind, operator_cert_sha256=operator_cert_sha256)


def user_claims(session: Session, subject: Subject, scope: str) -> dict[str, Any]:
    """The claims released in the ID token and at userinfo (the global operator ID is never released)."""
    operator, system = subject.operator, subject.system
    claims: dict[str, Any] = {
        "sub": subject.sub,
        "sid": subject.sid,
        CLAIM_TENANT: {"code": operator.tenant.code, "name": operator.tenant.name},
    }
    if "profile" in scope.split():
        claims["name"] = operator.name
    mapping = session.connection().execute(_IN_BUSINESS_ID, {"operator": operator.id, "system": system.id}).first()
    if mapping is not None:
        claims[CLAIM_IN_BUSINESS_ID] = mapping.in_business_id
        claims[CLAIM_PERMISSIONS] = list(mapping.permissions or [])
    else:
        claims[CLAIM_PERMISSIONS] = []
    if subject.login_kind is LoginKind.BIOMETRIC and subject.operator_cert_sha256:
        claims[CLAIM_OPERATOR_CERT] = b64url_sha256_from_hex(subject.operator_cert_sha256)
    return claims
