"""Authlib endpoints beside the grant: token revocation (RFC 7009), introspection (RFC 7662), end session.

Revocation and introspection are for business systems authenticated by mutual TLS.
A business system may revoke or introspect only the access tokens issued to it, authenticating with
its SSL通信証明書 exactly as at the token endpoint. Introspection also requires that certificate to be
the one the token is bound to (``cnf.x5t#S256``); otherwise the token is reported inactive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import g
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from db import get_session, utcnow
from kernel.audit import Actor, AuditAction, record_event
from oidc.keys import ALGORITHM, verification_keys
from oidc.models import OidcToken
from oidc.pairwise import b64url_sha256_from_hex
from oidc.server import Client, issuer, query_client
from operators.login.mtls import ClientIdentity


@dataclass(frozen=True)
class IssuedToken:
    """A JWT access token we signed, with its database row (Authlib's TokenMixin)."""

    row: OidcToken
    claims: dict[str, Any]

    def check_client(self, client: Client) -> bool:
        return self.row.business_system_id == client.system.id

    def is_expired(self) -> bool:
        return int(self.claims.get("exp", 0)) <= int(time.time())

    def is_revoked(self) -> bool:
        return self.row.revoked_at is not None

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))


def find_issued_token(token_string: str) -> IssuedToken | None:
    """The access token if it is a JWT we signed and recorded; None for anything else."""
    if len(token_string) > 8192:
        return None
    try:
        decoded = jwt.decode(token_string, verification_keys(get_session()), algorithms=[ALGORITHM])
    except (JoseError, ValueError):
        return None
    claims = dict(decoded.claims)
    if decoded.header.get("typ") != "at+jwt" or claims.get("iss") != issuer() or not isinstance(claims.get("jti"),
                                                                                                   str):
        return None
    row = get_session().get(OidcToken, claims["jti"])
    return IssuedToken(row, claims) if row is not None else None


class Revocation(RevocationEndpoint):
    """RFC 7009: a business system revokes one of its access tokens."""

    CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["tls_client_auth"]
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def query_token(self, token_string: str, token_type_hint: str | None) -> IssuedToken | None:
        return find_issued_token(token_string)

    def revoke_token(self, token: IssuedToken, request: Any) -> None:
        if token.row.revoked_at is None:
            token.row.revoked_at = utcnow()
            record_event(get_session(), action=AuditAction.OIDC_TOKEN_REVOKED,
                         actor=Actor(name="oidc-client", source=flask_request.remote_addr or ""),
                         target=f"client:{token.claims.get('client_id', '')}", detail={"jti": token.row.jti})


class Introspection(IntrospectionEndpoint):
    """RFC 7662: a business system asks whether one of its access tokens is active."""

    CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["tls_client_auth"]
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def query_token(self, token_string: str, token_type_hint: str | None) -> IssuedToken | None:
        return find_issued_token(token_string)

    def check_permission(self, token: IssuedToken, client: Client, request: Any) -> bool:
        identity: ClientIdentity = g.oidc_client_identity
        # Its own token, presented over the very certificate the token is bound to.
        return token.check_client(client) and token.row.client_cert_sha256 == identity.fingerprint_sha256

    def introspect_token(self, token: IssuedToken) -> dict[str, Any]:
        claims = token.claims
        return {"active": True, "token_type": "Bearer", "scope": claims.get("scope", ""),
                "client_id": claims.get("client_id"), "sub": claims.get("sub"), "aud": claims.get("aud"),
                "iss": claims.get("iss"), "exp": claims.get("exp"), "iat": claims.get("iat"),
                "jti": claims.get("jti"), "sid": claims.get("sid"),
                "cnf": {"x5t#S256": b64url_sha256_from_hex(token.row.client_cert_sha256)}}


class EndSession(EndSessionEndpoint):
    """RP-initiated logout: validates ``id_token_hint`` and ``post_logout_redirect_uri``; the view logs out."""

    def get_server_jwks(self) -> KeySet:
        return verification_keys(get_session())

    def get_algorithms(self) -> list[str]:
        return [ALGORITHM]

    def resolve_client_from_id_token_claims(self, id_token_claims: dict[str, Any]) -> Client | None:
        aud = id_token_claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else list(aud or [])
        return query_client(str(audiences[0])) if len(audiences) == 1 else None

    def end_session(self, end_session_request: Any) -> None:
        pass  # the view ends opauth's session itself (audit, Flask-Login, back-channel logouts)
