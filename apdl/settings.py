"""Settings of the AP download module: defaults < ``APDL_*`` environment variables < explicit overrides.

Each setting is declared once here with its parser, default and meaning.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "APDL_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"not a boolean: {value!r}")


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise SettingsError(f"not an integer: {value!r}") from exc


def _hours(value: str) -> int:
    hours = _int(value)
    if hours < 0:
        raise SettingsError(f"not a number of hours: {value!r}")
    return hours


def _seconds(value: str) -> int:
    seconds = _int(value)
    if seconds < 1:
        raise SettingsError(f"not a positive number of seconds: {value!r}")
    return seconds


def _issuer(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and not value.startswith("https://"):
        raise SettingsError("OPAUTH_ISSUER must be an https URL")
    return value


@dataclass(frozen=True)
class Setting:
    """One configuration knob: the Flask config key, its parser, default and meaning."""

    key: str
    parse: Callable[[str], Any]
    default: Any
    description: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key


SETTINGS: tuple[Setting, ...] = (
    Setting("INSTANCE_DIR", str, str(PROJECT_ROOT / "instance" / "apdl"),
            "Directory of the module's own data: embedded database, secret key, AP key seed."),
    Setting("DATABASE_URL", str, "",
            "SQLAlchemy URL (PostgreSQL supported). Empty: SQLite file `apdl.db` in INSTANCE_DIR."),
    Setting("SECRET_KEY", str, "", "Flask session key. Empty: generated once into INSTANCE_DIR/secret_key."),
    Setting("PUBLIC_BASE_URL", lambda v: v.strip().rstrip("/"), "https://localhost:8444",
            "The module's public https URL; the OIDC redirect URI is this + /auth/callback."),
    Setting("OPAUTH_ISSUER", _issuer, "", "opauth's OIDC issuer URL (https://<opauth>/oidc)."),
    Setting("CLIENT_ID", str, "biz-01", "The module's OIDC client ID at opauth (biz-<業務ID>)."),
    Setting("CLIENT_CERT", str, "", "PEM file: the SSL通信証明書 opauth issued for the module (tls_client_auth)."),
    Setting("CLIENT_KEY", str, "", "PEM file: the private key of CLIENT_CERT."),
    Setting("CA_BUNDLE", str, "", "PEM file of the CAs that sign opauth's server certificate."),
    Setting("HTTP_TIMEOUT", _int, 10, "Seconds to wait for opauth on the back channel."),
    Setting("ADMIN_TENANT", str, "system",
            "The 利用機関 whose operators keep the AP registry, availability and tenant profiles."),
    Setting("READER", str, "Virtual PCD 00 00", "PC/SC reader the server uses for card operations."),
    Setting("LOGOUT_TOKEN_MAX_AGE", _int, 120,
            "Seconds a back-channel logout token is accepted after its iat (opauth signs each delivery afresh)."),
    Setting("SCP03", _bool, True,
            "Run card management under a GlobalPlatform SCP03 secure channel (C-MAC, C-DECRYPTION, R-MAC, "
            "R-ENCRYPTION)."),
    Setting("CARD_KEYS", str, "",
            "File holding the SCP03 master key set (VV:ENC:MAC:DEK, hex) each card's keys are diversified from "
            "(KDF3). Empty: INSTANCE_DIR/card-keys, generated once. Never logged, stored in the database or sent "
            "to a terminal."),
    Setting("CARD_TRANSPORT", str, "local",
            "Where the card is: `local` (the server's PC/SC reader, APDL_READER) or `agent` (the card agent of "
            "the terminal paired with the operator's session)."),
    Setting("TERMINAL_CA", str, "",
            "PEM file of the CAs that issue terminals' SSL通信証明書 (card agents' client certificates). "
            "Empty: CA_BUNDLE."),
    Setting("PAIRING_CODE_SECONDS", _seconds, 300,
            "Seconds a terminal's pairing code (組付けコード) is valid; the card agent shows a fresh one when it "
            "expires or has been used."),
    Setting("AGENT_TIMEOUT", _int, 15, "Seconds the module waits for a card agent's answer to one APDU."),
    Setting("SESSION_HOURS", _int, 8, "Hours a module session lasts at most."),
    Setting("SESSION_COOKIE_SECURE", _bool, True, "Send the session cookie over https only."),
    Setting("STATUS_FEED_MAX_AGE_HOURS", _hours, 30,
            "Hours after the last card status feed import before the top screen shows a stale-feed alert "
            "(the feed is daily: 24 plus a margin)."),
    Setting("BIND", str, "127.0.0.1:8444", "gunicorn bind address."),
    Setting("WORKERS", _int, 2, "gunicorn worker processes."),
    Setting("TLS_CERT", str, "", "gunicorn: server certificate (PEM). Empty: plain HTTP behind a proxy."),
    Setting("TLS_KEY", str, "", "gunicorn: server key (PEM, unencrypted)."),
)


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting's value; a bad environment value raises SettingsError naming the variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is None:
            values[setting.key] = setting.default
            continue
        try:
            values[setting.key] = setting.parse(raw)
        except SettingsError as exc:
            raise SettingsError(f"{setting.env}: {exc}") from exc
    values.update(overrides or {})
    if not values["DATABASE_URL"]:
        values["DATABASE_URL"] = "sqlite:///" + str(Path(values["INSTANCE_DIR"]).resolve() / "apdl.db")
    return values
