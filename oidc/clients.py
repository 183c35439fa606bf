"""業務ログイン認証の設定: a business system's client settings (enabled, redirect URIs, back-channel logout).

One place decides what a registered URI may be: https, on one of the hosts the business
system registered (the same hosts its certificates name), no userinfo, no fragment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask_babel import lazy_gettext
from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import InvalidInput, NotFound
from oidc.models import OidcClient
from operators.business_systems import find_by_business_id, host_of, registered_hosts
from operators.models import BusinessSystem

CLIENT_ID_PREFIX = "biz-"
MAX_REDIRECT_URIS = 10


def client_id_for(system: BusinessSystem) -> str:
    """The OAuth client_id of a business system: ``biz-<業務ID>``."""
    return f"{CLIENT_ID_PREFIX}{system.business_id}"


def business_id_from_client_id(client_id: str) -> str | None:
    """The 業務ID named by a client_id, or None when it is not of our form."""
    if not client_id.startswith(CLIENT_ID_PREFIX):
        return None
    rest = client_id[len(CLIENT_ID_PREFIX):]
    return rest if len(rest) == 2 and rest.isascii() and rest.isdigit() else None


def check_client_uri(uri: str, *, hosts: list[str], label: str) -> str:
    """``uri`` if it is an acceptable redirect or logout URI for a system with ``hosts``; else InvalidInput."""
    if not isinstance(uri, str) or not uri or len(uri) > 2000:
        raise InvalidInput(lazy_gettext("%(field)s: 2000 文字以内の URI を指定してください。", field=label))
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in uri) or "\\" in uri:
        raise InvalidInput(lazy_gettext("%(field)s: URI %(uri)s に空白、制御文字又はバックスラッシュが含まれています。",
                                        field=label, uri=repr(uri)))
    parts = urlsplit(uri)
    if parts.scheme != "https":
        raise InvalidInput(lazy_gettext("%(field)s: URI %(uri)s は https:// で始まる URI で指定してください。",
                                        field=label, uri=repr(uri)))
    if "@" in parts.netloc:
        raise InvalidInput(lazy_gettext("%(field)s: URI %(uri)s にユーザ名やパスワードを含めないでください。",
                                        field=label, uri=repr(uri)))
    if parts.fragment or uri.endswith("#"):
        raise InvalidInput(lazy_gettext("%(field)s: URI %(uri)s にフラグメント(#…)を含めないでください。",
                                        field=label, uri=repr(uri)))
    host = host_of(uri, label)
    if host not in hosts:
        raise InvalidInput(lazy_gettext(
            "%(field)s: ホスト %(host)s は業務システムに登録されたホスト(%(hosts)s)のいずれでもありません。",
            field=label, host=repr(host), hosts=", ".join(hosts)))
    return uri


def _uri_list(data: Mapping[str, Any], key: str, *, hosts: list[str]) -> list[str]:
    raw = data.get(key, [])
    if isinstance(raw, str):
        raw = [line.strip() for line in raw.splitlines() if line.strip()]
    if not isinstance(raw, list) or not all(isinstance(u, str) for u in raw):
        raise InvalidInput(lazy_gettext("%(field)s は URI のリストで指定してください。", field=key))
    if len(raw) > MAX_REDIRECT_URIS:
        raise InvalidInput(lazy_gettext("%(field)s に登録できる URI は %(max)d 個までです。", field=key,
                                        max=MAX_REDIRECT_URIS))
    uris: list[str] = []
    for uri in raw:
        checked = check_client_uri(uri, hosts=hosts, label=key)
        if checked not in uris:
            uris.append(checked)
    return uris


def _optional_uri(data: Mapping[str, Any], key: str, *, hosts: list[str]) -> str:
    value = data.get(key) or ""
    if not isinstance(value, str):
        raise InvalidInput(lazy_gettext("%(field)s は文字列で指定してください。", field=key))
    value = value.strip()
    if value:
        check_client_uri(value, hosts=hosts, label=key)
    return value


@dataclass(frozen=True)
class ClientSettingsData:
    """Validated client settings for one business system."""

    enabled: bool
    redirect_uris: tuple[str, ...]
    backchannel_logout_uri: str
    post_logout_redirect_uris: tuple[str, ...] = ()
    initiate_login_uri: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, system: BusinessSystem) -> ClientSettingsData:
        """Validate JSON or form input (``redirect_uris`` a list or newline-separated text)."""
        enabled = data.get("enabled", False)
        if isinstance(enabled, str):
            enabled = enabled.lower() in ("1", "true", "on", "yes")
        if not isinstance(enabled, bool):
            raise InvalidInput(lazy_gettext("enabled は true か false で指定してください。"))
        hosts = registered_hosts(system)
        uris = _uri_list(data, "redirect_uris", hosts=hosts)
        if enabled and not uris:
            raise InvalidInput(lazy_gettext("業務ログインを有効にするには、リダイレクト URI (redirect_uris) を一つ以上"
                                            "登録してください。"))
        return cls(enabled=enabled, redirect_uris=tuple(uris),
                   backchannel_logout_uri=_optional_uri(data, "backchannel_logout_uri", hosts=hosts),
                   post_logout_redirect_uris=tuple(_uri_list(data, "post_logout_redirect_uris", hosts=hosts)),
                   initiate_login_uri=_optional_uri(data, "initiate_login_uri", hosts=hosts))


def find_client(session: Session, system: BusinessSystem) -> OidcClient | None:
    """The client settings of ``system``, or None when business login was never configured."""
    return session.get(OidcClient, system.id)


def client_for_business_id(session: Session, business_id: str) -> tuple[BusinessSystem, OidcClient | None]:
    """The business system with ``business_id`` and its client settings; NotFound for no such system."""
    system = find_by_business_id(session, business_id[:2])
    if system is None or system.business_id != business_id:
        raise NotFound(lazy_gettext("業務ID %(id)s の業務システムはありません。", id=repr(business_id[:8])))
    return system, find_client(session, system)


def save_client_settings(session: Session, *, business_id: str, data: Mapping[str, Any],
                         actor: Actor) -> OidcClient:
    """Validate and store the business login settings of one business system; audited."""
    system, client = client_for_business_id(session, business_id)
    settings = ClientSettingsData.from_mapping(data, system=system)
    if client is None:
        client = OidcClient(business_system_id=system.id)
        session.add(client)
    client.enabled = settings.enabled
    client.redirect_uris = list(settings.redirect_uris)
    client.backchannel_logout_uri = settings.backchannel_logout_uri
    client.post_logout_redirect_uris = list(settings.post_logout_redirect_uris)
    client.initiate_login_uri = settings.initiate_login_uri
    session.flush()
    record_event(session, action=AuditAction.OIDC_CLIENT_UPDATED, actor=actor,
                 target=f"business_system:{system.business_id}",
                 detail={"enabled": settings.enabled, "redirect_uris": list(settings.redirect_uris),
                         "backchannel_logout_uri": settings.backchannel_logout_uri,
                         "post_logout_redirect_uris": list(settings.post_logout_redirect_uris),
                         "initiate_login_uri": settings.initiate_login_uri})
    return client


def client_settings_json(system: BusinessSystem, client: OidcClient | None) -> dict[str, Any]:
    """The API/CLI view of a business system's client settings."""
    return {
        "business_id": system.business_id,
        "client_id": client_id_for(system),
        "enabled": bool(client and client.enabled),
        "redirect_uris": list(client.redirect_uris) if client else [],
        "backchannel_logout_uri": client.backchannel_logout_uri if client else "",
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris) if client else [],
        "initiate_login_uri": client.initiate_login_uri if client else "",
        "token_endpoint_auth_method": "tls_client_auth",
        "registered_hosts": registered_hosts(system),
    }


def configured_clients(session: Session) -> list[tuple[BusinessSystem, OidcClient]]:
    """Every business system with business login settings, by 業務ID."""
    rows = session.execute(select(BusinessSystem, OidcClient)
                           .join(OidcClient, OidcClient.business_system_id == BusinessSystem.id)
                           .order_by(BusinessSystem.business_id))
    return [(system, client) for system, client in rows]
