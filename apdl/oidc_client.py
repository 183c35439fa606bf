"""Operator login through opauth's OIDC business login: the module is an ordinary relying party.

Authorization code flow with PKCE S256, ``state`` and ``nonce``; the token request authenticates the
module by mutual TLS with its SSL通信証明書 (RFC 8705 ``tls_client_auth``: no secret, ``client_id`` in the
body) through Authlib's requests client. ID and logout tokens are ES256 JWTs checked with joserfc against
the provider's JWKS (fetched again once when a token names an unknown ``kid``, after a key rotation).
"""

from __future__ import annotations

import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
CLAIM_TENANT = "https://opauth/tenant"
CLAIM_IN_BUSINESS_ID = "https://opauth/in_business_id"
CLAIM_PERMISSIONS = "https://opauth/permissions"
ALGORITHMS = ["ES256"]
LEEWAY_SECONDS = 30
DISCOVERY_TTL_SECONDS = 300


class LoginError(Exception):
    """The login could not be completed; ``reason`` is for the operation log, never shown with secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ClientSettings:
    """What the module needs to be a client of opauth."""

    issuer: str
    client_id: str
    redirect_uri: str
    cert: str
    key: str
    ca_bundle: str
    timeout: float

    @classmethod
    def from_config(cls, config: Any) -> ClientSettings:
        """From the app's config (APDL_* settings)."""
        return cls(issuer=config["OPAUTH_ISSUER"], client_id=config["CLIENT_ID"],
                   redirect_uri=config["PUBLIC_BASE_URL"] + "/auth/callback", cert=config["CLIENT_CERT"],
                   key=config["CLIENT_KEY"], ca_bundle=config["CA_BUNDLE"], timeout=float(config["HTTP_TIMEOUT"]))

    @property
    def verify(self) -> str | bool:
        """What requests verifies opauth's server certificate with."""
        return self.ca_bundle or True


@dataclass(frozen=True)
class LoginRequest:
    """One authorization request: where to send the browser and what the callback must match."""

    url: str
    state: str
    nonce: str
    verifier: str


@dataclass(frozen=True)
class Identity:
    """What a verified ID token says about the operator."""

    sub: str
    sid: str
    name: str
    tenant_code: str
    tenant_name: str
    in_business_id: str
    permissions: list[str]
    acr: str
    id_token: str = ""  # kept for RP-initiated logout (``id_token_hint``)


@dataclass(frozen=True)
class LogoutToken:
    """What a verified logout token names: the session (``sid``) or the operator (``sub``), its ``jti`` and ``iat``."""

    sid: str
    sub: str
    jti: str
    iat: int


