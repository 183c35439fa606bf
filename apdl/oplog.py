"""操作ログ: one entry point for every logged operation, each entry chained to the previous by SHA-256.

Never pass PINs, keys or tokens in ``detail``: the log is kept in the database in the clear.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from flask_babel import lazy_gettext
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from apdl.db import utcnow
from apdl.models import OperationLog, OperationLogHead

GENESIS = "0" * 64
FORBIDDEN_KEYS = frozenset({"pin", "key", "auth_key", "token", "password", "secret"})


class Action(enum.StrEnum):
    """What was done."""

    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"
    BACKCHANNEL_LOGOUT = "backchannel_logout"
    LOGOUT_TOKEN_REFUSED = "logout_token_refused"
    AP_REGISTERED = "ap_registered"
    AP_REJECTED = "ap_rejected"
    AP_WITHDRAWN = "ap_withdrawn"
    AVAILABILITY_CHANGED = "availability_changed"
    PRESET_SAVED = "preset_saved"
    PRESET_REMOVED = "preset_removed"
    TENANT_PROFILE_SET = "tenant_profile_set"
    CUSTOM_FIELD_ADDED = "custom_field_added"
    RESIDENT_REGISTERED = "resident_registered"
    RESIDENT_UPDATED = "resident_updated"
    CARD_SESSION = "card_session"
    CARD_RECONCILED = "card_reconciled"
    REGIONAL_AREA_CREATED = "regional_area_created"
    AP_INSTALLED = "ap_installed"
    AP_INSTALL_FAILED = "ap_install_failed"
    AP_DELETED = "ap_deleted"
    REFUSED = "refused"
    CARD_DIAGNOSED = "card_diagnosed"
    REPORT_EXPORTED = "report_exported"
    TERMINAL_CODE = "terminal_code"  # a card agent asked for a pairing code
    TERMINAL_PAIRED = "terminal_paired"
    TERMINAL_REFUSED = "terminal_refused"  # a client certificate was refused (missing, foreign, revoked, unregistered)
    TERMINAL_REGISTERED = "terminal_registered"  # 端末管理
    TERMINAL_DISABLED = "terminal_disabled"
    TERMINAL_ENABLED = "terminal_enabled"
    TERMINAL_PINNED = "terminal_pinned"  # the one certificate it accepts changed (or any again)
    STATUS_FEED_IMPORTED = "status_feed_imported"  # one entry per batch, never per row
    STATUS_FEED_REPEATED = "status_feed_repeated"  # the same batch again: nothing changed
    STATUS_FEED_REJECTED = "status_feed_rejected"  # bad rows: nothing applied
    CARD_STOPPED = "card_stopped"  # 即時停止
    CARD_STOP_CANCELLED = "card_stop_cancelled"
    BUSINESS_API_REFUSED = "business_api_refused"  # a business system's client certificate was refused


# How the 操作ログ screen names each action (Japanese source, English in the catalogue).
ACTION_LABELS: dict[str, Any] = {
    Action.LOGIN: lazy_gettext("ログイン"),
    Action.LOGIN_FAILED: lazy_gettext("ログイン失敗"),
    Action.LOGOUT: lazy_gettext("ログアウト（操作者による）"),
    Action.BACKCHANNEL_LOGOUT: lazy_gettext("ログアウト（opauthからの通知）"),
    Action.LOGOUT_TOKEN_REFUSED: lazy_gettext("ログアウト通知の拒否"),
    Action.AP_REGISTERED: lazy_gettext("カードAP登録"),
    Action.AP_REJECTED: lazy_gettext("カードAP登録の拒否"),
    Action.AP_WITHDRAWN: lazy_gettext("カードAP廃止"),
    Action.AVAILABILITY_CHANGED: lazy_gettext("利用可能なカードAPの変更"),
    Action.PRESET_SAVED: lazy_gettext("プリセット保存"),
    Action.PRESET_REMOVED: lazy_gettext("プリセット削除"),
    Action.TENANT_PROFILE_SET: lazy_gettext("利用機関の設定"),
    Action.CUSTOM_FIELD_ADDED: lazy_gettext("独自項目の追加"),
    Action.RESIDENT_REGISTERED: lazy_gettext("利用者登録"),
    Action.RESIDENT_UPDATED: lazy_gettext("利用者情報の変更"),
    Action.CARD_SESSION: lazy_gettext("カード読取"),
    Action.CARD_RECONCILED: lazy_gettext("カードとの突合"),
    Action.REGIONAL_AREA_CREATED: lazy_gettext("地域住民向け領域の作成"),
    Action.AP_INSTALLED: lazy_gettext("カードAPの搭載"),
    Action.AP_INSTALL_FAILED: lazy_gettext("カードAP搭載の失敗"),
    Action.AP_DELETED: lazy_gettext("カードAPの削除"),
    Action.REFUSED: lazy_gettext("操作の拒否"),
    Action.CARD_DIAGNOSED: lazy_gettext("カード障害切り分け"),
    Action.REPORT_EXPORTED: lazy_gettext("報告の出力"),
    Action.TERMINAL_CODE: lazy_gettext("組付けコードの発行"),
    Action.TERMINAL_PAIRED: lazy_gettext("端末の組付け"),
    Action.TERMINAL_REFUSED: lazy_gettext("端末の接続拒否"),
    Action.TERMINAL_REGISTERED: lazy_gettext("端末登録"),
    Action.TERMINAL_DISABLED: lazy_gettext("端末の無効化"),
    Action.TERMINAL_ENABLED: lazy_gettext("端末の有効化"),
    Action.TERMINAL_PINNED: lazy_gettext("端末の証明書固定の変更"),
    Action.STATUS_FEED_IMPORTED: lazy_gettext("カードステータス取込"),
    Action.STATUS_FEED_REPEATED: lazy_gettext("カードステータス取込（取込済み）"),
    Action.STATUS_FEED_REJECTED: lazy_gettext("カードステータス取込の拒否"),
    Action.CARD_STOPPED: lazy_gettext("カードの即時停止"),
    Action.CARD_STOP_CANCELLED: lazy_gettext("カードの即時停止の解除"),
    Action.BUSINESS_API_REFUSED: lazy_gettext("業務システムからの要求の拒否"),
}


def action_label(action: str) -> str:
    """An action in the viewer's language (an action no longer known as it was recorded)."""
    label = ACTION_LABELS.get(action)
    return action if label is None else str(label)


