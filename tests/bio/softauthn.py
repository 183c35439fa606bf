"""A software WebAuthn authenticator (EC P-256, "none" attestation) for unit tests.

It builds the same JSON a browser's ``credential.toJSON()`` returns, and lets a
test change what a real authenticator would never change: the origin, the RP
ID, the UV flag, the signature counter, the signature itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _options(options: str | dict[str, Any]) -> dict[str, Any]:
    return json.loads(options) if isinstance(options, str) else options


class SoftAuthenticator:
    def __init__(self, *, rp_id: str = "localhost", origin: str = "https://localhost:8443",
                 aaguid: bytes = bytes(16)) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.rp_id = rp_id
        self.origin = origin
        self.aaguid = aaguid
        self.counter = 0

    def cose_public_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})

    def _client_data(self, kind: str, options: dict[str, Any], origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": options["challenge"], "origin": origin or self.origin,
                           "crossOrigin": False}).encode()

    def create(self, options: str | dict[str, Any], *, origin: str | None = None, rp_id: str | None = None,
               uv: bool = True) -> dict[str, Any]:
        """A registration response (attestation "none")."""
        opts = _options(options)
        client_data = self._client_data("webauthn.create", opts, origin)
        flags = UP | AT | (UV if uv else 0)
        auth_data = (hashlib.sha256((rp_id or self.rp_id).encode()).digest() + bytes([flags])
                     + self.counter.to_bytes(4, "big") + self.aaguid
                     + len(self.credential_id).to_bytes(2, "big") + self.credential_id + self.cose_public_key())
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {"id": b64url(self.credential_id), "rawId": b64url(self.credential_id), "type": "public-key",
                "response": {"clientDataJSON": b64url(client_data), "attestationObject": b64url(attestation),
                             "transports": ["internal"]},
                "clientExtensionResults": {}, "authenticatorAttachment": "platform"}

    def get(self, options: str | dict[str, Any], *, origin: str | None = None, rp_id: str | None = None,
            uv: bool = True, counter: int | None = None, tamper: bool = False) -> dict[str, Any]:
        """An assertion; the counter goes up by one unless ``counter`` says otherwise."""
        opts = _options(options)
        if counter is None:
            self.counter += 1
            counter = self.counter
        client_data = self._client_data("webauthn.get", opts, origin)
        flags = UP | (UV if uv else 0)
        auth_data = hashlib.sha256((rp_id or self.rp_id).encode()).digest() + bytes([flags]) + counter.to_bytes(
            4, "big")
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        if tamper:
            client_data = client_data.replace(b'"crossOrigin": false', b'"crossOrigin": false ')
        return {"id": b64url(self.credential_id), "rawId": b64url(self.credential_id), "type": "public-key",
                "response": {"clientDataJSON": b64url(client_data), "authenticatorData": b64url(auth_data),
                             "signature": b64url(signature)},
                "clientExtensionResults": {}, "authenticatorAttachment": "platform"}
