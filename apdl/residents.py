"""利用者登録: card holders and the items each tenant defines (services; callers commit).

The 個人番号 and the 住民票コード are never asked for; a 12-digit value that passes the 個人番号 check
digit is refused in any free-text or tenant-defined field.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import date

from flask_babel import gettext as _
from sqlalchemy import func, select

from apdl import oplog
from apdl.db import utcnow
from apdl.errors import Conflict, InvalidInput
from apdl.models import CustomField, Resident
from apdl.tenancy import Operator, TenantScope

MAX_CUSTOM_FIELDS = 20
CARD_STATUSES = ("active", "suspended", "abolished")  # 運用中 / 一時停止 / 廃止
GENDERS = ("male", "female", "other")
ERAS = {"1": 1868, "2": 1912, "3": 1926, "4": 1989, "5": 2019}  # 明治 大正 昭和 平成 令和: first year
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


def parse_birth_date(raw: str) -> date:
    """``YYYY-MM-DD`` or the era-code form ``EYYMMDD`` (e.g. 3610602 = 昭和61年6月2日)."""
    raw = raw.strip()
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw):
            return date.fromisoformat(raw)
        if re.fullmatch(r"[1-5][0-9]{6}", raw):
            return date(ERAS[raw[0]] + int(raw[1:3]) - 1, int(raw[3:5]), int(raw[5:7]))
    except ValueError:
        pass
    raise InvalidInput(_("生年月日は YYYY-MM-DD または元号コード形式（例 3610602）で入力してください。"))


def _field(form: Mapping[str, str], name: str, label: str, *, max_length: int, required: bool = True) -> str:
    value = (form.get(name) or "").strip()
    if required and not value:
        raise InvalidInput(_("%(label)sを入力してください。", label=label))
    if len(value) > max_length or any(unicodedata.category(c) == "Cc" for c in value):
        raise InvalidInput(_("%(label)sは%(max)d文字以内で入力してください。", label=label, max=max_length))
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


def register(scope: TenantScope, form: Mapping[str, str], *, operator: Operator) -> Resident:
    """Register a 利用者 from the form (the holder's request to load APs is recorded with operator and time)."""
    card_status = (form.get("card_status") or "").strip()
    if card_status not in CARD_STATUSES:
        raise InvalidInput(_("カード運用状態を選択してください。"))
    card_identifier = _field(form, "card_identifier", _("カードFID"), max_length=32)
    if not re.fullmatch(r"[0-9]{8,32}", card_identifier):
        raise InvalidInput(_("カードFIDは半角数字で入力してください。"))
    gender = (form.get("gender") or "").strip()
    if gender not in GENDERS:
        raise InvalidInput(_("性別を選択してください。"))
    postal = unicodedata.normalize("NFKC", (form.get("postal_code") or "").strip())
    if not re.fullmatch(r"[0-9]{3}-?[0-9]{4}", postal):
        raise InvalidInput(_("郵便番号は 123-4567 の形で入力してください。"))
    phone = _field(form, "phone", _("連絡先"), max_length=20, required=False)
    if phone and not re.fullmatch(r"[0-9+()-]{1,20}", phone):
        raise InvalidInput(_("連絡先は半角数字とハイフンで入力してください。"))
    email = _field(form, "email", _("メールアドレス"), max_length=254, required=False)
    if email and not EMAIL.match(email):
        raise InvalidInput(_("メールアドレスが正しくありません。"))
    custom: dict[str, str] = {}
    for item in custom_fields(scope):
        value = _field(form, f"custom_{item.id}", item.label, max_length=item.max_length, required=item.required)
        if value:
            custom[str(item.id)] = value
    resident = Resident(
        tenant_code=scope.tenant_code, card_status=card_status, card_identifier=card_identifier,
        kana_family=_kana(_field(form, "kana_family", _("カナ氏名（姓）"), max_length=50), _("カナ氏名（姓）")),
        kana_given=_kana(_field(form, "kana_given", _("カナ氏名（名）"), max_length=50), _("カナ氏名（名）")),
        kanji_family=_zenkaku(_field(form, "kanji_family", _("漢字氏名（姓）"), max_length=50), _("漢字氏名（姓）")),
        kanji_given=_zenkaku(_field(form, "kanji_given", _("漢字氏名（名）"), max_length=50), _("漢字氏名（名）")),
        birth_date=parse_birth_date(form.get("birth_date") or ""), gender=gender,
        postal_code=postal if "-" in postal else f"{postal[:3]}-{postal[3:]}",
        address1=_field(form, "address1", _("住所1"), max_length=200),
        address2=_field(form, "address2", _("住所2"), max_length=200, required=False), phone=phone, email=email,
        occupation=_field(form, "occupation", _("職業"), max_length=100, required=False), custom=custom,
        created_by=operator.actor)
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
