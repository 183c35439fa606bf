"""利用者登録: card holders and the items each tenant defines (services; callers commit).

The 個人番号 and the 住民票コード are never asked for; a 12-digit value that passes the 個人番号 check
digit is refused in any free-text or tenant-defined field.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from sqlalchemy import func, select

from apdl import oplog, validation
from apdl.db import utcnow
from apdl.errors import Conflict, InvalidInput
from apdl.models import CustomField, Resident
from apdl.tenancy import Operator, TenantScope

MAX_CUSTOM_FIELDS = 20
CARD_STATUSES = ("active", "suspended", "abolished")  # 運用中 / 一時停止 / 廃止
GENDERS = ("male", "female", "other")
LOCAL_TZ = ZoneInfo("Asia/Tokyo")


@dataclass(frozen=True)
class Era:
    """One 元号 of the era-code form: its first and last day (Gregorian) and its last year."""

    name: Callable[[], str]
    start: date
    end: date | None
    last_year: int | None


ERAS = {  # the era digit of the seed's 生年月日 form
    "1": Era(lambda: _("明治"), date(1868, 1, 25), date(1912, 7, 29), 45),
    "2": Era(lambda: _("大正"), date(1912, 7, 30), date(1926, 12, 24), 15),
    "3": Era(lambda: _("昭和"), date(1926, 12, 25), date(1989, 1, 7), 64),
    "4": Era(lambda: _("平成"), date(1989, 1, 8), date(2019, 4, 30), 31),
    "5": Era(lambda: _("令和"), date(2019, 5, 1), None, None),
}
KATAKANA = re.compile(r"^[ァ-ヶー　]+$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,}$")


def is_my_number(text: str) -> bool:
    """True when ``text`` holds a 12-digit run whose last digit is a valid 個人番号 check digit."""
    for match in re.finditer(r"(?<![0-9])[0-9]{12}(?![0-9])", unicodedata.normalize("NFKC", text)):
        digits = match.group()
        body = digits[:11][::-1]  # P1..P11 from the right
        total = sum(int(p) * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(body, start=1))
        remainder = total % 11
        if (0 if remainder <= 1 else 11 - remainder) == int(digits[11]):
            return True
    return False


def _today() -> date:
    return datetime.now(LOCAL_TZ).date()


def parse_birth_date(raw: str, *, today: date | None = None) -> date:
    """``YYYY-MM-DD`` or the era-code form ``EYYMMDD`` (e.g. 3610602 = 昭和61年6月2日), within the era and not
    in the future (``today`` in Japan unless given)."""
    raw = unicodedata.normalize("NFKC", raw).strip()  # full-width digits from a Japanese input method
    today = today or _today()
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw):
        try:
            born = date.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(_("生年月日に存在しない日付が指定されています。")) from None
        if born < ERAS["1"].start:
            raise InvalidInput(_("生年月日は%(start)s（明治元年）以降の日付で入力してください。",
                                 start=ERAS["1"].start.isoformat()))
    elif re.fullmatch(r"[1-5][0-9]{6}", raw):
        era = ERAS[raw[0]]
        year, name = int(raw[1:3]), era.name()
        if year == 0:
            raise InvalidInput(_("%(era)s00年はありません。年は01から入力してください。", era=name))
        if era.last_year and year > era.last_year:
            raise InvalidInput(_("%(era)sは%(max)d年までです。", era=name, max=era.last_year))
        try:
            born = date(era.start.year + year - 1, int(raw[3:5]), int(raw[5:7]))
        except ValueError:
            raise InvalidInput(_("生年月日に存在しない日付が指定されています。")) from None
        if born < era.start or (era.end is not None and born > era.end):
            if era.end is None:
                raise InvalidInput(_("%(date)sは%(era)sの期間外です（%(era)sは%(start)sから）。",
                                     date=born.isoformat(), era=name, start=era.start.isoformat()))
            raise InvalidInput(_("%(date)sは%(era)sの期間外です（%(era)sは%(start)s〜%(end)s）。",
                                 date=born.isoformat(), era=name, start=era.start.isoformat(),
                                 end=era.end.isoformat()))
    else:
        raise InvalidInput(_("生年月日は YYYY-MM-DD または元号コード形式（例 3610602）で入力してください。"))
    if born > today:
        raise InvalidInput(_("生年月日が未来の日付です。"))
    return born


def _field(form: Mapping[str, str], name: str, label: str, *, max_length: int, required: bool = True) -> str:
    value = validation.text(form, name, label, max_length=max_length, required=required)
    if is_my_number(value):
        raise InvalidInput(_("個人番号は登録できません（%(label)s）。", label=label))
    return value


def _zenkaku(value: str, label: str) -> str:
    if any(unicodedata.east_asian_width(c) not in ("F", "W") for c in value):
        raise InvalidInput(_("%(label)sは全角で入力してください。", label=label))
    return value


def _kana(value: str, label: str) -> str:
    if not KATAKANA.match(value):
        raise InvalidInput(_("%(label)sは全角カタカナで入力してください。", label=label))
    return value


def custom_fields(scope: TenantScope) -> list[CustomField]:
    """The tenant's own items, in order of creation."""
    return list(scope.session.scalars(scope.select(CustomField).order_by(CustomField.id)))


