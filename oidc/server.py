"""The thin module over Authlib: opauth's clients, codes, PKCE rule, client authentication and tokens.

Authlib (with joserfc) runs the OAuth 2.0 / OpenID Connect protocol. What it lacks is written here:
RFC 8705 ``tls_client_auth`` through ``operators.login.mtls`` (the one enforcement point), certificate-bound JWT
access tokens (``cnf.x5t#S256``), PKCE S256 required for every client, single-use codes whose replay
revokes what they produced, and pairwise subjects. Nothing outside ``oidc/`` imports Authlib.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, cast

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Request
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import OpenIDCode
from flask import Flask, current_app, g, request
from flask_babel import lazy_gettext
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from ca.authority import CaSettings
from db import get_session, new_session, utcnow
from kernel.audit import Actor, AuditAction, AuditResult, record_event, record_event_separately
from oidc.claims import LoginKind, Subject, refusal_for, subject_for, user_claims
from oidc.clients import business_id_from_client_id, client_id_for
from oidc.keys import ALGORITHM, signing_key
from oidc.logout import schedule_timeout_logout
from oidc.models import OidcAuthorizationCode, OidcClient, OidcToken
from oidc.pairwise import b64url_sha256_from_hex, pairwise_key
from oidc.rules import OpauthRules, S256Required
from operators.login.models import OperatorLoginState
from operators.login.mtls import ClientCertRefused, ClientIdentity, Purpose, authenticate_client
from operators.models import BusinessSystem, Operator

CODE_SECONDS = 60
ACCESS_TOKEN_SECONDS = 300
ID_TOKEN_SECONDS = 300
SCOPES = ("openid", "profile")
MAX_NONCE = 255
EXTENSION_KEY = "opauth.oidc_server"


def issuer() -> str:
    """The issuer identifier: PUBLIC_BASE_URL + ``/oidc``."""
    return str(current_app.config["PUBLIC_BASE_URL"]).rstrip("/") + "/oidc"


def _settings() -> CaSettings:
    settings = g.get("oidc_ca_settings")  # asked several times a request
    if not isinstance(settings, CaSettings):
        settings = g.oidc_ca_settings = CaSettings.from_config(current_app.config)
    return settings


def _audit_actor() -> Actor:
    return Actor(name="oidc-client", source=request.remote_addr or "")


def sha256_hex(value: str) -> str:
    """Hex SHA-256 of a secret (codes are stored only as this)."""
    return hashlib.sha256(value.encode()).hexdigest()


# --- clients and codes as Authlib sees them ------------------------------------------------------------

@dataclass(frozen=True)
class Client:
    """A business system as an OAuth client (Authlib's ClientMixin)."""

    system: BusinessSystem
    settings: OidcClient
    id_token_signed_response_alg: str = ALGORITHM

    def get_client_id(self) -> str:
        return client_id_for(self.system)

    def get_default_redirect_uri(self) -> None:
        return None  # OpenID Connect: the request must name its redirect URI

    def get_allowed_scope(self, scope: str | None) -> str:
        asked = (scope or "").split()
        return " ".join(s for s in SCOPES if s in asked)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.settings.redirect_uris  # exact string comparison, no normalisation

    def check_client_secret(self, client_secret: str) -> bool:
        return False  # no client secrets exist

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "tls_client_auth"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"

    @property
    def client_metadata(self) -> dict[str, Any]:
        return {"post_logout_redirect_uris": list(self.settings.post_logout_redirect_uris)}


def query_client(client_id: str | None) -> Client | None:
    """The client named ``biz-<業務ID>`` when that business system has business login settings."""
    business_id = business_id_from_client_id(client_id or "")
    if business_id is None:
        return None
    cache: dict[str, Client | None] = g.setdefault("oidc_clients", {})  # Authlib asks several times a request
    if business_id not in cache:
        cache[business_id] = _load_client(business_id)
    return cache[business_id]


# Statements of the token path, built once (SQLAlchemy caches their compiled form).
_CLIENT = (select(BusinessSystem, OidcClient)
           .join(OidcClient, OidcClient.business_system_id == BusinessSystem.id)
           .where(BusinessSystem.business_id == bindparam("business_id")))
# The operator with its tenant (a claim) and its login state (the lock check reads it from the identity map).
_OPERATOR_WITH_TENANT = (select(Operator, OperatorLoginState).options(joinedload(Operator.tenant))
                         .outerjoin(OperatorLoginState, OperatorLoginState.operator_pk == Operator.id)
                         .where(Operator.id == bindparam("pk")))
_CODE = select(OidcAuthorizationCode).where(OidcAuthorizationCode.code_sha256 == bindparam("code_sha256"))
_CODE_TABLE = cast(Table, OidcAuthorizationCode.__table__)
_CODES = _CODE_TABLE.c
_CLAIM_CODE = (update(_CODE_TABLE)  # on the connection: the row object is set below
               .where(_CODES.id == bindparam("code_id"), _CODES.used_at.is_(None))
               .values(used_at=bindparam("now")))
_RECORD_TOKEN = insert(cast(Table, OidcToken.__table__))  # a plain INSERT: no unit-of-work flush at the commit


def _load_client(business_id: str) -> Client | None:
    row = get_session().execute(_CLIENT, {"business_id": business_id}).first()
    return Client(row[0], row[1]) if row is not None else None


@dataclass(frozen=True)
class Code:
    """A stored authorization code (Authlib's AuthorizationCodeMixin)."""

    row: OidcAuthorizationCode

    @property
    def code_challenge(self) -> str:
        return self.row.code_challenge

    @property
    def code_challenge_method(self) -> str:
        return self.row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return self.row.auth_time

    def get_acr(self) -> str:
        return LoginKind(self.row.login_method).acr

    def get_amr(self) -> list[str]:
        return LoginKind(self.row.login_method).amr


def subject_of_code(row: OidcAuthorizationCode) -> Subject | None:
    """The subject a code was issued for, or None when the operator or system is gone."""
    session = get_session()
    found = session.execute(_OPERATOR_WITH_TENANT, {"pk": row.operator_pk}).first()
    operator = found[0] if found is not None else None
    g.oidc_login_state = found[1] if found is not None else None  # held: the identity map keeps weak references
    system = session.get(BusinessSystem, row.business_system_id)
    if operator is None or system is None:
        return None
    return subject_for(session, pairwise_key(_settings().instance_dir), operator=operator, system=system,
                       sid=row.sid, auth_time=row.auth_time, login_method=row.login_method,
                       operator_cert_sha256=row.operator_cert_sha256)


# --- the grant --------------------------------------------------------------------------------------------

class CodeGrant(AuthorizationCodeGrant):
    """Authorization code grant: codes stored hashed, single use, at most 60 seconds, clients by mTLS."""

    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["tls_client_auth"]
    RESPONSE_TYPES: ClassVar[set[str]] = {"code"}

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        subject: Subject = request.user
        data = request.payload.data
        now = utcnow()
        get_session().add(OidcAuthorizationCode(
            code_sha256=sha256_hex(code), business_system_id=subject.system.id, operator_pk=subject.operator.id,
            redirect_uri=request.payload.redirect_uri, scope=request.scope, nonce=data["nonce"],
            code_challenge=data["code_challenge"], code_challenge_method=data["code_challenge_method"],
            auth_time=subject.auth_time, login_method=subject.login_kind.value, sid=subject.sid,
            operator_cert_sha256=subject.operator_cert_sha256, created_at=now,
            expires_at=now + timedelta(seconds=CODE_SECONDS)))
        # Should this browser session just stop, the business system is told when it has timed out.
        schedule_timeout_logout(get_session(), system_id=subject.system.id, operator_pk=subject.operator.id,
                                sid=subject.sid)
        get_session().flush()

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        """The code if it is this client's, unexpired and unused.

        Reading it takes no lock: the single-use claim (:func:`finish_token_request`) is the last write before
        the commit, so the database's write lock (SQLite) or row lock (PostgreSQL) is held for the claim, the
        audit entry and the token row only, not for the checks and signatures in between.
        """
        session = get_session()
        row = session.scalar(_CODE, {"code_sha256": sha256_hex(code)})
        if row is None:
            return None
        target = f"business_system:{client.system.business_id}"
        if row.business_system_id != client.system.id:
            record_event(session, action=AuditAction.OIDC_TOKEN_REFUSED, actor=_audit_actor(),
                         result=AuditResult.FAILURE, target=target,
                         detail={"reason": "code issued to another client", "code_id": row.id})
            return None
        if row.used_at is not None:
            _code_replayed(session, row, target)
            return None
        g.oidc_code_to_claim = (row, target)  # used up whatever the outcome (finish_token_request)
        if row.expires_at <= utcnow():
            record_event(session, action=AuditAction.OIDC_TOKEN_REFUSED, actor=_audit_actor(),
                         result=AuditResult.FAILURE, target=target,
                         detail={"reason": "code expired", "code_id": row.id})
            return None
        return Code(row)

    def delete_authorization_code(self, authorization_code: Code) -> None:
        pass  # already marked used when it was claimed; kept so a replay can find what it produced

    def authenticate_user(self, authorization_code: Code) -> Subject | None:
        """The code's subject, if the operator may still use the system (lock, revocation, permissions)."""
        subject = subject_of_code(authorization_code.row)
        if subject is None:
            return None
        session = get_session()
        refusal = refusal_for(session, operator=subject.operator, system=subject.system,
                              client=session.get(OidcClient, subject.system.id))
        if refusal is not None:
            record_event(session, action=AuditAction.OIDC_TOKEN_REFUSED, actor=_audit_actor(),
                         result=AuditResult.FAILURE, target=f"business_system:{subject.system.business_id}",
                         detail={"reason": str(refusal), "code_id": authorization_code.row.id})
            return None
        return subject


class IdToken(OpenIDCode):
    """The ID token: ES256 with the active key, pairwise ``sub``, opauth's claims; ``nonce`` required."""

    def __init__(self) -> None:
        super().__init__(require_nonce=True)

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        # The nonce is stored with the code: printable ASCII of a bounded length, or the request is refused.
        if len(nonce) > MAX_NONCE or not all(0x20 < ord(ch) < 0x7F for ch in nonce):
            raise InvalidRequestError(f"'nonce' must be at most {MAX_NONCE} printable ASCII characters")
        client = query_client(request.payload.client_id)
        if client is None:
            return False
        return get_session().scalar(select(OidcAuthorizationCode.id).where(
            OidcAuthorizationCode.business_system_id == client.system.id,
            OidcAuthorizationCode.nonce == nonce).limit(1)) is not None

    def resolve_client_private_key(self, client: Client) -> ECKey:
        return signing_key(get_session(), _settings())

    def get_client_algorithm(self, client: Client) -> str:
        return ALGORITHM

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": ALGORITHM, "typ": "JWT", "kid": self.resolve_client_private_key(client).kid or ""}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": issuer(), "aud": [client.get_client_id()], "iat": now, "exp": now + ID_TOKEN_SECONDS}

    def generate_user_info(self, user: Subject, scope: str) -> dict[str, Any]:
        return user_claims(get_session(), user, scope)


