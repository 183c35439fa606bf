"""カードステータス: the daily card status feed, 即時停止 by a service provider, and what they mean for card operations.

Feed format (one batch; the batch id names it, e.g. ``20261130``; letters, digits, ``._:-``, ≤ 64):

- CSV, UTF-8 (a BOM is allowed), a header row naming the four columns in this order:
  ``card_identifier,status,residence_code,occurred_at``; one row per card.
- JSON: ``{"batch_id": "20261130", "records": [{"card_identifier": ..., "status": ..., "residence_code": ...,
  "occurred_at": ...}, ...]}`` (``batch_id`` may also be given beside the file).

``card_identifier`` is the カードFID (8–32 digits); ``status`` one of ``active`` (運用中, e.g. a suspension lifted),
``lost`` (紛失), ``stolen`` (盗難), ``suspended`` (一時停止), ``abolished`` (廃止), ``moved`` (転出);
``residence_code`` the new municipality's 全国地方公共団体コード (check digit verified), required for ``moved`` and
empty otherwise; ``occurred_at`` ISO 8601 with an offset (``2026-11-29T10:00:00+09:00``) or a date (00:00 JST),
not later than the import's time plus ``FUTURE_SKEW`` (a row from the future would hold the card's status until
that time passed, since an older change never replaces a newer one).

A batch is applied whole or not at all: any bad row rejects it, every bad row is reported with its line
(CSV; the header is line 1) or record number (JSON); a file that cannot be read at all (not UTF-8, not JSON) is
reported as such, with no line. Re-importing a batch id with the same content changes
nothing and says so; the same id with other content is refused. A card's row is replaced only by a change
that is not older than the one it holds; ``changed_at`` is when this module applied it (``changes_since``).
One operation-log entry per batch, never per row.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext, ngettext
from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from apdl import oplog
from apdl.areas import municipality_code_valid
from apdl.db import utcnow
from apdl.errors import Conflict, InvalidInput
from apdl.models import CardAp, CardStatus, CardStop, FeedStatus, Installation, InstallState, StatusBatch
from apdl.residents import is_my_number

FIELDS = ("card_identifier", "status", "residence_code", "occurred_at")
BLOCKING = frozenset({FeedStatus.LOST, FeedStatus.STOLEN, FeedStatus.SUSPENDED, FeedStatus.ABOLISHED})
BATCH_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
CARD_ID = re.compile(r"[0-9]{8,32}")
JST = timezone(timedelta(hours=9))
FUTURE_SKEW = timedelta(minutes=10)  # clock skew allowed between the feed's source and this module
MAX_REPORTED = 100  # bad rows listed at most (the count is always complete)
CHUNK = 50_000
STATUS_LABELS = {
    FeedStatus.ACTIVE: lazy_gettext("運用中"),
    FeedStatus.LOST: lazy_gettext("紛失"),
    FeedStatus.STOLEN: lazy_gettext("盗難"),
    FeedStatus.SUSPENDED: lazy_gettext("一時停止"),
    FeedStatus.ABOLISHED: lazy_gettext("廃止"),
    FeedStatus.MOVED: lazy_gettext("転出"),
}


class FeedFormat(enum.StrEnum):
    """How a feed file is written."""

    CSV = "csv"
    JSON = "json"


@dataclass(frozen=True)
class ParsedFeed:
    """A checked batch. Each row is kept as its canonical line ``card\\tstatus\\tcode\\toccurred-UTC-ISO`` (what
    PostgreSQL's COPY reads and what the digest covers): a million rows stay a million short strings."""

    batch_id: str  # what the document named (JSON), "" otherwise
    lines: list[str]
    moved: int
    digest: str



@dataclass(frozen=True)
class Problem:
    """One bad row: where (CSV line or JSON record number) and what."""

    position: int
    message: str


class FeedUnreadable(InvalidInput):
    """The file as a whole cannot be read (not UTF-8, not a JSON document of the expected shape): nothing
    was applied, and there is no line to point at."""


class FeedRejected(InvalidInput):
    """A batch with bad rows: nothing was applied."""

    def __init__(self, problems: list[Problem], total: int, unit: str) -> None:
        super().__init__(ngettext("カードステータスの取込データに誤りがあります（%(num)d件）。何も反映していません。",
                                  "カードステータスの取込データに誤りがあります（%(num)d件）。何も反映していません。",
                                  total))
        self.problems, self.total, self.unit = problems, total, unit

    def lines(self) -> list[str]:
        """Each reported problem as ``N行目: …`` (CSV) or ``N件目: …`` (JSON)."""
        if self.unit == "line":
            return [_("%(n)d行目: %(message)s", n=p.position, message=p.message) for p in self.problems]
        return [_("%(n)d件目: %(message)s", n=p.position, message=p.message) for p in self.problems]


@dataclass(frozen=True)
class ImportResult:
    """What one import did."""

    batch_id: str
    rows: int
    changed: int
    repeated: bool  # the same batch was imported before: nothing changed


@dataclass(frozen=True)
class StopSeen:
    """A 即時停止 in force as one viewer may see it. Its reason is the stopping 利用機関's own record: another
    利用機関 that registered the same card sees only that the card is stopped, never why or by whom."""

    own: bool  # the viewer's 利用機関 made it (or the viewer is the system administrator's tenant)
    reason: str | None  # None unless ``own``
    stopped_at: datetime


@dataclass(frozen=True)
class StatusView:
    """One card's status as card operations and an API see it."""

    card_identifier: str
    feed_status: FeedStatus | None
    residence_code: str
    occurred_at: datetime | None
    stop: StopSeen | None  # the 即時停止 in force, if any, as the viewer may see it
    regional_purge: bool

    @property
    def blocked(self) -> bool:
        """No card operation may start."""
        return self.stop is not None or self.feed_status in BLOCKING


@dataclass(frozen=True)
class Change:
    """One status change (feed or 即時停止) after a time, for a business system polling for changes."""

    card_identifier: str
    kind: str  # "feed", "stopped", "stop_cancelled"
    status: str
    residence_code: str
    at: datetime


@dataclass(frozen=True)
class FeedState:
    """When the feed was last imported and whether that is too long ago."""

    last_import_at: datetime | None
    last_batch_id: str
    stale: bool


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --- parsing -------------------------------------------------------------------------------------------------


# The fast path: one regular expression per CSV line; anything it does not take goes through csv and the
# detailed checks, which produce the messages.
_FAST_LINE = re.compile(r"([0-9]{8,32}),(active|lost|stolen|suspended|abolished|moved),([0-9]{6}|),"
                        r"([0-9]{4}-[0-9]{2}-[0-9]{2}(?:T[0-9:.]{5,15}(?:[+-][0-9]{2}:[0-9]{2}|Z))?)\r?")


FUTURE = "future"  # _Checker.time's answer for a time beyond the allowed skew


class _Checker:
    """Validates rows one by one, remembering problems, duplicates and the canonical lines."""

    def __init__(self, now: datetime) -> None:
        self.latest = now + FUTURE_SKEW
        self.lines: list[str] = []
        self.problems: list[Problem] = []
        self.total_bad = 0
        self.seen: dict[str, int] = {}
        self.moved = 0
        self._times: dict[str, str | None] = {}
        self._codes: dict[str, bool] = {}

    def bad(self, position: int, message: str) -> None:
        self.total_bad += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(Problem(position, message))

    def time(self, raw: str) -> str | None:
        """``raw`` as UTC ISO 8601, ``FUTURE`` when later than the allowed skew, or None when not a time (cached:
        a day's feed repeats its times)."""
        known = self._times.get(raw, "")
        if known != "":
            return known
        at = _parse_time(raw)
        value = None if at is None else FUTURE if at > self.latest else at.isoformat()
        if len(self._times) < 100_000:
            self._times[raw] = value
        return value

    def code_ok(self, code: str) -> bool:
        known = self._codes.get(code)
        if known is None:
            known = self._codes[code] = municipality_code_valid(code)
        return known

    def fast(self, position: int, line: str) -> bool:
        """Take a plain, well-formed line; False sends it to the detailed checks."""
        match = _FAST_LINE.fullmatch(line)
        if match is None:
            return False
        card, status, code, occurred = match.groups()
        if (status == "moved") != bool(code) or (code and not self.code_ok(code)):
            return False
        at = self.time(occurred)
        if at is None or at == FUTURE or self.seen.setdefault(card, position) != position:
            return False
        self.moved += code != ""
        self.lines.append(f"{card}\t{status}\t{code}\t{at}")
        return True

    def add(self, position: int, card: Any, status: Any, code: Any, occurred: Any) -> None:
        if not all(isinstance(v, str) for v in (card, status, code, occurred)):
            self.bad(position, _("値はすべて文字列で指定してください。"))
            return
        card, status, code, occurred = card.strip(), status.strip(), code.strip(), occurred.strip()
        if not CARD_ID.fullmatch(card):
            self.bad(position, _("カードFIDは8〜32桁の半角数字です。"))
            return
        try:
            state = FeedStatus(status)
        except ValueError:
            self.bad(position, _("状態「%(status)s」は使えません（%(allowed)s）。", status=status[:20],
                                 allowed=", ".join(FeedStatus)))
            return
        if state is FeedStatus.MOVED:
            if not self.code_ok(code):
                self.bad(position, _("転出には転出先の全国地方公共団体コード（6桁、検査数字付き）が必要です。"))
                return
        elif code:
            self.bad(position, _("転出以外では住所地コードを空にしてください。"))
            return
        at = self.time(occurred)
        if at is None:
            self.bad(position, _("発生日時は ISO 8601（時差付き）または日付で指定してください。"))
            return
        if at == FUTURE:
            self.bad(position, _("発生日時 %(at)s が未来です（取込時刻より%(minutes)d分以上後）。",
                                 at=occurred[:40], minutes=FUTURE_SKEW.seconds // 60))
            return
        first = self.seen.setdefault(card, position)
        if first != position:
            self.bad(position, _("カードFID %(card)s が重複しています（最初は %(first)d）。", card=card, first=first))
            return
        self.moved += state is FeedStatus.MOVED
        self.lines.append(f"{card}\t{state.value}\t{code}\t{at}")


def _parse_time(raw: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if len(raw) == 10:  # a date: the day starts in Japan
        return value.replace(tzinfo=JST).astimezone(UTC)
    if value.tzinfo is None:
        return None
    return value.astimezone(UTC)


def parse_feed(data: bytes, fmt: FeedFormat, *, now: datetime | None = None) -> ParsedFeed:
    """The checked batch; FeedRejected listing the bad rows if any is bad (a row later than ``now`` plus
    ``FUTURE_SKEW`` is bad), FeedUnreadable if the file cannot be read at all."""
    unit = "line" if fmt is FeedFormat.CSV else "record"
    try:
        body = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedUnreadable(_("ファイルが UTF-8 ではないため読めません。CP932（Shift_JIS）などで保存したファイルは "
                               "UTF-8 で保存し直してください。")) from exc
    checker = _Checker(now or utcnow())
    named = ""
    if fmt is FeedFormat.CSV:
        _parse_csv(body, checker)
    else:
        named = _parse_json(body, checker)
    if checker.total_bad:
        raise FeedRejected(checker.problems, checker.total_bad, unit)
    digest = hashlib.sha256()
    for start in range(0, len(checker.lines), CHUNK):
        digest.update("\n".join(checker.lines[start:start + CHUNK]).encode() + b"\n")
    return ParsedFeed(named, checker.lines, checker.moved, digest.hexdigest())


def _parse_csv(body: str, checker: _Checker) -> None:
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    header = next(csv.reader([lines[0].rstrip("\r")]), []) if lines else []
    if [h.strip() for h in header] != list(FIELDS):
        checker.bad(1, _("見出し行は %(fields)s です。", fields=",".join(FIELDS)))
        return
    fast = checker.fast
    for number, line in enumerate(lines[1:], start=2):
        if fast(number, line):
            continue
        line = line.rstrip("\r")
        if not line.strip():
            continue  # a blank line
        try:
            record = next(csv.reader([line], strict=True))
        except csv.Error:
            checker.bad(number, _("CSV として読めません。"))
            continue
        if len(record) != len(FIELDS):
            checker.bad(number, _("列の数が %(n)d ではありません。", n=len(FIELDS)))
            continue
        checker.add(number, *record)


def _parse_json(body: str, checker: _Checker) -> str:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise FeedUnreadable(_("ファイルを JSON として読めません。")) from exc
    if not isinstance(document, dict) or not isinstance(document.get("records"), list):
        raise FeedUnreadable(_("JSON は {\"batch_id\": …, \"records\": […]} の形です。"))
    named = document.get("batch_id", "")
    for number, record in enumerate(document["records"], start=1):
        if not isinstance(record, dict) or set(record) - set(FIELDS) or not {"card_identifier", "status",
                                                                              "occurred_at"} <= set(record):
            checker.bad(number, _("項目は %(fields)s です。", fields=", ".join(FIELDS)))
            continue
        checker.add(number, record["card_identifier"], record["status"], record.get("residence_code", ""),
                    record["occurred_at"])
    return named if isinstance(named, str) else "\x00"


def format_of(filename: str, data: bytes) -> FeedFormat:
    """JSON when the file is named ``*.json`` or starts with ``{``, else CSV."""
    if filename.lower().endswith(".json") or data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return FeedFormat.JSON
    return FeedFormat.CSV


# --- import --------------------------------------------------------------------------------------------------


def import_feed(session: Session, data: bytes, *, fmt: FeedFormat, batch_id: str, actor: str,
                tenant_code: str) -> ImportResult:
    """Parse, check and apply one batch (committed); a rejected batch is logged and nothing else is written."""
    try:
        feed = parse_feed(data, fmt)
        batch_id = _batch_id(batch_id, feed.batch_id)
        return _apply(session, batch_id, feed, actor=actor, tenant_code=tenant_code)
    except (InvalidInput, Conflict) as exc:
        session.rollback()
        detail: dict[str, Any] = {"batch": batch_id[:64], "error": str(exc)[:200]}
        if isinstance(exc, FeedRejected):
            detail.update(bad_rows=exc.total, first=[f"{p.position}: {p.message}" for p in exc.problems[:5]])
        oplog.record(session, tenant_code=tenant_code, actor=actor, action=oplog.Action.STATUS_FEED_REJECTED,
                     target=f"status-batch:{batch_id[:64]}", detail=detail)
        session.commit()
        raise


def _batch_id(given: str, named: str) -> str:
    given = given.strip()
    if given and named and given != named:
        raise InvalidInput(_("バッチIDがファイルの batch_id と一致しません。"))
    batch_id = given or named
    if not BATCH_ID.fullmatch(batch_id):
        raise InvalidInput(_("バッチID（半角英数字と ._:- 、64文字以内）を指定してください。"))
    return batch_id


def _apply(session: Session, batch_id: str, feed: ParsedFeed, *, actor: str, tenant_code: str) -> ImportResult:
    digest, rows = feed.digest, feed.lines
    earlier = session.get(StatusBatch, batch_id)
    if earlier is not None:
        return _repeated(session, earlier, digest, actor=actor, tenant_code=tenant_code)
    now = utcnow()
    batch = StatusBatch(batch_id=batch_id, digest=digest, rows=len(rows), changed=0, imported_at=now,
                        imported_by=actor[:200])
    session.add(batch)
    try:
        session.flush()  # the batch's row first: a concurrent import of the same id waits here, then fails
    except IntegrityError:
        session.rollback()
        earlier = session.get(StatusBatch, batch_id)
        if earlier is None:
            raise
        return _repeated(session, earlier, digest, actor=actor, tenant_code=tenant_code)
    batch.changed = _upsert(session, batch_id, rows, now)
    moved = feed.moved
    oplog.record(session, tenant_code=tenant_code, actor=actor, action=oplog.Action.STATUS_FEED_IMPORTED,
                 target=f"status-batch:{batch_id}",
                 detail={"rows": len(rows), "changed": batch.changed, "moved": moved, "digest": digest})
    session.commit()
    return ImportResult(batch_id, len(rows), batch.changed, repeated=False)


def _repeated(session: Session, earlier: StatusBatch, digest: str, *, actor: str, tenant_code: str) -> ImportResult:
    if earlier.digest != digest:
        raise Conflict(_("バッチID %(batch)s は別の内容で取込済みです。", batch=earlier.batch_id))
    oplog.record(session, tenant_code=tenant_code, actor=actor, action=oplog.Action.STATUS_FEED_REPEATED,
                 target=f"status-batch:{earlier.batch_id}", detail={"rows": earlier.rows, "digest": digest})
    session.commit()
    return ImportResult(earlier.batch_id, earlier.rows, 0, repeated=True)


_UPSERT = """
INSERT INTO apdl_card_status AS t
    (card_identifier, status, residence_code, occurred_at, batch_id, changed_at, regional_purge)
SELECT card_identifier, status, residence_code, occurred_at, :batch, :now, status = 'moved'
FROM apdl_status_stage WHERE true
ON CONFLICT (card_identifier) DO UPDATE SET
    status = excluded.status, residence_code = excluded.residence_code, occurred_at = excluded.occurred_at,
    batch_id = excluded.batch_id, changed_at = excluded.changed_at,
    regional_purge = (excluded.regional_purge OR t.regional_purge)
WHERE excluded.occurred_at >= t.occurred_at
    AND (t.status <> excluded.status OR t.residence_code <> excluded.residence_code)
"""


def _upsert(session: Session, batch_id: str, rows: list[str], now: datetime) -> int:
    """Stage the rows (COPY on PostgreSQL, chunked executemany on SQLite), then one INSERT … ON CONFLICT."""
    connection = session.connection()
    stage = Table("apdl_status_stage", MetaData(), Column("card_identifier", String(32)),
                  Column("status", String(16)), Column("residence_code", String(6)),
                  Column("occurred_at", DateTime(timezone=True)), prefixes=["TEMPORARY"])
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.exec_driver_sql("CREATE TEMPORARY TABLE apdl_status_stage (card_identifier varchar(32), "
                                   "status varchar(16), residence_code varchar(6), occurred_at timestamptz) "
                                   "ON COMMIT DROP")
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(  # type: ignore[union-attr]
                "COPY apdl_status_stage (card_identifier, status, residence_code, occurred_at) FROM STDIN") as copy:
            for start in range(0, len(rows), CHUNK):
                copy.write("\n".join(rows[start:start + CHUNK]) + "\n")
    else:
        stage.drop(connection, checkfirst=True)  # left over only if a connection outlived a failed import
        stage.create(connection)
        for start in range(0, len(rows), CHUNK):
            connection.execute(insert(stage), [
                {"card_identifier": card, "status": status, "residence_code": code,
                 "occurred_at": datetime.fromisoformat(at)}
                for card, status, code, at in (line.split("\t") for line in rows[start:start + CHUNK])])
    result = connection.execute(text(_UPSERT).bindparams(bindparam("now", now, type_=DateTime(timezone=True)),
                                                         bindparam("batch", batch_id, type_=String())))
    changed = int(getattr(result, "rowcount", 0) or 0)
    if not postgres:
        stage.drop(connection)
    return changed


# --- reading -------------------------------------------------------------------------------------------------


def active_stop(session: Session, card_identifier: str) -> CardStop | None:
    """The 即時停止 in force on the card, if any."""
    return session.scalars(select(CardStop).where(CardStop.card_identifier == card_identifier,
                                                  CardStop.cancelled_at.is_(None))
                           .order_by(CardStop.id.desc())).first()


def status_of(session: Session, card_identifier: str, *, viewer: str | None) -> StatusView:
    """The card's feed status and any 即時停止 in force, as the 利用機関 ``viewer`` may see them (``None``: the
    system administrator's tenant, which sees every reason). The one place a stop's reason is read for display."""
    row = session.get(CardStatus, card_identifier)
    stop = active_stop(session, card_identifier)
    seen = None
    if stop is not None:
        own = viewer is None or stop.tenant_code == viewer
        seen = StopSeen(own=own, reason=stop.reason if own else None, stopped_at=_aware(stop.stopped_at))
    return StatusView(card_identifier, FeedStatus(row.status) if row else None, row.residence_code if row else "",
                      _aware(row.occurred_at) if row else None, seen, bool(row and row.regional_purge))


def refusal(view: StatusView) -> str | None:
    """Why no card operation may start on this card (Japanese msgid, translated), or None."""
    if view.stop is not None and view.stop.own:
        return str(_("このカードは即時停止されています（理由: %(reason)s）。カードの操作はできません。",
                     reason=view.stop.reason))
    if view.stop is not None:
        return str(_("このカードは他の利用機関により即時停止されています。カードの操作はできません。"))
    if view.feed_status in BLOCKING:
        return str(_("このカードは%(status)sのため利用できません。カードの操作はできません。",
                     status=STATUS_LABELS[view.feed_status]))
    return None


def changes_since(session: Session, since: datetime, *, limit: int = 10_000,
                  cards: Select[str] | None = None) -> list[Change]:
    """Feed changes applied and 即時停止 made or cancelled at or after ``since``, oldest first; with ``cards``
    (a query of カードFIDs, e.g. :meth:`apdl.tenancy.BusinessScope.cards`) only those cards' changes."""
    since = _aware(since).astimezone(UTC)
    feed = select(CardStatus).where(CardStatus.changed_at >= since)
    stopped = select(CardStop).where((CardStop.stopped_at >= since) | (CardStop.cancelled_at >= since))
    if cards is not None:
        feed = feed.where(CardStatus.card_identifier.in_(cards))
        stopped = stopped.where(CardStop.card_identifier.in_(cards))
    changes = [Change(r.card_identifier, "feed", r.status, r.residence_code, _aware(r.changed_at))
               for r in session.scalars(feed.order_by(CardStatus.changed_at).limit(limit))]
    for stop in session.scalars(stopped.order_by(CardStop.id).limit(limit)):
        if _aware(stop.stopped_at) >= since:
            changes.append(Change(stop.card_identifier, "stopped", "stopped", "", _aware(stop.stopped_at)))
        if stop.cancelled_at is not None and _aware(stop.cancelled_at) >= since:
            changes.append(Change(stop.card_identifier, "stop_cancelled", "", "", _aware(stop.cancelled_at)))
    return sorted(changes, key=lambda c: c.at)[:limit]


def feed_state(session: Session, max_age_hours: int, *, now: datetime | None = None) -> FeedState:
    """The last import and whether it is older than ``max_age_hours`` (never imported: stale)."""
    last = session.scalars(select(StatusBatch).order_by(StatusBatch.imported_at.desc())).first()
    if last is None:
        return FeedState(None, "", stale=True)
    at = _aware(last.imported_at)
    return FeedState(at, last.batch_id, stale=(now or utcnow()) - at > timedelta(hours=max_age_hours))


def recent_batches(session: Session, limit: int = 20) -> list[StatusBatch]:
    """The latest imported batches, newest first."""
    return list(session.scalars(select(StatusBatch).order_by(StatusBatch.imported_at.desc()).limit(limit)))


def stops(session: Session, tenant_code: str | None) -> list[CardStop]:
    """The 即時停止 in force, of one tenant or (``None``) all."""
    query = select(CardStop).where(CardStop.cancelled_at.is_(None)).order_by(CardStop.id.desc())
    if tenant_code is not None:
        query = query.where(CardStop.tenant_code == tenant_code)
    return list(session.scalars(query))


# --- 即時停止 -------------------------------------------------------------------------------------------------


def _reason(raw: str) -> str:
    reason = (raw or "").strip()
    if not reason:
        raise InvalidInput(_("理由を入力してください。"))
    if len(reason) > 200 or any(ord(c) < 32 for c in reason):
        raise InvalidInput(_("理由を200文字以内で入力してください。"))
    if is_my_number(reason):
        raise InvalidInput(_("個人番号は登録できません（%(label)s）。", label=_("理由")))
    return reason


def check_stop(session: Session, card_identifier: str, reason: str) -> str:
    """Whether :func:`stop` would stop the card (its confirmation asks first): the cleaned reason, or the refusal."""
    reason = _reason(reason)
    if active_stop(session, card_identifier) is not None:
        raise Conflict(_("このカードは既に即時停止されています。"))
    return reason


def stop(session: Session, card_identifier: str, reason: str, *, actor: str, tenant_code: str) -> CardStop:
    """即時停止 of the card (flushed and logged; the caller commits): the very next card operation is refused."""
    reason = check_stop(session, card_identifier, reason)
    row = CardStop(card_identifier=card_identifier, tenant_code=tenant_code, reason=reason, stopped_at=utcnow(),
                   stopped_by=actor[:200])
    session.add(row)
    session.flush()
    oplog.record(session, tenant_code=tenant_code, actor=actor, action=oplog.Action.CARD_STOPPED,
                 target=f"card:{card_identifier}", detail={"stop": row.id, "reason": reason})
    return row


def check_cancel(session: Session, card_identifier: str, reason: str, *, tenant_code: str,
                 any_tenant: bool = False) -> tuple[str, CardStop]:
    """Whether :func:`cancel_stop` would lift a stop (its confirmation asks first): the cleaned reason and the stop."""
    reason = _reason(reason)
    row = active_stop(session, card_identifier)
    if row is None or not (any_tenant or row.tenant_code == tenant_code):
        raise Conflict(_("このカードに解除できる即時停止はありません。"))
    return reason, row


def cancel_stop(session: Session, card_identifier: str, reason: str, *, actor: str, tenant_code: str,
                any_tenant: bool = False) -> CardStop:
    """Lift the card's 即時停止 (only its own tenant's, unless ``any_tenant``); logged, the caller commits."""
    reason, row = check_cancel(session, card_identifier, reason, tenant_code=tenant_code, any_tenant=any_tenant)
    row.cancelled_at, row.cancelled_by, row.cancel_reason = utcnow(), actor[:200], reason
    oplog.record(session, tenant_code=tenant_code, actor=actor, action=oplog.Action.CARD_STOP_CANCELLED,
                 target=f"card:{card_identifier}", detail={"stop": row.id, "reason": reason})
    return row


# --- 転出 ------------------------------------------------------------------------------------------------------


def regional_aps_on(session: Session, aids: Iterable[str]) -> list[CardAp]:
    """The registered regional-area APs among ``aids`` (what a move deletes)."""
    return list(session.scalars(select(CardAp).where(CardAp.area == "regional", CardAp.aid.in_(list(aids)))))


def settle_move(session: Session, card_identifier: str, deleted: list[CardAp], *, actor: str) -> int:
    """After a move's regional APs were deleted from the card: mark their installation rows deleted, whichever
    municipality loaded them (the one deliberate cross-tenant write: the card, not a tenant, moved), and clear
    the card's pending purge. The caller logs and commits. Returns the rows marked."""
    marked = 0
    if deleted:
        result = session.execute(update(Installation).where(
            Installation.card_identifier == card_identifier,
            Installation.card_ap_id.in_([ap.id for ap in deleted]),
            Installation.state.in_([InstallState.INSTALLED, InstallState.PENDING]))
            .values(state=InstallState.DELETED, deleted_at=utcnow(), deleted_by=actor[:128],
                    detail="moved: regional AP deleted at next contact"))
        marked = int(getattr(result, "rowcount", 0) or 0)
    session.execute(update(CardStatus).where(CardStatus.card_identifier == card_identifier)
                    .values(regional_purge=False))
    return marked


def count_rows(session: Session) -> int:
    """Cards the feed knows."""
    return int(session.scalar(select(func.count()).select_from(CardStatus)) or 0)


def diagnosis_view(scope: Any, card_identifier: str) -> dict[str, Any] | None:
    """What カード障害切り分け shows of the feed for one card (the diagnosis's status-feed slot): the card's
    status (a 即時停止 in force shows as ``stopped``), as of when, and whether the feed itself is stale."""
    from zoneinfo import ZoneInfo

    from flask import current_app

    session = scope.session
    view = status_of(session, card_identifier, viewer=scope.viewer)
    feed = feed_state(session, int(current_app.config["STATUS_FEED_MAX_AGE_HOURS"]))
    status = "stopped" if view.stop is not None else (view.feed_status.value if view.feed_status else "")
    as_of = view.occurred_at.astimezone(ZoneInfo("Asia/Tokyo")).date().isoformat() if view.occurred_at else ""
    return {"status": status, "as_of": as_of, "stale": feed.stale}
