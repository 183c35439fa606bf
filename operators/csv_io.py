"""一括登録 (CSV import), オペレータ情報出力 (CSV export) and 操作者情報の移行 (export → import elsewhere).

The CSV has a header row of Japanese column names (English keys are accepted
too). Files may be UTF-8 with or without a BOM, or CP932 (Shift_JIS) as Excel
saves them. An import is all or nothing: every row is validated first and the
first bad row is reported with its line number; only then are rows written,
in chunks, inside the caller's one transaction (progress is reported per chunk).
Passwords are never exported; an imported row without a password gets none
(set one with パスワード一括変更, or use biometric login).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from flask_babel import lazy_gettext
from flask_babel.speaklater import LazyString
from sqlalchemy import insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import Conflict, InvalidInput
from operators.login.passwords import check_policy, hash_password
from operators.models import InBusinessId, Operator, Role, Tenant, operator_business_system
from operators.operator_data import AUTH_METHOD_LABELS, GENDER_LABELS, IN_BUSINESS_ID, OperatorData
from operators.tenancy import Scope, ensure_can_manage_operators, joint_use_systems, operators_of

# (key, header) in file order; the template and the export use these headers.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("operator_id", "オペレータID"),
    ("name", "氏名・組織名"),
    ("department", "部門"),
    ("gender", "性別"),
    ("phone", "連絡先電話"),
    ("extension", "内線"),
    ("email", "E-Mail"),
    ("info", "情報"),
    ("extra_info", "付帯情報"),
    ("auth_method", "認証方式"),
    ("business_ids", "許可業務"),
    ("in_business_ids", "業務内ID"),
    ("password", "パスワード"),
)
EXPORT_COLUMNS = tuple(c for c in COLUMNS if c[0] != "password")
_HEADER_TO_KEY = {**{h: k for k, h in COLUMNS}, **{k: k for k, _ in COLUMNS}}
MAX_ROWS = 20_000
MAX_CSV_BYTES = 16 * 1024 * 1024  # 10,000 full rows fit easily; larger than the general upload limit
CHUNK = 500


class CsvRowError(InvalidInput):
    """A row of an import is wrong; nothing of the import was written."""

    code = "invalid_csv_row"

    def __init__(self, line: int, reason: str | LazyString) -> None:
        super().__init__(lazy_gettext("%(line)s 行目: %(reason)s", line=line, reason=reason))
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class ImportRow:
    """One validated CSV row: the operator, their in-business IDs and optional password."""

    line: int
    data: OperatorData
    in_business_ids: dict[str, str]  # 業務ID → 業務内ID
    password: str


@dataclass(frozen=True)
class ImportProgress:
    """Rows written so far of the total; ``finished`` after the audit entry."""

    done: int
    total: int
    finished: bool = False


def decode(raw: bytes) -> str:
    """Text of an uploaded CSV: UTF-8 (BOM optional) or CP932/Shift_JIS."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp932")
    except UnicodeDecodeError:
        raise InvalidInput(lazy_gettext("CSV ファイルが UTF-8 でも Shift_JIS (CP932) でもありません。")) from None


def parse_in_business_ids(raw: str, business_ids: Sequence[str], *, drop_unknown: bool = False) -> dict[str, str]:
    """``U001`` (one ID for every permitted system) or ``05=U001;07=U9`` (per system).

    ``drop_unknown`` ignores entries for systems not among ``business_ids`` (migration).
    """
    raw = raw.strip()
    if not raw:
        return {}
    if "=" not in raw:
        if not IN_BUSINESS_ID.match(raw):
            raise InvalidInput(lazy_gettext("業務内ID は半角英数字と _ . @ - の1〜64文字で指定してください。"))
        return {b: raw for b in business_ids}
    result: dict[str, str] = {}
    for part in (p for p in raw.replace(",", ";").split(";") if p.strip()):
        business_id, _, value = (s.strip() for s in part.partition("="))
        if business_id not in business_ids:
            if drop_unknown:
                continue
            raise InvalidInput(lazy_gettext("業務内ID の業務ID %(id)s は許可業務にありません。", id=business_id[:10]))
        if not IN_BUSINESS_ID.match(value):
            raise InvalidInput(lazy_gettext("業務内ID は半角英数字と _ . @ - の1〜64文字で指定してください。"))
        result[business_id] = value
    return result


