"""操作ログの閲覧: the operation log a page at a time, newest first, filtered by action, text, 利用機関 and date.

What a tenant may read is decided by :meth:`apdl.tenancy.TenantScope.operation_log` (its own entries; every
tenant's for the admin tenant). Dates are days in Japan time, both ends included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.orm import Session

from apdl import oplog, registry
from apdl.errors import InvalidInput
from apdl.models import OperationLog
from apdl.residents import LOCAL_TZ
from apdl.tenancy import TenantScope, actor_label
from apdl.validation import refused_character

PAGE_SIZE = 50
MAX_TEXT = 100
FIRST_YEAR, LAST_YEAR = 2000, 2100
# Kept in the log for the chain and for opauth's records, never shown: an operator is named by 業務内ID@利用機関,
# never by a session id or the pairwise sub.
UNSHOWN = frozenset({"sid", "sub"})


@dataclass(frozen=True)
class Filters:
    """What the list is narrowed to (empty: not narrowed)."""

    action: str = ""
    text: str = ""  # part of the target or the detail (a カードFID, ``ap:D392...``, ``resident:12``)
    tenant: str = ""
    date_from: date | None = None
    date_to: date | None = None

    def query_args(self) -> dict[str, str]:
        """The filters as query parameters (for the page links)."""
        args = {"action": self.action, "q": self.text, "tenant": self.tenant,
                "from": self.date_from.isoformat() if self.date_from else "",
                "to": self.date_to.isoformat() if self.date_to else ""}
        return {k: v for k, v in args.items() if v}


@dataclass(frozen=True)
class Entry:
    """One entry as the screen shows it."""

    id: int
    at: datetime
    tenant_code: str
    actor: str  # 業務内ID@利用機関, コマンド（user） or -
    action: str
    action_label: str
    target: str
    detail: str


@dataclass(frozen=True)
class Page:
    """One page of the filtered log."""

    entries: list[Entry]
    page: int
    pages: int
    total: int


def _day(raw: str) -> date | None:
    if not raw:
        return None
    try:
        if not (raw.isascii() and len(raw) == 10):
            raise ValueError(raw)
        day = date.fromisoformat(raw)
    except ValueError:
        day = None
    if day is None or not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise InvalidInput(_("日付はYYYY-MM-DDの形式（%(first)d〜%(last)d年）で指定してください。",
                             first=FIRST_YEAR, last=LAST_YEAR))
    return day


def parse_filters(args: Mapping[str, str]) -> Filters:
    """The filters from query parameters (``action``, ``q``, ``tenant``, ``from``, ``to``); InvalidInput when one
    is not acceptable."""
    action = (args.get("action") or "").strip()
    if action and action not in oplog.ACTION_LABELS:
        raise InvalidInput(_("操作の指定が正しくありません。"))
    text = (args.get("q") or "").strip()
    if refused_character(text) is not None or len(text) > MAX_TEXT:
        raise InvalidInput(_("検索語は制御文字を含まない%(max)d文字以内で指定してください。", max=MAX_TEXT))
    tenant = (args.get("tenant") or "").strip()
    if tenant and not registry.TENANT_CODE.match(tenant):
        raise InvalidInput(_("利用機関コードが正しくありません。"))
    date_from, date_to = _day((args.get("from") or "").strip()), _day((args.get("to") or "").strip())
    if date_from and date_to and date_from > date_to:
        raise InvalidInput(_("期間の開始日が終了日より後になっています。"))
    return Filters(action, text, tenant, date_from, date_to)


def _start_of(day: date) -> datetime:
    """Midnight of ``day`` in Japan time, in UTC."""
    return datetime.combine(day, time(), tzinfo=LOCAL_TZ).astimezone(UTC)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _detail_text(detail: dict[str, Any]) -> str:
    shown = {k: v for k, v in detail.items() if k not in UNSHOWN}
    return json.dumps(shown, ensure_ascii=False, sort_keys=True, separators=(", ", ": "), default=str) if shown else ""


def _target_text(target: str) -> str:
    return "session" if target.startswith("session:") else target


def search(scope: TenantScope, filters: Filters, page: int = 1, *, page_size: int = PAGE_SIZE) -> Page:
    """One page of the entries ``scope`` may read that match ``filters``, newest first (a page past the end is the
    last page)."""
    query = scope.operation_log()
    if filters.action:
        query = query.where(OperationLog.action == filters.action)
    if filters.tenant:
        query = query.where(OperationLog.tenant_code == filters.tenant)
    if filters.text:
        pattern = f"%{_escape_like(filters.text)}%"
        query = query.where(or_(OperationLog.target.like(pattern, escape="\\"),
                                cast(OperationLog.detail, String).like(pattern, escape="\\")))
    if filters.date_from:
        query = query.where(OperationLog.at >= _start_of(filters.date_from))
    if filters.date_to:
        query = query.where(OperationLog.at < _start_of(filters.date_to + timedelta(days=1)))
    session = scope.session
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    pages = max(1, -(-total // page_size))
    page = min(page, pages)  # past the end: the last page
    rows = session.scalars(query.order_by(OperationLog.id.desc()).offset((page - 1) * page_size).limit(page_size))
    entries = [Entry(row.id, row.at, row.tenant_code, actor_label(row.actor), row.action,
                     oplog.action_label(row.action), _target_text(row.target), _detail_text(row.detail))
               for row in rows]
    return Page(entries, page, pages, total)


def latest(session: Session, *, tenant: str = "", limit: int = PAGE_SIZE) -> list[Entry]:
    """The newest ``limit`` entries of every tenant (or of ``tenant``): the command line's view, the instance's
    administrator's tool."""
    return search(TenantScope(session, tenant or "", is_admin_tenant=not tenant), Filters(tenant=tenant),
                  page_size=limit).entries
