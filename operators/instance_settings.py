"""環境基本設定: view and change the instance's settings — one service for the web UI, the API and the CLI.

What is stored, how it is applied and which setting wins are decided in
config/instance.py; this module checks proposed values (types, ranges, URL
forms, settings that must agree with each other), stores the changes and
audits each one with its old and new value.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, has_app_context, has_request_context
from flask_babel import gettext
from sqlalchemy import event
from sqlalchemy.orm import Session

from config import INSTANCE_SETTINGS, PINNED, ConfigError, InstanceRule, load_settings, parse_oid
from config import instance as store
from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import InvalidInput, SettingsConflict


def N_(text: str) -> str:  # noqa: N802 - the marker pybabel extracts; translated when shown
    return text


# The screen's sections and labels (message ids, translated when shown), in the order 環境基本設定 shows them.
GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (N_("公開URL・PKI"), (
        ("PUBLIC_BASE_URL", N_("公開URL（画面・API）")),
        ("PKI_BASE_URL", N_("PKI URL（CRL・OCSP・CA証明書）")),
        ("ORGANIZATION", N_("CA証明書の組織名 (O)")),
        ("CERTIFICATE_POLICY_OID", N_("証明書ポリシーのOID (certificatePolicies)")),
    )),
    (N_("証明書の有効期間"), (
        ("BUSINESS_SERVER_VALIDITY_DAYS", N_("業務サーバ証明書（日）")),
        ("OPERATOR_VALIDITY_DAYS", N_("オペレータ証明書（日）")),
        ("TLS_VALIDITY_DAYS", N_("SSL通信証明書（日）")),
        ("ROOT_CA_VALIDITY_DAYS", N_("ルートCA証明書（日）")),
        ("ISSUING_CA_VALIDITY_DAYS", N_("発行CA証明書（日）")),
        ("OCSP_SIGNING_VALIDITY_DAYS", N_("OCSP署名証明書（日）")),
        ("OCSP_SIGNING_RENEW_DAYS", N_("OCSP署名証明書の更新（残り日数）")),
        ("CERT_EXPIRY_WARNING_DAYS", N_("有効期限警告（日前）")),
    )),
    (N_("CRL・OCSP"), (
        ("CRL_VALIDITY_HOURS", N_("CRLの有効期間（時間）")),
        ("CRL_REFRESH_HOURS", N_("CRLの再署名（残り時間）")),
        ("OCSP_VALIDITY_HOURS", N_("OCSP応答の有効期間（時間）")),
        ("OCSP_REFRESH_HOURS", N_("OCSP応答の再署名（残り時間）")),
        ("PKI_CACHE_MAX_AGE_SECONDS", N_("CRL・OCSP応答のキャッシュ（秒）")),
    )),
    (N_("パスワード・ロック"), (
        ("PASSWORD_MIN_LENGTH", N_("パスワードの最小文字数")),
        ("PASSWORD_HISTORY", N_("再利用できない過去のパスワード数")),
        ("LOGIN_MAX_FAILURES", N_("ロックまでの連続失敗回数")),
        ("LOGIN_LOCK_MINUTES", N_("ロック時間（分）")),
        ("LOGIN_THROTTLE_FAILURES", N_("送信元ごとの失敗回数上限")),
        ("LOGIN_THROTTLE_WINDOW_SECONDS", N_("送信元ごとの集計時間（秒）")),
        ("ARGON2_TIME_COST", N_("argon2id 反復回数")),
        ("ARGON2_MEMORY_KIB", N_("argon2id メモリ (KiB)")),
        ("ARGON2_PARALLELISM", N_("argon2id 並列度")),
    )),
    (N_("セッション"), (
        ("SESSION_IDLE_MINUTES", N_("無操作タイムアウト（分）")),
        ("SESSION_ABSOLUTE_MINUTES", N_("ログインの最長時間（分）")),
        ("REAUTH_MINUTES", N_("再認証の有効時間（分）")),
    )),
    (N_("生体認証（WebAuthn）"), (
        ("BIOMETRIC_CLIENT_CERT_REQUIRED", N_("生体認証にオペレータ証明書を必須とする")),
        ("WEBAUTHN_RP_NAME", N_("認証器に表示する名称")),
        ("WEBAUTHN_ATTESTATION", N_("アテステーション (none / direct)")),
        ("WEBAUTHN_ALLOWED_AAGUIDS", N_("許可する認証器のAAGUID（カンマ区切り）")),
        ("WEBAUTHN_CHALLENGE_SECONDS", N_("チャレンジの有効時間（秒）")),
        ("ENROLMENT_CODE_MINUTES", N_("登録コードの有効時間（分）")),
    )),
    (N_("画面・アップロード"), (
        ("PAGE_SIZE", N_("一覧の1ページの件数")),
        ("MAX_UPLOAD_BYTES", N_("アップロードの上限（バイト）")),
        ("MAX_CSR_BYTES", N_("CSRの上限（バイト）")),
    )),
)
LABELS: dict[str, str] = {key: label for _group, items in GROUPS for key, label in items}

# Pairs that must agree: (smaller, larger) — the smaller must stay below (or not above) the larger.
ORDERED: tuple[tuple[str, str, bool], ...] = (
    ("CRL_REFRESH_HOURS", "CRL_VALIDITY_HOURS", True),
    ("OCSP_REFRESH_HOURS", "OCSP_VALIDITY_HOURS", True),
    ("OCSP_SIGNING_RENEW_DAYS", "OCSP_SIGNING_VALIDITY_DAYS", True),
    ("SESSION_IDLE_MINUTES", "SESSION_ABSOLUTE_MINUTES", False),
    ("REAUTH_MINUTES", "SESSION_ABSOLUTE_MINUTES", False),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _(text: str, **values: Any) -> str:
    # The CLI has no request to choose a language from: it gets the Japanese message ids.
    if has_request_context():
        return str(gettext(text, **values))
    return text % values if values else text


class SettingsInvalid(InvalidInput):
    """One or more proposed values are refused; ``errors`` maps each setting to its reason."""

    code = "invalid_settings"

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Change:
    """One setting about to change (or changed): old and new effective value."""

    key: str
    old: Any
    new: Any
    restart: bool


def label(key: str) -> str:
    """The setting's name on the screen."""
    return _(LABELS[key]) if key in LABELS else key