def read_rows(text: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {key: value}) for each data row; the header maps columns to keys."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvRowError(1, lazy_gettext("ファイルが空です。")) from None
    except csv.Error as exc:
        raise CsvRowError(1, lazy_gettext("CSV を読み取れません（%(error)s）。", error=str(exc))) from None
    keys = []
    for name in header:
        key = _HEADER_TO_KEY.get(name.strip())
        if key is None:
            raise CsvRowError(1, lazy_gettext("不明な列 %(name)s があります。テンプレートの見出し行を使ってください。",
                                                  name=name.strip()[:40]))
        keys.append(key)
    if "operator_id" not in keys or "name" not in keys:
        raise CsvRowError(1, lazy_gettext("見出し行には少なくとも オペレータID と 氏名・組織名 が必要です。"))
    count = 0
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvRowError(line, lazy_gettext("CSV を読み取れません（%(error)s）。", error=str(exc))) from None
        if not any(cell.strip() for cell in row):
            continue
        count += 1
        if count > MAX_ROWS:
            raise CsvRowError(line, lazy_gettext("行数が多すぎます（最大 %(max)s 行）。", max=MAX_ROWS))
        if len(row) != len(keys):
            raise CsvRowError(line, lazy_gettext("列の数が %(found)s です（%(expected)s 列必要です）。", found=len(row),
                                                     expected=len(keys)))
        yield line, dict(zip(keys, row, strict=True))


def validate(session: Session, *, tenant: Tenant, text: str, drop_unpermitted: bool = False) -> list[ImportRow]:
    """Every row checked against the tenant (IDs free, 許可業務 in its joint use); first error raised."""
    allowed = {s.business_id for s in joint_use_systems(session, tenant)}
    seen: dict[str, int] = {}
    rows: list[ImportRow] = []
    for line, values in read_rows(text):
        try:
            data = OperatorData.from_mapping(values)
            if drop_unpermitted:
                data = OperatorData.from_mapping(
                    dict(values, business_ids=[b for b in data.business_ids if b in allowed]))
            not_allowed = [b for b in data.business_ids if b not in allowed]
            if not_allowed:
                raise InvalidInput(lazy_gettext(
                    "許可業務: %(ids)s はこの団体が利用できる業務ではありません（共同利用業務設定）。",
                    ids=", ".join(not_allowed)))
            in_business = parse_in_business_ids(values.get("in_business_ids", ""), data.business_ids,
                                                drop_unknown=drop_unpermitted)
            password = values.get("password", "").strip()
            if password:
                reason = check_policy(password, operator_id=data.operator_id)
                if reason:
                    raise InvalidInput(lazy_gettext("パスワード: %(reason)s", reason=reason))
        except InvalidInput as exc:
            raise CsvRowError(line, exc.message) from None
        if data.operator_id in seen:
            raise CsvRowError(line, lazy_gettext(
                "オペレータID %(id)s は %(other)s 行目にもあります。", id=data.operator_id,
                                                     other=seen[data.operator_id]))
        seen[data.operator_id] = line
        rows.append(ImportRow(line=line, data=data, in_business_ids=in_business, password=password))
    if not rows:
        raise CsvRowError(2, lazy_gettext("ファイルに操作者の行がありません。"))
    taken: set[str] = set()
    ids = list(seen)
    for start in range(0, len(ids), 900):  # stay under SQLite's bound-parameter limit
        taken.update(session.scalars(select(Operator.operator_id).where(
            Operator.tenant_id == tenant.id, Operator.operator_id.in_(ids[start:start + 900]))))
    for row in rows:
        if row.data.operator_id in taken:
            raise CsvRowError(row.line, lazy_gettext("オペレータID %(id)s はこの団体に登録済みです。",
                                                         id=row.data.operator_id))
    return rows


def import_operators(session: Session, *, scope: Scope, tenant: Tenant, rows: Sequence[ImportRow],
                     actor: Actor, source: str = "csv") -> Iterator[ImportProgress]:
    """Write validated rows in chunks, yielding progress; the caller commits once after the last."""
    ensure_can_manage_operators(scope, tenant)
    systems = {s.business_id: s.id for s in joint_use_systems(session, tenant)}
    total = len(rows)
    yield ImportProgress(0, total)
    for start in range(0, total, CHUNK):
        chunk = rows[start:start + CHUNK]
        values = []
        for row in chunk:
            d = row.data
            values.append({
                "tenant_id": tenant.id, "operator_id": d.operator_id, "name": d.name, "role": Role.OPERATOR,
                "department": d.department, "gender": d.gender, "phone": d.phone, "extension": d.extension,
                "email": d.email, "info": d.info, "extra_info": d.extra_info, "auth_method": d.auth_method,
                "password_hash": hash_password(row.password) if row.password else "",
                "must_change_password": True,
            })
        try:
            created = session.execute(insert(Operator).returning(Operator.id, Operator.operator_id), values)
        except IntegrityError:  # someone registered one of these IDs after validation
            raise Conflict(lazy_gettext(
                "このファイルのオペレータIDが処理中に登録されました。もう一度インポートしてください。")) from None
        pks = {operator_id: pk for pk, operator_id in created}
        links = [{"operator_id": pks[r.data.operator_id], "business_system_id": systems[b]}
                 for r in chunk for b in r.data.business_ids]
        if links:
            session.execute(insert(operator_business_system), links)
        mappings = [{"operator_id": pks[r.data.operator_id], "business_system_id": systems[b],
                     "in_business_id": v, "permissions": []}
                    for r in chunk for b, v in r.in_business_ids.items()]
        if mappings:
            session.execute(insert(InBusinessId), mappings)
        yield ImportProgress(min(start + CHUNK, total), total)
    record_event(session, action=AuditAction.OPERATORS_IMPORTED, actor=actor, target=f"tenant:{tenant.code}",
                 detail={"count": total, "source": source,
                         "operator_ids": [r.data.operator_id for r in rows[:100]],
                         "truncated": total > 100})
    yield ImportProgress(total, total, finished=True)


