"""Token-signing keys: dedicated ES256 keys in the key store, published as a JWKS, rotated safely.

The private key is stored like the CA keys (encrypted PKCS#8 behind a ``file:`` URI, opened through
``ca.authority.signer_for``) but is never a CA key. ``kid`` is the RFC 7638 thumbprint. A key is
published (NEXT) before it signs (ACTIVE), and after rotation it stays published (RETIRED) until
every token it signed has expired and caches have refreshed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from flask import current_app, g, has_app_context
from flask_babel import gettext as _
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ca.authority import CaSettings, signer_for
from ca.keys import KeyStoreError, store_software_key
from db import utcnow
from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import Conflict
from oidc.models import OidcSigningKey, SigningKeyState

ALGORITHM = "ES256"
# A retired key stays in the JWKS this long: longer than any token it signed (5 minutes) plus the time
# relying parties may cache the JWKS.
RETIRED_KEY_KEPT = timedelta(hours=24)
# The next key is published at least this long before it signs, so clients have fetched it.
MIN_PUBLISHED_BEFORE_USE = timedelta(hours=24)

_loaded: dict[tuple[str, str], ECKey] = {}
_loaded_lock = threading.Lock()


def _new_key(session: Session, settings: CaSettings, state: SigningKeyState) -> OidcSigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    kid = ECKey.import_key(private).thumbprint()
    uri = f"file:keys/oidc-signing-{kid}.pem"
    store_software_key(private, uri=uri, base=settings.instance_dir, passphrase=settings.passphrase)
    public = ECKey.import_key(private.public_key()).as_dict(private=False)
    row = OidcSigningKey(kid=kid, key_uri=uri, state=state,
                         public_jwk={**public, "kid": kid, "use": "sig", "alg": ALGORITHM},
                         activated_at=utcnow() if state is SigningKeyState.ACTIVE else None)
    session.add(row)
    session.flush()
    _created[0] += 1
    forget_published_keys()
    return row


def _keys(session: Session, state: SigningKeyState) -> list[OidcSigningKey]:
    return list(session.scalars(select(OidcSigningKey).where(OidcSigningKey.state == state)
                                .order_by(OidcSigningKey.id.desc())))


def ensure_signing_keys(session: Session, settings: CaSettings) -> OidcSigningKey:
    """The active key, creating the first active key and a published next key when missing."""
    active = _keys(session, SigningKeyState.ACTIVE)
    if not active:
        active = [_new_key(session, settings, SigningKeyState.ACTIVE)]
    if not _keys(session, SigningKeyState.NEXT):
        _new_key(session, settings, SigningKeyState.NEXT)
    return active[0]


def private_jwk(settings: CaSettings, row: OidcSigningKey) -> ECKey:
    """The signing key of ``row`` as a joserfc key (opened once per process through the key store)."""
    cache_key = (str(settings.instance_dir), row.key_uri)
    with _loaded_lock:
        key = _loaded.get(cache_key)
        if key is None:
            private = signer_for(settings, row.key_uri).private_key
            if not isinstance(private, ec.EllipticCurvePrivateKey):
                raise KeyStoreError(f"the token-signing key {row.key_uri} is not an EC key")
            key = ECKey.import_key(private, {"kid": row.kid, "use": "sig", "alg": ALGORITHM})
            _loaded[cache_key] = key
        return key


# The active key changes only on rotation. A process keeps using the key it last read for up to
# ACTIVE_CACHE_SECONDS after another process rotated: harmless, since a retired key stays published
# (RETIRED_KEY_KEPT) and the tokens it signs still verify. Rotation in this process clears it at once.
ACTIVE_CACHE_SECONDS = 5.0
_active: dict[str, tuple[float, ECKey]] = {}
_created = [0]  # keys made by this process


def _cache_key(session: Session, settings: CaSettings) -> str:
    # per database and instance (tests and several apps in one process must not share a key)
    return f"{session.get_bind().engine.url}|{settings.instance_dir}"


def signing_key(session: Session, settings: CaSettings) -> ECKey:
    """The key that signs new tokens (ID token, access token and logout token of a request use the same)."""
    cached = g.get("oidc_signing_key") if has_app_context() else None
    if isinstance(cached, ECKey):
        return cached
    cache_key = _cache_key(session, settings)
    now = time.monotonic()
    with _loaded_lock:
        hit = _active.get(cache_key)
    if hit is not None and hit[0] > now:
        key = hit[1]
    else:
        created_before = _created[0]
        key = private_jwk(settings, ensure_signing_keys(session, settings))
        if _created[0] == created_before:  # a key made by this (uncommitted) transaction is not remembered
            with _loaded_lock:
                _active[cache_key] = (now + ACTIVE_CACHE_SECONDS, key)
    if has_app_context():
        g.oidc_signing_key = key
    return key


def published_keys(session: Session, *, now: datetime | None = None) -> list[OidcSigningKey]:
    """Keys in the JWKS: the next, the active and the retired ones still kept."""
    now = now or utcnow()
    return list(session.scalars(select(OidcSigningKey).where(or_(
        OidcSigningKey.state.in_((SigningKeyState.NEXT, SigningKeyState.ACTIVE)),
        (OidcSigningKey.state == SigningKeyState.RETIRED) & (OidcSigningKey.keep_until > now)))
        .order_by(OidcSigningKey.id)))


# The published keys change only on rotation (and on first use); a few seconds of reuse per process spares a
# database read on every JWKS, userinfo and introspection request. Rotation in this process clears it;
# another process's rotation shows here within PUBLISHED_CACHE_SECONDS.
PUBLISHED_CACHE_SECONDS = 5.0
_published: dict[str, tuple[float, list[dict[str, Any]]]] = {}


def _published_jwks(session: Session) -> list[dict[str, Any]]:
    # per database and instance (tests and several apps in one process must not share an answer)
    instance = str(current_app.config.get("INSTANCE_DIR", "")) if has_app_context() else ""
    cache_key = f"{session.get_bind().engine.url}|{instance}"
    now = time.monotonic()
    with _loaded_lock:
        hit = _published.get(cache_key)
        if hit is not None and hit[0] > now:
            return hit[1]
    keys = [dict(row.public_jwk) for row in published_keys(session)]
    if keys:  # never remember "no keys": the first keys may be committing in another request right now
        with _loaded_lock:
            _published[cache_key] = (now + PUBLISHED_CACHE_SECONDS, keys)
    return keys


def forget_published_keys() -> None:
    """Drop the cached JWKS and active key of this process (after keys were added or rotated)."""
    with _loaded_lock:
        _published.clear()
        _active.clear()


def jwks(session: Session) -> dict[str, Any]:
    """The public JWKS document."""
    return {"keys": [dict(key) for key in _published_jwks(session)]}


_verifying: dict[int, tuple[list[dict[str, Any]], KeySet]] = {}  # parsed once per cached JWKS


def verification_keys(session: Session) -> KeySet:
    """Public keys that verify tokens we signed (every published key)."""
    keys = _published_jwks(session)
    with _loaded_lock:
        hit = _verifying.get(id(keys))
        if hit is not None and hit[0] is keys:
            return hit[1]
    key_set = KeySet([ECKey.import_key(dict(key)) for key in keys])
    with _loaded_lock:
        if len(_verifying) > 16:
            _verifying.clear()
        _verifying[id(keys)] = (keys, key_set)  # the list is kept alive with it, so its id is not reused
    return key_set


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: the key now signing, the one retired, and the newly published next key."""

    active_kid: str
    retired_kid: str | None
    next_kid: str


