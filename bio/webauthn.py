"""Thin wrapper over py_webauthn: options and verification with opauth's fixed policy.

- User verification is **required** in the options and in both verifications
  (py_webauthn defaults ``require_user_verification`` to False).
- Origin and RP ID come from the settings (derived from PUBLIC_BASE_URL).
- Attestation: ``none`` or ``direct`` (then a ``none`` statement is refused), and
  an optional allow-list of authenticator AAGUIDs.
- The signature counter is *not* checked here (``credential_current_sign_count=0``):
  ``bio.service`` decides what a counter that did not increase means (possible clone).

Every malformed or forged input ends in ``WebAuthnFailure`` (a 4xx), never a 500.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from flask_babel import lazy_gettext
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from kernel.errors import OpauthError


class WebAuthnFailure(OpauthError):
    """A WebAuthn response that does not verify (the message is for the audit log and the user)."""

    status = 400
    code = "webauthn_failed"


class AttestationPolicy(enum.StrEnum):
    NONE = "none"
    DIRECT = "direct"


@dataclass(frozen=True)
class RelyingParty:
    """This server as a WebAuthn relying party."""

    rp_id: str
    rp_name: str
    origin: str
    attestation: AttestationPolicy = AttestationPolicy.NONE
    allowed_aaguids: frozenset[str] = frozenset()
    challenge_seconds: int = 120

    @classmethod
    def from_config(cls, config: Any) -> RelyingParty:
        try:
            attestation = AttestationPolicy(str(config["WEBAUTHN_ATTESTATION"]).strip().lower())
        except ValueError:
            raise OpauthError("WEBAUTHN_ATTESTATION must be none or direct") from None
        aaguids = frozenset(a.strip().lower() for a in str(config["WEBAUTHN_ALLOWED_AAGUIDS"]).split(",")
                            if a.strip())
        return cls(rp_id=config["WEBAUTHN_RP_ID"], rp_name=config["WEBAUTHN_RP_NAME"],
                   origin=config["WEBAUTHN_ORIGIN"], attestation=attestation, allowed_aaguids=aaguids,
                   challenge_seconds=int(config["WEBAUTHN_CHALLENGE_SECONDS"]))


@dataclass(frozen=True)
class KnownCredential:
    """A stored credential as the options need it."""

    credential_id: bytes
    transports: tuple[str, ...] = ()


@dataclass(frozen=True)
class Options:
    """Options for the browser (JSON for ``parse*OptionsFromJSON``) and the challenge to keep server-side."""

    options_json: str
    challenge: bytes


@dataclass(frozen=True)
class VerifiedCredential:
    credential_id: bytes
    public_key: bytes
    sign_count: int
    aaguid: str
    attestation_format: str
    transports: tuple[str, ...]
    user_verified: bool


@dataclass(frozen=True)
class VerifiedAssertion:
    credential_id: bytes
    new_sign_count: int
    user_verified: bool


def _descriptors(credentials: list[KnownCredential]) -> list[PublicKeyCredentialDescriptor]:
    result = []
    for cred in credentials:
        transports = []
        for t in cred.transports:
            try:
                transports.append(AuthenticatorTransport(t))
            except ValueError:
                continue
        result.append(PublicKeyCredentialDescriptor(id=cred.credential_id, transports=transports or None))
    return result


def registration_options(*, rp: RelyingParty, user_handle: bytes, user_name: str, display_name: str,
                         exclude: list[KnownCredential]) -> Options:
    """Options for ``navigator.credentials.create``: UV required, existing credentials excluded."""
    options = generate_registration_options(
        rp_id=rp.rp_id, rp_name=rp.rp_name, user_id=user_handle, user_name=user_name,
        user_display_name=display_name,
        attestation=(AttestationConveyancePreference.DIRECT if rp.attestation is AttestationPolicy.DIRECT
                     else AttestationConveyancePreference.NONE),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=_descriptors(exclude), timeout=rp.challenge_seconds * 1000)
    return Options(options_json=options_to_json(options), challenge=options.challenge)


def authentication_options(*, rp: RelyingParty, allow: list[KnownCredential]) -> Options:
    """Options for ``navigator.credentials.get``: UV required, only the operator's credentials allowed."""
    options = generate_authentication_options(
        rp_id=rp.rp_id, allow_credentials=_descriptors(allow),
        user_verification=UserVerificationRequirement.REQUIRED, timeout=rp.challenge_seconds * 1000)
    return Options(options_json=options_to_json(options), challenge=options.challenge)