def run_import(session: Session, *, scope: Scope, tenant: Tenant, rows: Sequence[ImportRow], actor: Actor,
               source: str = "csv") -> int:
    """``import_operators`` without progress reporting; returns the number of operators written."""
    progress = list(import_operators(session, scope=scope, tenant=tenant, rows=rows, actor=actor,
                                     source=source))
    return progress[-1].done


# --- template and export ----------------------------------------------------------------------------

def _encode(text: str, encoding: str) -> bytes:
    if encoding == "cp932":
        try:
            return text.encode("cp932")
        except UnicodeEncodeError:
            raise InvalidInput(lazy_gettext(
                "Shift_JIS (CP932) で書けない値があります。UTF-8 で出力してください。")) from None
    return b"\xef\xbb\xbf" + text.encode("utf-8")  # the BOM makes Excel read UTF-8


def template_csv(encoding: str = "utf-8") -> bytes:
    """The import template: header and one example row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([h for _, h in COLUMNS])
    writer.writerow(["OP0601", "山田 太郎", "市民課", "指定なし", "03-1234-5678", "1234", "yamada@example.jp",
                     "", "", "ID・パスワード", "05;07", "05=U0601;07=U0601", ""])
    return _encode(out.getvalue(), encoding)


EXPORT_FILTERS = ("operator_id", "name", "department", "phone", "email", "info", "extra_info")


def export_rows(session: Session, *, scope: Scope, tenant: Tenant,
                filters: Mapping[str, str]) -> list[Operator]:
    """Active operators (role 操作者; not administrative accounts) matching every filter (substring match)."""
    ensure_can_manage_operators(scope, tenant)
    query = operators_of(scope, tenant).where(Operator.revoked_at.is_(None), Operator.role == Role.OPERATOR)
    for key in EXPORT_FILTERS:
        value = (filters.get(key) or "").strip()[:200]
        if value:
            column = getattr(Operator, key)
            query = query.where(or_(column.contains(value, autoescape=True)))
    return list(session.scalars(query.order_by(Operator.operator_id)))


def export_csv(session: Session, *, scope: Scope, tenant: Tenant, filters: Mapping[str, str], actor: Actor,
               encoding: str = "utf-8") -> bytes:
    """オペレータ情報出力: the CSV that 一括登録 reads back (no passwords)."""
    operators = export_rows(session, scope=scope, tenant=tenant, filters=filters)
    ids = [o.id for o in operators]
    mapped: dict[int, list[InBusinessId]] = {}
    for start in range(0, len(ids), 900):
        for m in session.scalars(select(InBusinessId).where(InBusinessId.operator_id.in_(ids[start:start + 900]))):
            mapped.setdefault(m.operator_id, []).append(m)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([h for _, h in EXPORT_COLUMNS])
    for o in operators:
        business_ids = sorted(s.business_id for s in o.permitted_systems)
        in_business = ";".join(sorted(f"{m.business_system.business_id}={m.in_business_id}"
                                      for m in mapped.get(o.id, [])))
        writer.writerow([o.operator_id, o.name, o.department, GENDER_LABELS[o.gender], o.phone, o.extension,
                         o.email, o.info, o.extra_info, AUTH_METHOD_LABELS[o.auth_method], ";".join(business_ids),
                         in_business])
    record_event(session, action=AuditAction.OPERATORS_EXPORTED, actor=actor, target=f"tenant:{tenant.code}",
                 detail={"count": len(operators), "filters": {k: v for k, v in filters.items() if v}})
    return _encode(out.getvalue(), encoding)