def _digest(prev_hash: str, entry: dict[str, Any]) -> str:
    body = json.dumps(entry, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def _entry(row: Any) -> dict[str, Any]:  # an OperationLog or a row of its columns
    return {"at": row.at.replace(tzinfo=None).isoformat(), "tenant": row.tenant_code, "actor": row.actor,
            "action": row.action, "target": row.target, "detail": row.detail}


def record(session: Session, *, tenant_code: str, actor: str, action: Action, target: str = "",
           detail: dict[str, Any] | None = None) -> OperationLog:
    """Append one entry (flushed, committed by the caller)."""
    detail = dict(detail or {})
    leaked = FORBIDDEN_KEYS & {k.lower() for k in detail}
    if leaked:
        raise ValueError(f"secrets never go into the operation log: {sorted(leaked)}")
    # Write the head row first: it takes the row lock (PostgreSQL) or the write lock (SQLite)
    # before the previous hash is read, so two requests cannot both chain onto the same entry.
    touched = session.execute(update(OperationLogHead).where(OperationLogHead.id == 1)
                              .values(last_hash=OperationLogHead.last_hash))
    if getattr(touched, "rowcount", 0) == 0:
        session.add(OperationLogHead(id=1, last_hash=GENESIS))
        session.flush()
    head = session.scalars(select(OperationLogHead).where(OperationLogHead.id == 1).with_for_update()).one()
    prev_hash = head.last_hash
    # What a request sent may hold NUL, which PostgreSQL text cannot store.
    detail = json.loads(json.dumps(detail, ensure_ascii=False, default=str).replace("\\u0000", "\ufffd"))
    row = OperationLog(at=utcnow().replace(microsecond=0), tenant_code=tenant_code,
                       actor=actor[:200].replace("\x00", "\ufffd"), action=action.value,
                       target=target[:200].replace("\x00", "\ufffd"), detail=detail, prev_hash=prev_hash,
                       entry_hash="")
    row.entry_hash = _digest(prev_hash, _entry(row))
    session.add(row)
    session.flush()
    head.last_hash = row.entry_hash
    return row


@dataclass(frozen=True)
class ChainCheck:
    """What a walk of the whole chain found: entries checked, the first that does not match, a cut-off end."""

    checked: int
    broken: int | None  # id of the first entry whose hash or link does not match
    truncated: bool  # the entries end before the head: the newest ones were removed

    @property
    def intact(self) -> bool:
        return self.broken is None and not self.truncated


# The columns the hash covers, read a thousand rows at a time: memory stays flat however long the log.
_CHAIN = (select(OperationLog.id, OperationLog.at, OperationLog.tenant_code, OperationLog.actor,
                 OperationLog.action, OperationLog.target, OperationLog.detail, OperationLog.prev_hash,
                 OperationLog.entry_hash)
          .order_by(OperationLog.id).execution_options(yield_per=1000))


def check_chain(session: Session) -> ChainCheck:
    """Walk every entry (O(entries): run on request or from cron, never on each page view)."""
    prev_hash = GENESIS
    checked = 0
    for row in session.execute(_CHAIN):
        checked += 1
        if row.prev_hash != prev_hash or row.entry_hash != _digest(prev_hash, _entry(row)):
            return ChainCheck(checked=checked, broken=row.id, truncated=False)
        prev_hash = row.entry_hash
    head = session.scalar(select(OperationLogHead.last_hash).where(OperationLogHead.id == 1))
    return ChainCheck(checked=checked, broken=None, truncated=(head or GENESIS) != prev_hash)


def verify_chain(session: Session) -> int | None:
    """Id of the first entry whose hash or link does not match (0: the newest entries were removed), or None."""
    result = check_chain(session)
    if result.broken is not None:
        return result.broken
    return 0 if result.truncated else None