def display(value: Any) -> str:
    """A value as the screen and the CLI show it."""
    return store.to_text(value) if value is not None else ""


def _url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(_("http:// または https:// で始まるURLを入力してください。"))
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(_("URLに ?、#、ユーザー名は使えません。"))
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        raise ValueError(_("ポート番号が正しくありません。")) from None
    return value


def _integer(raw: Any, rule: InstanceRule) -> int:
    if isinstance(raw, bool):
        raise ValueError(_("整数を入力してください。"))
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and re.fullmatch(r"\s*-?\d{1,12}\s*", raw):
        value = int(raw)
    else:
        raise ValueError(_("整数を入力してください。"))
    low = rule.low if rule.low is not None else 0
    high = rule.high if rule.high is not None else 2**31 - 1
    if not low <= value <= high:
        raise ValueError(_("%(low)s 以上 %(high)s 以下で入力してください。", low=low, high=high))
    return value


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(_("true または false を指定してください。"))


def _text(raw: Any, rule: InstanceRule) -> str:
    if not isinstance(raw, str):
        raise ValueError(_("文字列を入力してください。"))
    value = raw.strip()
    if _CONTROL.search(value):
        raise ValueError(_("制御文字は使えません。"))
    if not (rule.low or 0) <= len(value) <= (rule.high or 1000):
        raise ValueError(_("%(low)s 文字以上 %(high)s 文字以下で入力してください。",
                           low=rule.low or 0, high=rule.high or 1000))
    return value


