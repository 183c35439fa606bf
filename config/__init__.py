"""opauth settings: defaults, the instance's stored values (config/instance.py), OPAUTH_* environment variables.

Every setting is declared once in ``SETTINGS`` below with its type, default and
description; ``INSTANCE_SETTINGS`` says which of them are kept with the instance
(and how they are checked), ``PINNED`` which go into certificates. The README's
settings table is generated from the same lists (``flask --app app settings
markdown``), so documentation and code cannot drift apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "OPAUTH_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"not a boolean: {value!r}")


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"not an integer: {value!r}") from exc


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


KEY_ALGORITHMS = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072")


def _key_algorithm(value: str) -> str:
    value = value.strip().lower()
    if value not in KEY_ALGORITHMS:
        raise ConfigError(f"KEY_ALGORITHM must be one of {', '.join(KEY_ALGORITHMS)}")
    return value


def parse_oid(value: str) -> str:
    """A dotted object identifier (or empty); ``ConfigError`` otherwise."""
    value = value.strip()
    if value and not re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", value):
        raise ConfigError(f"not a dotted object identifier: {value!r}")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("INSTANCE_DIR", str, str(PROJECT_ROOT / "instance"),
            "Directory holding the embedded database, encrypted CA keys and the TLS certificate."),
    Setting("DATABASE_URL", str, "",
            "SQLAlchemy URL. Empty: SQLite file `opauth.db` in INSTANCE_DIR. "
            "PostgreSQL: `postgresql+psycopg://user@host/db`."),
    Setting("SECRET_KEY", str, "",
            "Flask session signing key. Empty: a random key generated once and kept in INSTANCE_DIR/secret_key."),
    Setting("KEY_PASSPHRASE", str, "",
            "Passphrase protecting the CA private keys (PKCS#8, AES-256). Empty: a random passphrase "
            "generated at init and kept in INSTANCE_DIR/keys/passphrase (mode 0600). Set it in production."),
    Setting("KEY_ALGORITHM", _key_algorithm, "ec-p256",
            "Key algorithm for new CA keys and server-generated keys: ec-p256, ec-p384, rsa-2048, rsa-3072."),
    Setting("PUBLIC_BASE_URL", str, "https://localhost:8443",
            "Base URL of the web UI and API as users reach it."),
    Setting("PKI_BASE_URL", str, "",
            "Base URL written into certificates for CRL distribution points, OCSP and caIssuers (plain HTTP, "
            "RFC 5280 4.2.1.13). Empty: `http://` + the host of PUBLIC_BASE_URL + the port of PKI_HTTP_BIND "
            "(`http://localhost:8080`); PUBLIC_BASE_URL when PKI_HTTP_BIND is empty."),
    Setting("PKI_HTTP_BIND", str, "0.0.0.0:8080",
            "Plain-HTTP address where nginx (make run) serves /pki/ only (CRLs, OCSP, CA certificates). "
            "Empty: no plain-HTTP listener."),
    Setting("SERVER_NAMES", str, "",
            "Comma-separated extra host names or IP addresses for opauth's own TLS certificate, besides "
            "localhost, 127.0.0.1, ::1 and the host of PUBLIC_BASE_URL. A change re-issues it at the next start."),
    Setting("SERVER_CERT_RENEW_DAYS", _int, 30,
            "opauth's own TLS certificate is re-issued at init/start when fewer days than this remain."),
    Setting("CERTIFICATE_POLICY_OID", parse_oid, "1.3.6.1.4.1.32473.1.1",
            "certificatePolicies OID in every certificate below the root. Default: under IANA's enterprise "
            "number for documentation (RFC 5612), a placeholder: set an OID of your organisation's arc."),
    Setting("ORGANIZATION", str, "opauth",
            "Organisation name (O) in the CA certificates' subjects."),
    Setting("ROOT_CA_VALIDITY_DAYS", _int, 7305, "Validity of the root CA certificate (days)."),
    Setting("ISSUING_CA_VALIDITY_DAYS", _int, 3653, "Validity of the issuing CA certificate (days)."),
    Setting("BUSINESS_SERVER_VALIDITY_DAYS", _int, 199,
            "Validity of business server certificates (days; CA/B Forum limit is 200 until 2027-03-15, then 100)."),
    Setting("OPERATOR_VALIDITY_DAYS", _int, 365, "Validity of operator certificates (days)."),
    Setting("TLS_VALIDITY_DAYS", _int, 199, "Validity of SSL communication certificates (days)."),
    Setting("OCSP_SIGNING_VALIDITY_DAYS", _int, 30,
            "Validity of the OCSP responder's signing certificate (days); renewed before it ends."),
    Setting("OCSP_SIGNING_RENEW_DAYS", _int, 7,
            "The OCSP signing certificate (and its key) is replaced when fewer days than this remain."),
    Setting("OCSP_VALIDITY_HOURS", _int, 24,
            "Lifetime of an OCSP response (nextUpdate − thisUpdate, hours)."),
    Setting("OCSP_REFRESH_HOURS", _int, 12,
            "A pre-signed OCSP response is re-signed when its nextUpdate is less than this many hours away."),
    Setting("CRL_VALIDITY_HOURS", _int, 24,
            "Lifetime of a CRL (nextUpdate − thisUpdate, hours)."),
    Setting("CRL_REFRESH_HOURS", _int, 12,
            "A CRL is re-signed when its nextUpdate is less than this many hours away (by the background "
            "publisher when a fetch notices it, and by `pki worker`, which `make run` starts, or `pki refresh`)."),
    Setting("PKI_CACHE_MAX_AGE_SECONDS", _int, 60,
            "HTTP `max-age` of CRL and OCSP answers (never beyond nextUpdate). HTTP caches may serve an "
            "answer this old, so it bounds how long a revocation can hide behind a cache; 0 disables caching."),
    Setting("MAX_UPLOAD_BYTES", _int, 1024 * 1024,
            "Largest request body accepted (bytes); larger uploads get 413."),
    Setting("MAX_CSR_BYTES", _int, 64 * 1024, "Largest CSR accepted (bytes)."),
    Setting("PAGE_SIZE", _int, 50, "Rows per page in lists (web UI and API)."),
    Setting("SESSION_COOKIE_SECURE", _bool, True,
            "Send the session cookie over HTTPS only."),
    # Login (operators/login/)
    Setting("ARGON2_TIME_COST", _int, 3, "argon2id iterations for operator passwords (RFC 9106)."),
    Setting("ARGON2_MEMORY_KIB", _int, 65536, "argon2id memory per hash (KiB)."),
    Setting("ARGON2_PARALLELISM", _int, 4, "argon2id lanes."),
    Setting("PASSWORD_MIN_LENGTH", _int, 12, "Shortest password an operator may choose."),
    Setting("PASSWORD_HISTORY", _int, 5,
            "How many previous passwords an operator may not reuse (0: only the current one)."),
    Setting("LOGIN_MAX_FAILURES", _int, 5,
            "Consecutive failed logins that lock an operator (until LOGIN_LOCK_MINUTES pass or an admin unlocks)."),
    Setting("LOGIN_LOCK_MINUTES", _int, 30, "How long a locked operator stays locked (minutes)."),
    Setting("LOGIN_THROTTLE_FAILURES", _int, 20,
            "Failed logins from one source address within LOGIN_THROTTLE_WINDOW_SECONDS before it gets 429."),
    Setting("LOGIN_THROTTLE_WINDOW_SECONDS", _int, 300, "Window of the per-address login throttle (seconds)."),
    Setting("SESSION_IDLE_MINUTES", _int, 30, "A login session ends after this long without a request (minutes)."),
    Setting("SESSION_ABSOLUTE_MINUTES", _int, 480, "A login session ends this long after login (minutes)."),
    Setting("REAUTH_MINUTES", _int, 5,
            "Sensitive administrator actions (certificate issuance) need a login or re-authentication this recent."),
    # Biometric login (bio/)
    Setting("WEBAUTHN_RP_ID", str, "",
            "WebAuthn relying party ID. Empty: the host of PUBLIC_BASE_URL."),
    Setting("WEBAUTHN_RP_NAME", str, "opauth オペレータ認証", "Relying party name shown by authenticators."),
    Setting("WEBAUTHN_ORIGIN", str, "",
            "Expected WebAuthn origin. Empty: scheme, host and port of PUBLIC_BASE_URL."),
    Setting("WEBAUTHN_ATTESTATION", str, "none",
            "Attestation conveyance asked at enrolment: none or direct."),
    Setting("WEBAUTHN_ALLOWED_AAGUIDS", str, "",
            "Comma-separated authenticator AAGUIDs accepted at enrolment. Empty: any authenticator."),
    Setting("WEBAUTHN_CHALLENGE_SECONDS", _int, 120,
            "Lifetime of a WebAuthn challenge (single use, kept server-side)."),
    Setting("ENROLMENT_CODE_MINUTES", _int, 60,
            "Lifetime of a single-use biometric self-enrolment code issued by a manager (minutes)."),
    Setting("TRUSTED_PROXIES", str, "",
            "Comma-separated TCP addresses/networks of reverse proxies whose X-SSL-Client-Cert header is "
            "believed. Weaker than APP_SOCKET: any local process can connect from 127.0.0.1. Empty (default): "
            "over TCP the header is ignored from everyone."),
    Setting("APP_SOCKET", str, "",
            "Unix socket between nginx and gunicorn (make run); only requests arriving over it may carry "
            "X-SSL-Client-Cert. Empty: INSTANCE_DIR/run/app.sock (directory mode 0700, socket 0600)."),
    Setting("CERT_EXPIRY_WARNING_DAYS", _int, 30,
            "Certificates expiring within this many days are listed as warnings for administrators."),
    Setting("BIOMETRIC_CLIENT_CERT_REQUIRED", _bool, True,
            "Biometric operators must present their own operator certificate (mutual TLS) at login and on "
            "every request of the session (seed 001 I.2.2(1)). Turn off only where no client certificate can "
            "reach the application."),
    Setting("SERVE_TLS", _bool, True,
            "When gunicorn runs alone on a TCP BIND: it terminates TLS itself (no client CA names, a foreign "
            "client certificate ends the handshake). false: plain HTTP for a TLS proxy (set TRUSTED_PROXIES)."),
    Setting("BIND", str, "0.0.0.0:8443",
            "HTTPS address: nginx listens here under make run (gunicorn then uses APP_SOCKET); gunicorn "
            "itself when started alone."),
    Setting("WORKERS", _int, 2, "gunicorn worker processes."),
)


# --- Where each setting lives ---------------------------------------------------------------------
# Settings not listed here are bootstrap settings: they come from the environment (or the default) only,
# because they are needed before the database can be read (INSTANCE_DIR, DATABASE_URL, secrets) or
# describe how this one process is deployed (gunicorn, TLS termination, proxies). The ones listed are
# kept with the instance (table ``instance_setting``, config/instance.py), written at ``init`` and read
# by gunicorn and every CLI command alike; 環境基本設定 changes them.


@dataclass(frozen=True)
class InstanceRule:
    """How an instance-stored setting is checked, and whether a change needs a restart to take effect."""

    kind: str = "int"  # int, bool, url, text, choice, aaguids, oid
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    restart: bool = False


def _days(low: int = 1, high: int = 36525) -> InstanceRule:
    return InstanceRule("int", low, high)


INSTANCE_SETTINGS: dict[str, InstanceRule] = {
    # A running server keeps its TLS certificate and WebAuthn relying party until restarted.
    "PUBLIC_BASE_URL": InstanceRule("url", restart=True),
    "PKI_BASE_URL": InstanceRule("url"),
    "ORGANIZATION": InstanceRule("text", 1, 64),
    "CERTIFICATE_POLICY_OID": InstanceRule("oid"),
    "ROOT_CA_VALIDITY_DAYS": _days(),
    "ISSUING_CA_VALIDITY_DAYS": _days(),
    "BUSINESS_SERVER_VALIDITY_DAYS": _days(1, 398),
    "OPERATOR_VALIDITY_DAYS": _days(1, 3653),
    "TLS_VALIDITY_DAYS": _days(1, 398),
    "OCSP_SIGNING_VALIDITY_DAYS": _days(2, 366),
    "OCSP_SIGNING_RENEW_DAYS": _days(1, 365),
    "OCSP_VALIDITY_HOURS": InstanceRule("int", 1, 24 * 7),
    "OCSP_REFRESH_HOURS": InstanceRule("int", 0, 24 * 7),
    "CRL_VALIDITY_HOURS": InstanceRule("int", 1, 24 * 31),
    "CRL_REFRESH_HOURS": InstanceRule("int", 0, 24 * 31),
    "PKI_CACHE_MAX_AGE_SECONDS": InstanceRule("int", 0, 86400),
    "CERT_EXPIRY_WARNING_DAYS": _days(1, 365),
    "PASSWORD_MIN_LENGTH": InstanceRule("int", 8, 128),
    "PASSWORD_HISTORY": InstanceRule("int", 0, 24),
    "ARGON2_TIME_COST": InstanceRule("int", 1, 20),
    "ARGON2_MEMORY_KIB": InstanceRule("int", 8192, 4 * 1024 * 1024),
    "ARGON2_PARALLELISM": InstanceRule("int", 1, 16),
    "LOGIN_MAX_FAILURES": InstanceRule("int", 1, 100),
    "LOGIN_LOCK_MINUTES": InstanceRule("int", 1, 10080),
    "LOGIN_THROTTLE_FAILURES": InstanceRule("int", 1, 10000),
    "LOGIN_THROTTLE_WINDOW_SECONDS": InstanceRule("int", 10, 86400),
    "SESSION_IDLE_MINUTES": InstanceRule("int", 1, 1440),
    "SESSION_ABSOLUTE_MINUTES": InstanceRule("int", 5, 10080),
    "REAUTH_MINUTES": InstanceRule("int", 1, 1440),
    "PAGE_SIZE": InstanceRule("int", 5, 500),
    "MAX_UPLOAD_BYTES": InstanceRule("int", 64 * 1024, 256 * 1024 * 1024),
    "MAX_CSR_BYTES": InstanceRule("int", 1024, 1024 * 1024),
    "WEBAUTHN_RP_NAME": InstanceRule("text", 1, 64),
    "WEBAUTHN_ATTESTATION": InstanceRule("choice", choices=("none", "direct")),
    "WEBAUTHN_ALLOWED_AAGUIDS": InstanceRule("aaguids"),
    "WEBAUTHN_CHALLENGE_SECONDS": InstanceRule("int", 30, 900),
    "ENROLMENT_CODE_MINUTES": InstanceRule("int", 5, 10080),
    "BIOMETRIC_CLIENT_CERT_REQUIRED": InstanceRule("bool"),
}

# Written into certificates: a stored value beats the environment, and a process whose environment
# disagrees refuses to issue (ca/authority.py) instead of signing other URLs than its peers.
PINNED: frozenset[str] = frozenset({"PUBLIC_BASE_URL", "PKI_BASE_URL", "ORGANIZATION", "CERTIFICATE_POLICY_OID"})


def parse_setting(setting: Setting, raw: str) -> Any:
    """``raw`` parsed by ``setting``'s parser; ``ConfigError`` naming the variable otherwise."""
    try:
        return setting.parse(raw)
    except ConfigError as exc:
        raise ConfigError(f"{setting.env}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{setting.env}: {exc}") from exc