class AccessTokens(JWTBearerTokenGenerator):
    """RFC 9068 JWT access tokens bound to the client certificate (RFC 8705 ``cnf.x5t#S256``)."""

    def __init__(self, issuer_url: str) -> None:
        super().__init__(issuer=issuer_url, alg=ALGORITHM,
                         expires_generator=lambda client, grant_type: ACCESS_TOKEN_SECONDS)

    def get_jwks(self) -> KeySet:
        return KeySet([signing_key(get_session(), _settings())])

    def get_jti(self, client: Client, grant_type: str, user: Subject, scope: str) -> str:
        g.oidc_jti = generate_token(32)
        return str(g.oidc_jti)

    def get_auth_time(self, user: Subject) -> int:
        return user.auth_time

    def get_acr(self, user: Subject) -> str:
        return user.login_kind.acr

    def get_amr(self, user: Subject) -> list[str]:
        return user.login_kind.amr

    def get_extra_claims(self, client: Client, grant_type: str, user: Subject, scope: str) -> dict[str, Any]:
        identity: ClientIdentity = g.oidc_client_identity
        return {"sid": user.sid, "cnf": {"x5t#S256": b64url_sha256_from_hex(identity.fingerprint_sha256)}}


# --- client authentication (RFC 8705 tls_client_auth) ------------------------------------------------------

