"""Machine endpoints of the provider: discovery, JWKS, token and userinfo.

The token endpoint authenticates the business system by its SSL通信証明書 (mutual TLS); userinfo
accepts only a certificate-bound access token presented over that same certificate (fail closed:
no certificate, no answer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import InvalidGrantError
from flask import Blueprint, Flask, current_app, jsonify, request
from flask_babel import force_locale
from flask_babel import lazy_gettext as _
from joserfc import jwt
from joserfc.errors import JoseError

from ca.authority import CaSettings
from db import get_session, new_session
from kernel import lean_app
from kernel.audit import Actor, AuditAction, AuditResult, record_event_separately
from oidc.claims import (
    CLAIM_IN_BUSINESS_ID,
    CLAIM_OPERATOR_CERT,
    CLAIM_PERMISSIONS,
    CLAIM_TENANT,
    refusal_for,
    user_claims,
)
from oidc.keys import ALGORITHM, ensure_signing_keys, forget_published_keys, jwks, verification_keys
from oidc.models import OidcAuthorizationCode, OidcClient, OidcToken
from oidc.pairwise import b64url_sha256_from_hex
from oidc.server import (
    EXTENSION_KEY,
    SCOPES,
    build_server,
    finish_token_request,
    get_server,
    issuer,
    refusal_detail,
    subject_of_code,
)
from operators.login.mtls import ClientCertRefused, Purpose, authenticate_client, behind_trusted_proxies
from operators.models import BusinessSystem

bp = Blueprint("oidc", __name__, url_prefix="/oidc")


def discovery_document() -> dict[str, Any]:
    """OpenID Provider metadata (only what this provider really does)."""
    base = issuer()
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "userinfo_endpoint": f"{base}/userinfo",
        "jwks_uri": f"{base}/jwks.json",
        # gunicorn asks every connection for an optional client certificate, so the aliases are the same URLs.
        "end_session_endpoint": f"{base}/logout",
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "revocation_endpoint": f"{base}/revoke",
        "introspection_endpoint": f"{base}/introspect",
        "mtls_endpoint_aliases": {"token_endpoint": f"{base}/token", "userinfo_endpoint": f"{base}/userinfo",
                                  "end_session_endpoint": f"{base}/logout",
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "revocation_endpoint": f"{base}/revoke",
                                  "introspection_endpoint": f"{base}/introspect"},
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "token_endpoint_auth_methods_supported": ["tls_client_auth"],
        "revocation_endpoint_auth_methods_supported": ["tls_client_auth"],
        "introspection_endpoint_auth_methods_supported": ["tls_client_auth"],
        "tls_client_certificate_bound_access_tokens": True,
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login"],
        "acr_values_supported": ["urn:opauth:acr:password", "urn:opauth:acr:biometric"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "name",
                             CLAIM_TENANT, CLAIM_IN_BUSINESS_ID, CLAIM_PERMISSIONS, CLAIM_OPERATOR_CERT],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
    }


@bp.route("/.well-known/openid-configuration")
def configuration() -> Any:
    """Discovery (OpenID Connect Discovery 1.0 §4)."""
    response = jsonify(discovery_document())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.route("/jwks.json")
def jwks_document() -> Any:
    """The public token-signing keys: the next, the active and the recently retired ones."""
    session = get_session()
    document = jwks(session)
    if not document["keys"]:  # the first request of a new instance publishes the first keys
        ensure_signing_keys(session, CaSettings.from_config(current_app.config))
        session.commit()
        forget_published_keys()
        document = jwks(session)
    response = jsonify(document)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.route("/token", methods=["POST"])
def token() -> Any:
    """Token endpoint: code + PKCE verifier, client authenticated by its certificate (tls_client_auth)."""
    server = get_server()
    response = server.create_token_response()
    session = get_session()
    if not finish_token_request(session, succeeded=response.status_code < 400):  # the code's claim, last
        response = server.handle_error_response(None, InvalidGrantError("Invalid 'code' in request."))
    session.commit()  # on a refusal too: a claimed code and a replay's revocations stand
    if response.status_code >= 400:
        _audit_refusal(response)
    return response


def _audit_refusal(response: Any, **detail: str) -> None:
    """The audit entry of a refused token, revocation or introspection request (its own transaction)."""
    body = response.get_json(silent=True) or {}
    record_event_separately(new_session, action=AuditAction.OIDC_TOKEN_REFUSED,
                            actor=Actor(name="oidc-client", source=request.remote_addr or ""),
                            result=AuditResult.FAILURE, target=f"client:{str(request.form.get('client_id', ''))[:40]}",
                            detail={**detail, "error": str(body.get("error", "")), "description": refusal_detail(body)})


def _endpoint(name: str) -> Any:
    """Revocation or introspection: Authlib runs it; refusals are audited; the change is committed."""
    response = get_server().create_endpoint_response(name)
    session = get_session()
    session.commit()
    if response.status_code >= 400:
        _audit_refusal(response, endpoint=name)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/revoke", methods=["POST"])
def revoke() -> Any:
    """Token revocation (RFC 7009), client authenticated by its certificate."""
    return _endpoint("revocation")


@bp.route("/introspect", methods=["POST"])
def introspect() -> Any:
    """Token introspection (RFC 7662), client authenticated by its certificate (the token's own)."""
    return _endpoint("introspection")


def _invalid_token(description: Any, *, target: str = "") -> Any:
    """401 invalid_token: described in the request's language, audited in English (a stable reason)."""
    with force_locale("en"):
        reason = str(description)
    description = str(description)
    record_event_separately(new_session, action=AuditAction.OIDC_USERINFO_REFUSED,
                            actor=Actor(name="oidc-client", source=request.remote_addr or ""),
                            result=AuditResult.FAILURE, target=target, detail={"reason": reason})
    response = jsonify(error="invalid_token", error_description=description)
    response.status_code = 401
    # RFC 6750 §3 allows only printable ASCII without '"' and '\\' in the challenge (gunicorn refuses the rest with
    # a 500); the certificate refusal reason may be Japanese, so the header keeps the ASCII part, the body all of it.
    ascii_description = "".join(c for c in description if " " <= c <= "~" and c not in '"\\').strip(" :")
    response.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{ascii_description}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> Any:
    """UserInfo: the claims of a certificate-bound access token presented with that same certificate."""
    auth = request.headers.get("Authorization", "")
    scheme, _space, value = auth.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return _invalid_token(_("Bearer のアクセストークンが必要です。"))
    session = get_session()
    try:
        decoded = jwt.decode(value.strip(), verification_keys(session), algorithms=[ALGORITHM])
    except (JoseError, ValueError):
        return _invalid_token(_("アクセストークンが正しくありません。"))
    claims, header = decoded.claims, decoded.header
    now = int(time.time())
    if (header.get("typ") != "at+jwt" or claims.get("iss") != issuer() or not isinstance(claims.get("exp"), int)
            or claims["exp"] <= now or not isinstance(claims.get("jti"), str)):
        return _invalid_token(_("アクセストークンが有効期限切れか、このシステムのものではありません。"))
    row = session.get(OidcToken, claims["jti"])
    if row is None or row.revoked_at is not None:
        return _invalid_token(_("アクセストークンは失効しています。"))
    bound = (claims.get("cnf") or {}).get("x5t#S256") if isinstance(claims.get("cnf"), dict) else None
    if not bound or bound != b64url_sha256_from_hex(row.client_cert_sha256):
        return _invalid_token(_("アクセストークンが証明書に結び付いていません。"))
    target = f"client:{claims.get('client_id', '')}"
    try:
        identity = authenticate_client(purpose=Purpose.BUSINESS_CLIENT)
    except ClientCertRefused as exc:
        return _invalid_token(_("トークンが結び付いた証明書が必要です: %(reason)s", reason=exc), target=target)
    if b64url_sha256_from_hex(identity.fingerprint_sha256) != bound:
        return _invalid_token(_("トークンは別の証明書に結び付いています。"), target=target)
    code = session.get(OidcAuthorizationCode, row.code_id) if row.code_id is not None else None
    subject = subject_of_code(code) if code is not None else None
    if subject is None:
        return _invalid_token(_("操作者はもう存在しません。"), target=target)
    if refusal_for(session, operator=subject.operator, system=subject.system,
                   client=session.get(OidcClient, subject.system.id)) is not None:
        return _invalid_token(_("操作者はこの業務システムをもう利用できません。"), target=target)
    response = jsonify(user_claims(session, subject, str(claims.get("scope", ""))))
    response.headers["Cache-Control"] = "no-store"
    return response


def business_link(system: BusinessSystem) -> str:
    """Where the operator top screen links a business system: its login initiation URI when it has one.

    OpenID Connect Core §4 (third-party initiated login): the system starts its own authorization request
    at opauth, so the operator arrives signed in. Otherwise the 業務トップURL, as before.
    """
    client = get_session().get(OidcClient, system.id)
    if client is None or not client.enabled or not client.initiate_login_uri:
        return system.top_url
    return str(add_params_to_uri(client.initiate_login_uri, {"iss": issuer(), "target_link_uri": system.top_url}))


# A settings change made in another process reaches the machine endpoints within this many seconds.
SETTINGS_PROBE_SECONDS = 1.0


def mount(main: Flask, *, error_handlers: Callable[[Flask], None], after_request: Callable[[Any], Any]) -> Flask:
    """Serve discovery, JWKS, token, userinfo, revocation and introspection from a lean app.

    Business systems authenticate every call by their certificate or a bearer token, never by the cookie
    session: the lean app skips the session, login and form-token hooks (``kernel.lean_app``). Authorization
    and logout, where the operator's browser comes with its session, stay on the main app.
    """
    machine = lean_app.lean_app(main, blueprints=[bp], error_handlers=error_handlers, after_request=after_request,
                                probe=lean_app.settings_probe(main, lambda: SETTINGS_PROBE_SECONDS))
    machine.extensions[EXTENSION_KEY] = main.extensions[EXTENSION_KEY]
    machine.extensions[lean_app.ERROR_FORM] = "oauth"  # even the request guard's refusals, as clients parse them
    paths = frozenset(rule.rule for rule in machine.url_map.iter_rules() if rule.endpoint.startswith(f"{bp.name}."))
    main.wsgi_app = lean_app.Dispatch(main.wsgi_app, behind_trusted_proxies(main, machine.wsgi_app),  # type: ignore[method-assign]
                                      lean_app.exact_paths(paths))
    main.extensions["opauth.oidc_machine_app"] = machine
    return machine


def init_app(app: Flask) -> None:
    """Build the authorization server and register the protocol endpoints."""
    from oidc import authorize, logout

    app.extensions[EXTENSION_KEY] = build_server(app)
    app.register_blueprint(bp)
    app.add_template_global(business_link)
    authorize.init_app(app)
    logout.init_app(app)
