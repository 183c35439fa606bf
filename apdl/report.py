"""報告: loads and deletions of card APs per AP and per 利用機関 over a year, counted from the operation log.

Seed 002: the number of card APs loaded (and so on) is reported to the minister once a year. The year is the
Japanese fiscal year (年度, April to March) by default, or the calendar year; both are taken in Japan time.
A load is an ``ap_installed`` entry, a deletion an ``ap_deleted`` entry, so the totals are the operation log's
counts by construction. The admin tenant reports every 利用機関; any other tenant only itself.
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from flask_babel import lazy_gettext
from sqlalchemy import func, select

from apdl.errors import InvalidInput
from apdl.models import CardAp, OperatorSession
from apdl.oplog import Action
from apdl.tenancy import TenantScope

JST = timezone(timedelta(hours=9), "JST")
FIRST_YEAR, LAST_YEAR = 2000, 2100
CSV_HEADER = ("期間", "利用機関コード", "利用機関名", "AID", "カードAP名", "搭載件数", "削除件数")
ENCODINGS = {"utf-8": ("utf-8-sig", "UTF-8"), "cp932": ("cp932", "Shift_JIS")}


class Period(enum.StrEnum):
    """How a year is counted."""

    FISCAL = "fiscal"  # 年度: 1 April .. 31 March
    CALENDAR = "calendar"  # 暦年: 1 January .. 31 December


@dataclass(frozen=True)
class Row:
    """Counts of one AP loaded and deleted by one 利用機関."""

    tenant_code: str
    tenant_name: str
    aid: str
    ap_name: str
    loads: int
    deletions: int


@dataclass(frozen=True)
class Report:
    """One year's counts."""

    year: int
    period: Period
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    rows: list[Row]

    @property
    def label(self) -> str:
        """``2026年度`` or ``2026年`` (the CSV's first column, in Japanese as submitted)."""
        return f"{self.year}年度" if self.period is Period.FISCAL else f"{self.year}年"

    @property
    def screen_label(self) -> str:
        """The period on screen, in the viewer's language."""
        if self.period is Period.FISCAL:
            return str(lazy_gettext("%(year)s年度", year=self.year))
        return str(lazy_gettext("%(year)s年", year=self.year))

    @property
    def loads(self) -> int:
        return sum(r.loads for r in self.rows)

    @property
    def deletions(self) -> int:
        return sum(r.deletions for r in self.rows)

    def by_tenant(self) -> dict[str, tuple[int, int]]:
        """(loads, deletions) per 利用機関 code."""
        return self._totals(lambda r: r.tenant_code)

    def by_ap(self) -> dict[str, tuple[int, int]]:
        """(loads, deletions) per AID."""
        return self._totals(lambda r: r.aid)

    def _totals(self, key: Callable[[Row], str]) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for r in self.rows:
            loads, deletions = out.get(key(r), (0, 0))
            out[key(r)] = (loads + r.loads, deletions + r.deletions)
        return out


def parse_request(year: str, period: str, *, today: datetime | None = None) -> tuple[int, Period]:
    """The year and period from query parameters (empty year: the current one); InvalidInput when bad."""
    try:
        chosen = Period(period or Period.FISCAL.value)
    except ValueError:
        raise InvalidInput(lazy_gettext("集計期間の指定が正しくありません。")) from None
    if not year:
        now = (today or datetime.now(UTC)).astimezone(JST)
        return (now.year if chosen is Period.CALENDAR or now.month >= 4 else now.year - 1), chosen
    if not (year.isascii() and year.isdigit() and len(year) == 4 and FIRST_YEAR <= int(year) <= LAST_YEAR):
        raise InvalidInput(lazy_gettext("年は西暦4桁（2000〜2100）で指定してください。"))
    return int(year), chosen


def bounds(year: int, period: Period) -> tuple[datetime, datetime]:
    """[start, end) of the year in UTC, the year's boundaries taken at midnight Japan time."""
    month = 4 if period is Period.FISCAL else 1
    start = datetime(year, month, 1, tzinfo=JST)
    end = datetime(year + 1, month, 1, tzinfo=JST)
    return start.astimezone(UTC), end.astimezone(UTC)


def yearly(scope: TenantScope, year: int, period: Period = Period.FISCAL) -> Report:
    """Loads and deletions per 利用機関 and AP in the year, from the operation log."""
    start, end = bounds(year, period)
    db = scope.session
    log = scope.operation_log().subquery()
    counted = db.execute(
        select(log.c.tenant_code, log.c.target, log.c.action, func.count())
        .where(log.c.action.in_((Action.AP_INSTALLED.value, Action.AP_DELETED.value)),
               log.c.at >= start, log.c.at < end)
        .group_by(log.c.tenant_code, log.c.target, log.c.action)).all()
    counts: dict[tuple[str, str], list[int]] = {}
    for tenant_code, target, action, n in counted:
        key = (tenant_code, str(target).removeprefix("ap:"))
        counts.setdefault(key, [0, 0])[0 if action == Action.AP_INSTALLED.value else 1] += int(n)
    names: dict[str, str] = {aid: name for aid, name in db.execute(select(CardAp.aid, CardAp.name))}
    tenant_names = _tenant_names(scope, {t for t, _aid in counts})
    rows = [Row(t, tenant_names.get(t, ""), aid, names.get(aid, ""), loads, deletions)
            for (t, aid), (loads, deletions) in sorted(counts.items())]
    return Report(year, period, start, end, rows)


def _tenant_names(scope: TenantScope, codes: set[str]) -> dict[str, str]:
    """The 利用機関 names opauth last sent for ``codes`` (from the module's sessions)."""
    if not codes:
        return {}
    rows = scope.session.execute(select(OperatorSession.tenant_code, OperatorSession.tenant_name)
                                 .where(OperatorSession.tenant_code.in_(codes))
                                 .order_by(OperatorSession.created_at)).all()
    return {code: name for code, name in rows}  # the newest session's name wins


def encoding_name(raw: str) -> str:
    """A requested CSV encoding's name as ENCODINGS spells it (names are case-insensitive)."""
    return raw.strip().lower()


def to_csv(report: Report, encoding: str) -> tuple[bytes, str]:
    """The report as CSV (header, one line per 利用機関 and AP, a total line) and its HTTP charset.

    ``utf-8`` is written with a byte order mark (spreadsheet programs then read it as UTF-8); ``cp932``
    replaces the few characters CP932 lacks with ``?``. The name is case-insensitive (``CP932``, ``UTF-8``).
    """
    encoding = encoding_name(encoding)
    if encoding not in ENCODINGS:
        raise InvalidInput(lazy_gettext("文字コードは utf-8 または cp932 を指定してください。"))
    codec, charset = ENCODINGS[encoding]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for r in report.rows:
        writer.writerow((report.label, r.tenant_code, _inert(r.tenant_name), r.aid, _inert(r.ap_name), r.loads,
                         r.deletions))
    writer.writerow((report.label, "合計", "", "", "", report.loads, report.deletions))
    return out.getvalue().encode(codec, errors="replace"), charset


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(text: str) -> str:
    """A name as a spreadsheet shows it, never runs it: a leading = + - @ (or tab, CR) would make Excel read the
    cell as a formula (CSV injection), so such a cell starts with an apostrophe (OWASP's advice). AP names are
    typed by the system administrator, 利用機関 names come from opauth; the file goes to the ministry."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def filename(report: Report) -> str:
    """The download's file name."""
    return f"apdl-report-{'FY' if report.period is Period.FISCAL else 'CY'}{report.year}.csv"