def _client_auth_failed(reason: str, client_id: str) -> None:
    record_event_separately(new_session, action=AuditAction.OIDC_CLIENT_AUTH_FAILED, actor=_audit_actor(),
                            result=AuditResult.FAILURE, target=f"client:{client_id[:40]}",
                            detail={"reason": reason})


def authenticate_tls_client(query: Any, oauth_request: OAuth2Request) -> Client | None:
    """The client whose SSL通信証明書 this connection presented, if ``client_id`` names that same system."""
    client_id = str(oauth_request.payload.client_id or "")
    if not client_id:
        _client_auth_failed("no client_id in the token request", client_id)
        return None
    client: Client | None = query(client_id)
    if client is None:
        _client_auth_failed("unknown client", client_id)
        return None
    try:
        identity = authenticate_client(purpose=Purpose.BUSINESS_CLIENT)  # revocation read on every request
    except ClientCertRefused as exc:
        _client_auth_failed(exc.message, client_id)
        return None
    if identity.business_system_id != client.system.id:
        _client_auth_failed(f"the certificate {identity.serial} belongs to another business system", client_id)
        return None
    if not client.settings.enabled:
        _client_auth_failed("business login is disabled for this system", client_id)
        return None
    g.oidc_client_identity = identity
    return client


def save_token(token: dict[str, Any], oauth_request: OAuth2Request) -> None:
    """Note the issued access token; :func:`finish_token_request` writes it once the code is claimed."""
    g.oidc_token_to_save = (oauth_request.user, oauth_request.authorization_code)