def _as_dict(credential: Any) -> dict[str, Any]:
    if isinstance(credential, str | bytes):
        try:
            credential = json.loads(credential)
        except ValueError:
            raise WebAuthnFailure(lazy_gettext("生体認証装置の応答が JSON ではありません。")) from None
    if not isinstance(credential, dict):
        raise WebAuthnFailure(lazy_gettext("生体認証装置の応答が認証情報の形式ではありません。"))
    return credential


def credential_id_of(credential: Any) -> bytes:
    """The raw credential ID a response names (to find the stored credential before verifying)."""
    data = _as_dict(credential)
    raw = data.get("rawId") or data.get("id")
    if not isinstance(raw, str) or not raw or len(raw) > 1400:
        raise WebAuthnFailure(lazy_gettext("生体認証装置の応答に認証情報IDがありません。"))
    try:
        return base64url_to_bytes(raw)
    except (ValueError, TypeError):
        raise WebAuthnFailure(lazy_gettext("認証情報IDが base64url ではありません。")) from None


def verify_registration(*, rp: RelyingParty, credential: Any, expected_challenge: bytes) -> VerifiedCredential:
    """Verify an attestation (origin, RP ID hash, challenge, UP and **UV**, attestation policy)."""
    data = _as_dict(credential)
    try:
        verified = verify_registration_response(
            credential=data, expected_challenge=expected_challenge, expected_rp_id=rp.rp_id,
            expected_origin=rp.origin, require_user_presence=True, require_user_verification=True)
    except Exception as exc:  # any malformed or forged input is a refusal, never a 500
        raise WebAuthnFailure(lazy_gettext(
            "生体情報の登録を受け付けられません: %(reason)s", reason=_reason(exc))) from None
    fmt = str(getattr(verified.fmt, "value", verified.fmt))
    if rp.attestation is AttestationPolicy.DIRECT and fmt == "none":
        raise WebAuthnFailure(lazy_gettext(
            "生体情報の登録を受け付けられません: 生体認証装置の証明 (attestation) が必要です。"))
    aaguid = str(verified.aaguid).lower()
    if rp.allowed_aaguids and aaguid not in rp.allowed_aaguids:
        raise WebAuthnFailure(lazy_gettext(
            "生体情報の登録を受け付けられません: 生体認証装置の機種 %(aaguid)s は許可されていません。",
                                            aaguid=aaguid))
    response = data.get("response")
    raw_transports = response.get("transports") if isinstance(response, dict) else None
    transports = tuple(t for t in raw_transports[:10] if isinstance(t, str) and t.isascii() and t.isalnum()
                       and len(t) <= 20) if isinstance(raw_transports, list) else ()
    return VerifiedCredential(credential_id=verified.credential_id, public_key=verified.credential_public_key,
                              sign_count=verified.sign_count, aaguid=aaguid, attestation_format=fmt,
                              transports=transports, user_verified=verified.user_verified)


def verify_assertion(*, rp: RelyingParty, credential: Any, expected_challenge: bytes,
                     public_key: bytes) -> VerifiedAssertion:
    """Verify an assertion (origin, RP ID hash, challenge, UP and **UV**, signature); not the counter."""
    data = _as_dict(credential)
    try:
        verified = verify_authentication_response(
            credential=data, expected_challenge=expected_challenge, expected_rp_id=rp.rp_id,
            expected_origin=rp.origin, credential_public_key=public_key,
            credential_current_sign_count=0, require_user_verification=True)
    except Exception as exc:  # any malformed or forged input is a refusal, never a 500
        raise WebAuthnFailure(lazy_gettext("生体認証を受け付けられません: %(reason)s", reason=_reason(exc))) from None
    return VerifiedAssertion(credential_id=verified.credential_id, new_sign_count=verified.new_sign_count,
                             user_verified=verified.user_verified)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