def add_custom_field(scope: TenantScope, form: Mapping[str, str], *, operator: Operator) -> CustomField:
    """One more tenant-defined item; the 21st is refused."""
    label = _field(form, "label", _("項目名"), max_length=100)
    raw_length = (form.get("max_length") or "100").strip()
    if not raw_length.isascii() or not raw_length.isdigit() or not 1 <= int(raw_length) <= 1000:
        raise InvalidInput(_("最大文字数は1〜1000で入力してください。"))
    count = scope.session.scalar(select(func.count()).select_from(scope.select(CustomField).subquery()))
    if (count or 0) >= MAX_CUSTOM_FIELDS:
        raise InvalidInput(_("独自項目は%(max)d個までです。", max=MAX_CUSTOM_FIELDS))
    if any(f.label == label for f in custom_fields(scope)):
        raise Conflict(_("同じ名前の項目があります。"))
    field = CustomField(tenant_code=scope.tenant_code, label=label, max_length=int(raw_length),
                        required=form.get("required") == "on")
    scope.session.add(field)
    scope.session.flush()
    oplog.record(scope.session, tenant_code=scope.tenant_code, actor=operator.actor,
                 action=oplog.Action.CUSTOM_FIELD_ADDED, target=f"field:{field.id}", detail={"label": label})
    return field


SEARCH_LIMIT = 200


def search(scope: TenantScope, card: str = "", *, limit: int = SEARCH_LIMIT) -> list[Resident]:
    """The tenant's 利用者, newest first: the one with カードFID ``card`` when it is all digits, else the latest
    ``limit`` (indexes: ``(tenant_code, card_identifier)`` unique, ``(tenant_code, id)``)."""
    query = scope.select(Resident).order_by(Resident.id.desc())
    card = card.strip()[:32]
    if card.isascii() and card.isdigit():
        query = query.where(Resident.card_identifier == card)
    return list(scope.session.scalars(query.limit(limit)))


EDITABLE = ("kana_family", "kana_given", "kanji_family", "kanji_given", "birth_date", "gender", "postal_code",
            "address1", "address2", "phone", "email", "occupation", "custom")