def _code_replayed(session: Session, row: OidcAuthorizationCode, target: str) -> None:
    """A used code came back: revoke what it produced and audit the replay (in ``session``'s transaction)."""
    revoked = session.execute(update(OidcToken).where(OidcToken.code_id == row.id, OidcToken.revoked_at.is_(None))
                              .values(revoked_at=utcnow()))
    record_event(session, action=AuditAction.OIDC_CODE_REPLAY, actor=_audit_actor(), result=AuditResult.FAILURE,
                 target=target, detail={"code_id": row.id, "tokens_revoked": getattr(revoked, "rowcount", 0)})


def finish_token_request(session: Session, succeeded: bool) -> bool:
    """The token endpoint's writes, last before its commit: claim the code, then record the token.

    The claim is a conditional update: of two requests with one code only one changes the row. The other
    (False) has its work rolled back and is handled as a replay: what the first produced is revoked.
    A request that failed after finding its code (wrong verifier, refused operator) still uses the code up.
    """
    to_claim: tuple[OidcAuthorizationCode, str] | None = g.pop("oidc_code_to_claim", None)
    if to_claim is not None:
        row, target = to_claim
        now = utcnow()
        claimed = session.connection().execute(_CLAIM_CODE, {"code_id": row.id, "now": now})
        if getattr(claimed, "rowcount", 0) != 1:
            session.rollback()
            _code_replayed(session, row, target)
            return False
        set_committed_value(row, "used_at", now)  # what the database now holds
    pending = g.pop("oidc_token_to_save", None)
    if succeeded and pending is not None:
        subject, code = cast(tuple[Subject, Code], pending)
        identity: ClientIdentity = g.oidc_client_identity
        now = utcnow()
        record_event(session, action=AuditAction.OIDC_TOKEN_ISSUED, actor=_audit_actor(),
                     target=f"business_system:{subject.system.business_id}",
                     detail={"operator": f"{subject.operator.tenant.code}/{subject.operator.operator_id}",
                             "client_certificate": identity.serial, "sid": subject.sid})
        session.connection().execute(_RECORD_TOKEN, {
            "jti": g.oidc_jti, "code_id": code.row.id, "business_system_id": subject.system.id,
            "operator_pk": subject.operator.id, "client_cert_sha256": identity.fingerprint_sha256,
            "issued_at": now, "expires_at": now + timedelta(seconds=ACCESS_TOKEN_SECONDS), "revoked_at": None})
    return True