def environment_values(overrides: dict[str, Any] | None = None,
                       environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The values this process was given: OPAUTH_* variables, then explicit ``overrides`` (both parsed)."""
    env = os.environ if environ is None else environ
    given: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(setting.env)
        if raw is not None:
            given[setting.key] = parse_setting(setting, raw)
    given.update(overrides or {})
    return given


def load_settings(overrides: dict[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None,
                  stored: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the effective settings: defaults, the instance's stored values, OPAUTH_* variables, overrides.

    ``stored`` holds the instance's settings (config/instance.py). For the
    settings that go into certificates (``PINNED``) a stored value beats the
    environment: every process signs with the same URLs, and a disagreeing
    variable is reported and blocks issuance instead of winning silently.
    """
    given = environment_values(overrides, environ)
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    for key, value in (stored or {}).items():
        if key in INSTANCE_SETTINGS and key in values:
            values[key] = value
    for key, value in given.items():
        if key in PINNED and stored and key in stored:
            continue
        values[key] = value
    return derive_settings(values)


def derive_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Fill the settings whose empty value means "follow another one" (in place; returned)."""
    instance = Path(values["INSTANCE_DIR"])
    if not values["DATABASE_URL"]:
        values["DATABASE_URL"] = f"sqlite:///{instance / 'opauth.db'}"
    values["PUBLIC_BASE_URL"] = values["PUBLIC_BASE_URL"].rstrip("/")
    if not values["PKI_BASE_URL"]:
        values["PKI_BASE_URL"] = _default_pki_base_url(values["PUBLIC_BASE_URL"], values["PKI_HTTP_BIND"])
    values["PKI_BASE_URL"] = values["PKI_BASE_URL"].rstrip("/")
    public = urlsplit(values["PUBLIC_BASE_URL"])
    if not values["WEBAUTHN_RP_ID"]:
        values["WEBAUTHN_RP_ID"] = public.hostname or "localhost"
    if not values["WEBAUTHN_ORIGIN"]:
        values["WEBAUTHN_ORIGIN"] = f"{public.scheme}://{public.netloc}"
    return values


def _default_pki_base_url(public_base_url: str, pki_http_bind: str) -> str:
    """Plain HTTP on the public host at the PKI listener's port (relying parties fetch CRLs without TLS)."""
    if not pki_http_bind:
        return public_base_url
    host = urlsplit(public_base_url).hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = pki_http_bind.rsplit(":", 1)[-1]
    return f"http://{host}" if port == "80" else f"http://{host}:{port}"


def where_kept(key: str) -> str:
    """Where ``key`` lives, as the README's table says it: environment, instance, restart, pinned."""
    rule = INSTANCE_SETTINGS.get(key)
    if rule is None:
        return "environment"
    words = ["instance"]
    if key in PINNED:
        words.append("pinned")
    if rule.restart:
        words.append("restart")
    return ", ".join(words)


def settings_markdown() -> str:
    """The README's settings table."""
    lines = ["| variable | default | kept in | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        if s.key == "INSTANCE_DIR":
            default = "`instance/` (in the project)"
        elif s.default == "":
            default = "(empty)"
        else:
            default = f"`{s.default}`"
        lines.append(f"| `{s.env}` | {default} | {where_kept(s.key)} | {s.description} |")
    return "\n".join(lines)