class Provider:
    """opauth as seen from the module: discovery document and JWKS, cached."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None

    def _get(self, url: str) -> Any:
        try:
            response = requests.get(url, verify=self.settings.verify, timeout=self.settings.timeout)
            response.raise_for_status()
            return response.json()
        except (requests.RequestException, ValueError) as exc:
            raise LoginError(f"opauth unreachable: {type(exc).__name__}")

    def metadata(self) -> dict[str, Any]:
        """The discovery document (its issuer must be the configured one)."""
        with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at > DISCOVERY_TTL_SECONDS:
                if not self.settings.issuer:
                    raise LoginError("APDL_OPAUTH_ISSUER is not set")
                data = self._get(self.settings.issuer + "/.well-known/openid-configuration")
                if data.get("issuer") != self.settings.issuer:
                    raise LoginError("discovery names another issuer")
                self._metadata, self._metadata_at = data, time.monotonic()
            return self._metadata

    def keys(self, *, refresh: bool = False) -> KeySet:
        """The provider's signing keys."""
        with self._lock:
            cached = self._keys
        if cached is not None and not refresh:
            return cached
        keys = KeySet.import_key_set(self._get(self.metadata()["jwks_uri"]))
        with self._lock:
            self._keys = keys
        return keys

    def _oauth(self) -> OAuth2Session:
        client = OAuth2Session(self.settings.client_id, token_endpoint_auth_method="none",  # noqa: S106 - tls_client_auth: no secret
                               redirect_uri=self.settings.redirect_uri, scope="openid profile",
                               code_challenge_method="S256")
        client.verify = self.settings.verify
        if self.settings.cert:
            client.cert = (self.settings.cert, self.settings.key)
        return client

    def start(self, *, ui_locales: str = "") -> LoginRequest:
        """A new authorization request (fresh state, nonce and PKCE verifier; the UI language as ``ui_locales``)."""
        state, nonce, verifier = (secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48))
        extra = {"ui_locales": ui_locales} if ui_locales else {}
        url, _ = self._oauth().create_authorization_url(self.metadata()["authorization_endpoint"], state=state,
                                                        nonce=nonce, code_verifier=verifier, **extra)
        return LoginRequest(url=url, state=state, nonce=nonce, verifier=verifier)

    def end_session_url(self, *, id_token_hint: str, post_logout_redirect_uri: str, ui_locales: str = "") -> str:
        """OIDC RP-Initiated Logout 1.0: where to send the browser so opauth ends its own session too."""
        endpoint = self.metadata().get("end_session_endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
            raise LoginError("opauth publishes no end_session_endpoint")
        params = {"client_id": self.settings.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        if ui_locales:
            params["ui_locales"] = ui_locales
        return endpoint + ("&" if "?" in endpoint else "?") + urllib.parse.urlencode(params)

    def finish(self, *, code: str, verifier: str, nonce: str) -> Identity:
        """Exchange ``code`` (mutual TLS) and verify the ID token; LoginError when anything is off."""
        client = self._oauth()
        try:
            # verify and cert per request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
            token = client.fetch_token(self.metadata()["token_endpoint"], grant_type="authorization_code",
                                       code=code, code_verifier=verifier, timeout=self.settings.timeout,
                                       verify=self.settings.verify, cert=client.cert)
        except (OAuth2Error, OAuthError) as exc:
            raise LoginError(f"token request refused: {exc.error}")
        except requests.RequestException as exc:
            raise LoginError(f"token request failed: {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            client.close()
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise LoginError("no ID token in the token response")
        claims = self.verify(id_token, typ=None, nonce=nonce)
        tenant = claims.get(CLAIM_TENANT)
        if not isinstance(tenant, dict) or not isinstance(tenant.get("code"), str) or not tenant["code"]:
            raise LoginError("the ID token names no tenant")
        permissions = claims.get(CLAIM_PERMISSIONS) or []
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise LoginError("malformed permissions claim")
        return Identity(sub=str(claims["sub"]), sid=str(claims.get("sid") or ""), name=str(claims.get("name") or ""),
                        tenant_code=tenant["code"], tenant_name=str(tenant.get("name") or tenant["code"]),
                        in_business_id=str(claims.get(CLAIM_IN_BUSINESS_ID) or ""), permissions=permissions,
                        acr=str(claims.get("acr") or ""), id_token=id_token)

    def verify(self, token: str, *, typ: str | None, nonce: str | None) -> dict[str, Any]:
        """Signature (JWKS), ``iss``, ``aud``, ``exp``/``iat`` and, for ID tokens, ``nonce``."""
        try:
            try:
                decoded = jwt.decode(token, self.keys(), algorithms=ALGORITHMS)
            except JoseError:
                decoded = jwt.decode(token, self.keys(refresh=True), algorithms=ALGORITHMS)
            if typ is not None and str(decoded.header.get("typ", "")).lower() != typ:
                raise LoginError(f"token type is not {typ}")
            options: dict[str, Any] = {"iss": {"essential": True, "value": self.settings.issuer},
                                       "aud": {"essential": True, "value": self.settings.client_id},
                                       "iat": {"essential": True}, "sub": {"essential": nonce is not None}}
            if nonce is not None:
                options["exp"] = {"essential": True}
                options["nonce"] = {"essential": True, "value": nonce}
            jwt.JWTClaimsRegistry(leeway=LEEWAY_SECONDS, **options).validate(dict(decoded.claims))
        except JoseError as exc:
            raise LoginError(f"token rejected: {type(exc).__name__}")
        except ValueError as exc:  # malformed compact serialisation
            raise LoginError(f"token rejected: {type(exc).__name__}")
        return dict(decoded.claims)

    def verify_logout_token(self, token: str) -> LogoutToken:
        """OIDC Back-Channel Logout 1.0 §2.6: signature and claims; LoginError when invalid.

        Whether the token is fresh enough and not a replay is :mod:`apdl.replay`'s to decide (it needs the
        database)."""
        claims = self.verify(token, typ=None, nonce=None)
        events = claims.get("events")
        if not isinstance(events, dict) or LOGOUT_EVENT not in events:
            raise LoginError("not a logout token (events)")
        if "nonce" in claims:
            raise LoginError("a logout token carries no nonce")
        sid, sub = str(claims.get("sid") or ""), str(claims.get("sub") or "")
        if not sid and not sub:
            raise LoginError("a logout token names a sid or a sub")
        jti, iat = claims.get("jti"), claims.get("iat")
        if not isinstance(jti, str) or not 0 < len(jti) <= 255:
            raise LoginError("a logout token carries a jti")
        if not isinstance(iat, int) or isinstance(iat, bool):
            raise LoginError("a logout token carries a numeric iat")
        return LogoutToken(sid=sid, sub=sub, jti=jti, iat=iat)