def _details(scope: TenantScope, form: Mapping[str, str]) -> dict[str, Any]:
    """The 利用者 items of the form (everything but the カードFID, the カード運用状態 and the holder's request)."""
    gender = (form.get("gender") or "").strip()
    if gender not in GENDERS:
        raise InvalidInput(_("性別を選択してください。"))
    postal = unicodedata.normalize("NFKC", (form.get("postal_code") or "").strip())
    if not re.fullmatch(r"[0-9]{3}-?[0-9]{4}", postal):
        raise InvalidInput(_("郵便番号は 123-4567 の形で入力してください。"))
    phone = validation.phone(form, "phone", _("連絡先"))
    if is_my_number(phone):
        raise InvalidInput(_("個人番号は登録できません（%(label)s）。", label=_("連絡先")))
    email = _field(form, "email", _("メールアドレス"), max_length=254, required=False)
    if email and not EMAIL.match(email):
        raise InvalidInput(_("メールアドレスが正しくありません。"))
    custom: dict[str, str] = {}
    for item in custom_fields(scope):
        value = _field(form, f"custom_{item.id}", item.label, max_length=item.max_length, required=item.required)
        if value:
            custom[str(item.id)] = value
    return {
        "kana_family": _kana(_field(form, "kana_family", _("カナ氏名（姓）"), max_length=50), _("カナ氏名（姓）")),
        "kana_given": _kana(_field(form, "kana_given", _("カナ氏名（名）"), max_length=50), _("カナ氏名（名）")),
        "kanji_family": _zenkaku(_field(form, "kanji_family", _("漢字氏名（姓）"), max_length=50), _("漢字氏名（姓）")),
        "kanji_given": _zenkaku(_field(form, "kanji_given", _("漢字氏名（名）"), max_length=50), _("漢字氏名（名）")),
        "birth_date": parse_birth_date(form.get("birth_date") or ""), "gender": gender,
        "postal_code": postal if "-" in postal else f"{postal[:3]}-{postal[3:]}",
        "address1": _field(form, "address1", _("住所1"), max_length=200),
        "address2": _field(form, "address2", _("住所2"), max_length=200, required=False), "phone": phone,
        "email": email, "occupation": _field(form, "occupation", _("職業"), max_length=100, required=False),
        "custom": custom}


def register(scope: TenantScope, form: Mapping[str, str], *, operator: Operator) -> Resident:
    """Register a 利用者 from the form (the holder's request to load APs is recorded with operator and time)."""
    card_status = (form.get("card_status") or "").strip()
    if card_status not in CARD_STATUSES:
        raise InvalidInput(_("カード運用状態を選択してください。"))
    card_identifier = _field(form, "card_identifier", _("カードFID"), max_length=32)
    if not re.fullmatch(r"[0-9]{8,32}", card_identifier):
        raise InvalidInput(_("カードFIDは8〜32桁の数字で入力してください。"))
    resident = Resident(tenant_code=scope.tenant_code, card_status=card_status, card_identifier=card_identifier,
                        created_by=operator.actor, **_details(scope, form))
    if form.get("holder_request") == "on":
        resident.holder_request_at, resident.holder_request_by = utcnow(), operator.actor
    if scope.session.scalars(scope.select(Resident).where(Resident.card_identifier == card_identifier)).first():
        raise Conflict(_("このカードFIDの利用者は登録済みです。"))
    scope.session.add(resident)
    scope.session.flush()
    oplog.record(scope.session, tenant_code=scope.tenant_code, actor=operator.actor,
                 action=oplog.Action.RESIDENT_REGISTERED, target=f"resident:{resident.id}",
                 detail={"card": card_identifier, "holder_request": resident.holder_request_at is not None})
    return resident


def update(scope: TenantScope, resident: Resident, form: Mapping[str, str], *, operator: Operator) -> list[str]:
    """Change a 利用者's items and the holder's request (never the カードFID nor the カード運用状態).

    Withdrawing a recorded holder request needs ``confirm_withdraw=yes``. The operation log names the
    changed items, not their values. Returns the changed item names.
    """
    details = _details(scope, form)
    changed = [name for name in EDITABLE if getattr(resident, name) != details[name]]
    requested = form.get("holder_request") == "on"
    holder: str | None = None
    if requested and resident.holder_request_at is None:
        holder = "confirmed"
    elif not requested and resident.holder_request_at is not None:
        if form.get("confirm_withdraw") != "yes":
            raise InvalidInput(_("本人の申出の確認を取り消すには、取消の確認にチェックを入れてください。"))
        holder = "withdrawn"
    if not changed and holder is None:
        return []
    for name in changed:
        setattr(resident, name, details[name])
    if holder == "confirmed":
        resident.holder_request_at, resident.holder_request_by = utcnow(), operator.actor
    elif holder == "withdrawn":
        resident.holder_request_at, resident.holder_request_by = None, ""
    detail: dict[str, Any] = {"card": resident.card_identifier, "changed": changed}
    if holder is not None:
        detail["holder_request"] = holder
    oplog.record(scope.session, tenant_code=scope.tenant_code, actor=operator.actor,
                 action=oplog.Action.RESIDENT_UPDATED, target=f"resident:{resident.id}", detail=detail)
    return changed + (["holder_request"] if holder else [])