def _aaguids(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(_("文字列を入力してください。"))
    items = [item.strip().lower() for item in raw.split(",") if item.strip()]
    for item in items:
        try:
            uuid.UUID(item)
        except ValueError:
            raise ValueError(_("AAGUIDの形式が正しくありません: %(value)s", value=item[:40])) from None
    return ",".join(items)


def parse_value(key: str, raw: Any) -> Any:
    """``raw`` (form text, CLI text or a JSON value) checked and converted for ``key``."""
    rule = INSTANCE_SETTINGS[key]
    if rule.kind == "int":
        return _integer(raw, rule)
    if rule.kind == "bool":
        return _boolean(raw)
    if not isinstance(raw, str):
        raise ValueError(_("文字列を入力してください。"))
    if rule.kind == "url":
        return _url(raw)
    if rule.kind == "choice":
        value = raw.strip().lower()
        if value not in rule.choices:
            raise ValueError(_("次のいずれかを指定してください: %(choices)s", choices=", ".join(rule.choices)))
        return value
    if rule.kind == "aaguids":
        return _aaguids(raw)
    if rule.kind == "oid":
        try:
            return parse_oid(raw)
        except ConfigError:
            raise ValueError(_("OIDの形式が正しくありません（例: 1.2.392.200000.1）。")) from None
    return _text(raw, rule)


def list_settings(session: Session, *, config: Mapping[str, Any], given: dict[str, Any]) -> list[store.Effective]:
    """Every setting with its effective value, source and stored/environment values."""
    return store.effective(dict(config), given, store.stored_values(session))


def plan_changes(session: Session, *, config: Mapping[str, Any], given: dict[str, Any],
                 proposed: Mapping[str, Any]) -> list[Change]:
    """Check ``proposed`` (key → raw value) and return the real changes; ``SettingsInvalid`` otherwise."""
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for key, raw in proposed.items():
        if key not in INSTANCE_SETTINGS:
            errors[key] = _("この設定はここでは変更できません（環境変数で指定します）。")
            continue
        try:
            parsed[key] = parse_value(key, raw)
        except (ValueError, ConfigError) as exc:
            errors[key] = str(exc)
    stored = store.stored_values(session)
    current = {row.key: row for row in store.effective(dict(config), given, stored)}
    for key, value in parsed.items():
        # A value the environment sets cannot be changed from here: it would not take effect in this
        # process (or, for pinned settings, would stop it from issuing). Confirming it is allowed.
        if key in given and store.normalised(key, given[key]) != value:
            errors[key] = _("環境変数 %(env)s で指定されているため変更できません。", env="OPAUTH_" + key)
    if errors:
        raise SettingsInvalid(errors)
    merged = load_settings(given, environ={}, stored={**stored, **parsed})
    for small, large, strict in ORDERED:
        touched = small in parsed or large in parsed
        if touched and (merged[small] > merged[large] or (strict and merged[small] == merged[large])):
            key = small if small in parsed else large
            errors[key] = (_("%(small)s は %(large)s より小さくしてください。", small=label(small), large=label(large))
                           if strict else
                           _("%(small)s は %(large)s 以下にしてください。", small=label(small), large=label(large)))
    if errors:
        raise SettingsInvalid(errors)
    changes = []
    for key, value in parsed.items():
        row = current[key]
        old = row.stored if row.stored is not None else row.value
        if old != value or (key in PINNED and row.stored is None):
            changes.append(Change(key=key, old=old, new=value, restart=INSTANCE_SETTINGS[key].restart))
    return changes


def apply_changes(session: Session, *, config: Mapping[str, Any], given: dict[str, Any],
                  proposed: Mapping[str, Any], actor: Actor) -> list[Change]:
    """Check and store ``proposed``; one audit entry per changed setting. Flushed, not committed."""
    changes = plan_changes(session, config=config, given=given, proposed=proposed)
    for change in changes:
        store.write(session, key=change.key, value=change.new, actor=actor.name)
        record_event(session, action=AuditAction.SETTING_CHANGED, actor=actor, target=f"setting:{change.key}",
                     detail={"key": change.key, "old": display(change.old), "new": display(change.new),
                             "restart_required": change.restart})
    return changes


def seed_at_init(session: Session, *, config: Mapping[str, Any], given: dict[str, Any], actor: Actor) -> None:
    """``init``: store the settings the instance does not have yet (config.instance.seed) and audit them.

    An environment that disagrees with the stored pinned settings stops ``init`` (and so ``make run``)
    with ``SettingsConflict`` before anything is signed.
    """
    conflicts = store.pinned_conflicts(given, store.stored_values(session))
    if conflicts:
        raise SettingsConflict(" ".join(c.message() for c in conflicts))
    written = store.seed(session, config=dict(config), given=given, actor=actor.name)
    if written and has_app_context():
        # Apply what was stored once it is committed, so this process is current from the start.
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        event.listen(session, "after_commit", lambda _session: store.refresh(app), once=True)
    if written:
        record_event(session, action=AuditAction.SETTINGS_INITIALISED, actor=actor, target="settings",
                     detail={key: display(value) for key, value in written.items()})


def given_settings() -> dict[str, Any]:
    """What this process's environment (and ``create_app`` overrides) said, parsed; {} outside an app."""
    if not has_app_context():
        return {}
    return dict(current_app.extensions.get(store.GIVEN, {}))
