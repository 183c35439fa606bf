"""The py_webauthn wrapper refuses every response a real, verifying platform authenticator would not send."""

from __future__ import annotations

import json

import pytest

from bio.webauthn import (
    AttestationPolicy,
    KnownCredential,
    RelyingParty,
    WebAuthnFailure,
    authentication_options,
    credential_id_of,
    registration_options,
    verify_assertion,
    verify_registration,
)
from tests.bio.softauthn import SoftAuthenticator

RP = RelyingParty(rp_id="localhost", rp_name="opauth", origin="https://localhost:8443")


def _registered(authn: SoftAuthenticator, rp: RelyingParty = RP) -> bytes:
    options = registration_options(rp=rp, user_handle=b"\x01" * 32, user_name="OP1@system", display_name="OP1",
                                   exclude=[])
    verified = verify_registration(rp=rp, credential=authn.create(options.options_json),
                                   expected_challenge=options.challenge)
    assert verified.user_verified and verified.credential_id == authn.credential_id
    return verified.public_key


def test_options_require_user_verification_and_exclude_known_credentials() -> None:
    options = json.loads(registration_options(
        rp=RP, user_handle=b"\x02" * 32, user_name="OP1@system", display_name="OP1",
        exclude=[KnownCredential(b"\x09" * 16, ("internal",))]).options_json)
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["excludeCredentials"][0]["id"] == "CQkJCQkJCQkJCQkJCQkJCQ"
    assert options["rp"]["id"] == "localhost"
    request = json.loads(authentication_options(rp=RP, allow=[KnownCredential(b"\x09" * 16)]).options_json)
    assert request["userVerification"] == "required" and len(request["allowCredentials"]) == 1


def test_registration_and_assertion_verify() -> None:
    authn = SoftAuthenticator()
    public_key = _registered(authn)
    options = authentication_options(rp=RP, allow=[KnownCredential(authn.credential_id)])
    result = verify_assertion(rp=RP, credential=authn.get(options.options_json),
                              expected_challenge=options.challenge, public_key=public_key)
    assert result.user_verified and result.new_sign_count == 1


@pytest.mark.parametrize("change", [
    {"origin": "https://evil.example"},
    {"origin": "http://localhost:8443"},
    {"rp_id": "evil.example"},
    {"uv": False},
])
def test_registration_refused(change: dict[str, object]) -> None:
    options = registration_options(rp=RP, user_handle=b"\x01" * 32, user_name="u", display_name="u", exclude=[])
    with pytest.raises(WebAuthnFailure):
        verify_registration(rp=RP, credential=SoftAuthenticator().create(options.options_json, **change),
                            expected_challenge=options.challenge)


@pytest.mark.parametrize("change", [
    {"origin": "https://evil.example"},
    {"rp_id": "evil.example"},
    {"uv": False},
    {"tamper": True},
])
def test_assertion_refused(change: dict[str, object]) -> None:
    authn = SoftAuthenticator()
    public_key = _registered(authn)
    options = authentication_options(rp=RP, allow=[KnownCredential(authn.credential_id)])
    with pytest.raises(WebAuthnFailure):
        verify_assertion(rp=RP, credential=authn.get(options.options_json, **change),
                         expected_challenge=options.challenge, public_key=public_key)


def test_assertion_for_another_challenge_is_refused() -> None:
    authn = SoftAuthenticator()
    public_key = _registered(authn)
    first = authentication_options(rp=RP, allow=[])
    second = authentication_options(rp=RP, allow=[])
    with pytest.raises(WebAuthnFailure):
        verify_assertion(rp=RP, credential=authn.get(first.options_json), expected_challenge=second.challenge,
                         public_key=public_key)


def test_assertion_signed_by_another_key_is_refused() -> None:
    authn, other = SoftAuthenticator(), SoftAuthenticator()
    public_key = _registered(authn)
    options = authentication_options(rp=RP, allow=[])
    with pytest.raises(WebAuthnFailure):
        verify_assertion(rp=RP, credential=other.get(options.options_json), expected_challenge=options.challenge,
                         public_key=public_key)


@pytest.mark.parametrize("garbage", ["", "not json", "[]", "{}", '{"id": 5}', {"response": "x", "id": "AA"},
                                     {"id": "AAAA", "rawId": "AAAA", "type": "public-key",
                                      "response": {"clientDataJSON": "!!", "authenticatorData": "",
                                                   "signature": ""}}, None, 42])
def test_garbage_is_a_refusal_not_a_crash(garbage: object) -> None:
    with pytest.raises(WebAuthnFailure):
        verify_assertion(rp=RP, credential=garbage, expected_challenge=b"x" * 32, public_key=b"\xa0")
    with pytest.raises(WebAuthnFailure):
        verify_registration(rp=RP, credential=garbage, expected_challenge=b"x" * 32)


def test_credential_id_of_rejects_garbage() -> None:
    assert credential_id_of({"rawId": "AQID"}) == b"\x01\x02\x03"
    for bad in ({}, {"rawId": 5}, "nope", {"rawId": "A" * 2000}):
        with pytest.raises(WebAuthnFailure):
            credential_id_of(bad)


def test_direct_attestation_policy_refuses_a_none_statement() -> None:
    rp = RelyingParty(rp_id="localhost", rp_name="x", origin="https://localhost:8443",
                      attestation=AttestationPolicy.DIRECT)
    options = registration_options(rp=rp, user_handle=b"\x01" * 32, user_name="u", display_name="u", exclude=[])
    assert json.loads(options.options_json)["attestation"] == "direct"
    with pytest.raises(WebAuthnFailure, match="attestation"):
        verify_registration(rp=rp, credential=SoftAuthenticator().create(options.options_json),
                            expected_challenge=options.challenge)


def test_aaguid_allow_list() -> None:
    allowed = "01020304-0506-0708-090a-0b0c0d0e0f10"
    rp = RelyingParty(rp_id="localhost", rp_name="x", origin="https://localhost:8443",
                      allowed_aaguids=frozenset({allowed}))
    options = registration_options(rp=rp, user_handle=b"\x01" * 32, user_name="u", display_name="u", exclude=[])
    with pytest.raises(WebAuthnFailure, match="許可されていません"):
        verify_registration(rp=rp, credential=SoftAuthenticator().create(options.options_json),
                            expected_challenge=options.challenge)
    good = SoftAuthenticator(aaguid=bytes(range(1, 17)))
    assert verify_registration(rp=rp, credential=good.create(options.options_json),
                               expected_challenge=options.challenge).aaguid == allowed


def test_relying_party_is_derived_from_the_public_base_url() -> None:
    from config import load_settings

    settings = load_settings({"PUBLIC_BASE_URL": "https://opauth.city.example.jp:8443/"}, environ={})
    rp = RelyingParty.from_config(settings)
    assert rp.rp_id == "opauth.city.example.jp" and rp.origin == "https://opauth.city.example.jp:8443"
