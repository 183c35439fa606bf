"""Reading the audit log: entries newest first, filtered and paginated (監査ログ screen, API and CLI).

Filters:
- ``action``: exact (``auth.login_failure``), or every action under a prefix when it ends with a dot
  (``certificate.``);
- ``actor``: part of the actor's name (case-insensitive);
- ``tenant``: the actor's 市町村・任意団体 code, exact;
- ``result``: ``success`` or ``failure``;
- ``since`` / ``until``: UTC days ``YYYY-MM-DD``, both inclusive;
- ``text``: part of the target (case-insensitive).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import request
from flask_babel import lazy_gettext
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.audit import AuditEvent, AuditResult
from kernel.errors import InvalidInput
from kernel.pagination import Page
from kernel.webinput import text

MAX_PER_PAGE = 500
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Longest value each filter takes (the column's width; a date is ten characters).
LIMITS = {"action": 64, "actor": 200, "tenant": 20, "result": 10, "since": 10, "until": 10, "q": 100}


@dataclass(frozen=True)
class AuditFilters:
    action: str = ""
    actor: str = ""
    tenant: str = ""
    result: str = ""
    since: str = ""
    until: str = ""
    text: str = ""

    @classmethod
    def of(cls, **values: object) -> AuditFilters:
        """Filters from untrusted values (CLI options, query arguments) under the text rule, bounded."""
        checked = {name: text(values.get(name), field=name, max_length=LIMITS[name])
                   for name in ("action", "actor", "tenant", "result", "since", "until")}
        return cls(**checked, text=text(values.get("q"), field="q", max_length=LIMITS["q"]))

    @classmethod
    def from_request(cls) -> AuditFilters:
        """The filters of the current request's query string (``q`` is the free text over the target)."""
        return cls.of(**{name: request.args.get(name) for name in LIMITS})

    def as_args(self) -> dict[str, str]:
        """The filters set, as query arguments (for the pager's links)."""
        args = {"action": self.action, "actor": self.actor, "tenant": self.tenant, "result": self.result,
                "since": self.since, "until": self.until, "q": self.text}
        return {name: value for name, value in args.items() if value}


def parse_day(value: str, field: str) -> date | None:
    """A UTC day ``YYYY-MM-DD`` (empty: none); ``InvalidInput`` for anything else."""
    if not value:
        return None
    try:
        if not _DAY.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(lazy_gettext("%(field)s は YYYY-MM-DD 形式の日付で指定してください。",
                                        field=field)) from None


def _result(value: str) -> AuditResult | None:
    if not value:
        return None
    try:
        return AuditResult(value)
    except ValueError:
        raise InvalidInput(lazy_gettext("%(field)s は次のいずれかです: %(allowed)s", field="result",
                                        allowed=", ".join(r.value for r in AuditResult))) from None


def list_events(session: Session, filters: AuditFilters, *, page: int = 1, per_page: int = 50) -> Page[AuditEvent]:
    """Audit entries matching ``filters``, newest first; ``InvalidInput`` for a malformed filter or page."""
    if page < 1 or per_page < 1 or per_page > MAX_PER_PAGE:
        raise InvalidInput(lazy_gettext("page は1以上、per_page は1〜500で指定してください。"))
    since, until = parse_day(filters.since, "since"), parse_day(filters.until, "until")
    if since is not None and until is not None and since > until:
        raise InvalidInput(lazy_gettext("since は until 以前の日付を指定してください。"))
    result = _result(filters.result)
    query = select(AuditEvent)
    if filters.action.endswith("."):
        query = query.where(AuditEvent.action.startswith(filters.action, autoescape=True))
    elif filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.actor:
        query = query.where(AuditEvent.actor.icontains(filters.actor, autoescape=True))
    if filters.tenant:
        query = query.where(AuditEvent.tenant == filters.tenant)
    if result is not None:
        query = query.where(AuditEvent.result == result)
    if since is not None:
        query = query.where(AuditEvent.created_at >= datetime.combine(since, time.min, tzinfo=UTC))
    if until is not None and until < date.max:
        query = query.where(AuditEvent.created_at < datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC))
    if filters.text:
        query = query.where(AuditEvent.target.icontains(filters.text, autoescape=True))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = list(session.scalars(query.order_by(AuditEvent.id.desc()).offset((page - 1) * per_page).limit(per_page)))
    return Page(items=items, page=page, per_page=per_page, total=total)


def event_json(event: AuditEvent) -> dict[str, Any]:
    """One entry as the API and ``audit list --json`` show it."""
    return {
        "id": event.id,
        "created_at": event.created_at.isoformat(),
        "actor": event.actor,
        "tenant": event.tenant,
        "source": event.source,
        "action": event.action,
        "target": event.target,
        "result": str(event.result),
        "detail": event.detail,
        "entry_hash": event.entry_hash,
    }


def compact_detail(detail: dict[str, Any]) -> str:
    """The detail as one line of JSON (readable: no ASCII escapes)."""
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