def rotate(session: Session, settings: CaSettings, *, actor: Actor, force: bool = False,
           now: datetime | None = None) -> Rotation:
    """Switch signing to the published next key, retire the old one (kept published), publish a new next.

    Refused (Conflict) when the next key has been published for less than a day, unless ``force``.
    """
    now = now or utcnow()
    ensure_signing_keys(session, settings)
    upcoming = _keys(session, SigningKeyState.NEXT)[0]
    published_for = now - upcoming.created_at
    if published_for < MIN_PUBLISHED_BEFORE_USE and not force:
        hours = published_for.total_seconds() / 3600
        raise Conflict(_("次の鍵 %(kid)s は公開されてから %(hours).1f 時間しか経っていません。"
                         "業務システムがまだ取得していない可能性があります（時間を置くか、強制して切り替えてください）。",
                         kid=upcoming.kid, hours=hours))
    retired = None
    for old in _keys(session, SigningKeyState.ACTIVE):
        old.state = SigningKeyState.RETIRED
        old.keep_until = now + RETIRED_KEY_KEPT
        retired = retired or old.kid
    upcoming.state = SigningKeyState.ACTIVE
    upcoming.activated_at = now
    new_next = _new_key(session, settings, SigningKeyState.NEXT)
    session.flush()
    forget_published_keys()
    record_event(session, action=AuditAction.OIDC_KEY_ROTATED, actor=actor, target=f"oidc_key:{upcoming.kid}",
                 detail={"active": upcoming.kid, "retired": retired, "next": new_next.kid, "forced": force})
    return Rotation(active_kid=upcoming.kid, retired_kid=retired, next_kid=new_next.kid)


def key_listing(session: Session) -> list[OidcSigningKey]:
    """Every signing key, newest first."""
    return list(session.scalars(select(OidcSigningKey).order_by(OidcSigningKey.id.desc())))