class Issuer(IssuerParameter):
    """RFC 9207: the ``iss`` parameter on authorization responses."""

    def get_issuer(self) -> str:
        return issuer()


# What a business system is told for each OAuth error code (RFC 6749 5.2), in the request's language, instead of
# Authlib's English descriptions (one named the allowed methods as a Python list). The refusal's own reason stays in
# the audit log.
_DESCRIPTIONS = {
    "invalid_client": lazy_gettext(
        "クライアント認証に失敗しました。業務システムの有効な SSL通信証明書をクライアント証明書として提示し、"
        "client_id はその業務システムのもの (biz-<業務ID>) にしてください。"),
    "invalid_grant": lazy_gettext(
        "認可コードが正しくないか、使用済みか、有効期限切れです(redirect_uri と code_verifier も確認してください)。"),
    "invalid_request": lazy_gettext(
        "リクエストが正しくありません(必要なパラメータがないか、値が正しくありません)。"),
    "unsupported_grant_type": lazy_gettext("grant_type は authorization_code だけが使えます。"),
    "unauthorized_client": lazy_gettext("この業務システムには、この要求は許可されていません。"),
    "invalid_scope": lazy_gettext("scope が正しくありません(openid を含めてください)。"),
    "unsupported_token_type": lazy_gettext("この種類のトークンは失効できません。"),
}


class OpauthAuthorizationServer(AuthorizationServer):
    """Authlib's server; its error answers carry opauth's descriptions (``_DESCRIPTIONS``)."""

    def handle_error_response(self, request: Any, error: Any) -> Any:
        described = _DESCRIPTIONS.get(getattr(error, "error", ""))
        if described is not None:
            g.oauth_refusal_detail = str(error.description or "")  # Authlib's own words, for the audit entry
            error.description = str(described)
        return super().handle_error_response(request, error)


def refusal_detail(body: dict[str, Any]) -> str:
    """What the audit entry of a refused OAuth request says: Authlib's specific reason when it gave one."""
    return (str(g.pop("oauth_refusal_detail", "")) or str(body.get("error_description", "")))[:300]


def build_server(app: Flask) -> AuthorizationServer:
    """The Authlib authorization server for ``app``, configured with opauth's rules."""
    server = OpauthAuthorizationServer()
    server.init_app(app, query_client=query_client, save_token=save_token)
    issuer_url = str(app.config["PUBLIC_BASE_URL"]).rstrip("/") + "/oidc"
    server.register_token_generator("default", AccessTokens(issuer_url))
    server.register_client_auth_method("tls_client_auth", authenticate_tls_client)
    server.register_grant(CodeGrant, [S256Required(), OpauthRules(), IdToken()])
    server.register_extension(Issuer())
    from oidc.endpoints import EndSession, Introspection, Revocation

    server.register_endpoint(Revocation)
    server.register_endpoint(Introspection)
    server.register_endpoint(EndSession)
    return server


def get_server() -> AuthorizationServer:
    """The current app's authorization server."""
    server: AuthorizationServer = current_app.extensions[EXTENSION_KEY]
    return server
