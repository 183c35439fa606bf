"""Validated operator registration input (the fields of seed 001 I.2.1(5) ①).

One parser for the web form, JSON, CSV rows and the CLI, so every entry point
accepts and refuses exactly the same things.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask_babel import lazy_gettext

from kernel.errors import InvalidInput
from operators.models import AuthMethod, Gender, Role

OPERATOR_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
BUSINESS_ID = re.compile(r"^[0-9]{2}$")
IN_BUSINESS_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
PHONE = re.compile(r"^[0-9][0-9-]{0,19}$")
EXTENSION = re.compile(r"^[0-9][0-9-]{0,19}$")
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FORMULA_START = frozenset("=+-@")

LABELS = {
    "operator_id": lazy_gettext("オペレータID"),
    "password": lazy_gettext("パスワード"),
    "name": lazy_gettext("氏名・組織名"),
    "in_business_id": lazy_gettext("業務内ID"),
    "business_ids": lazy_gettext("許可業務"),
    "department": lazy_gettext("部門"),
    "gender": lazy_gettext("性別"),
    "phone": lazy_gettext("連絡先電話"),
    "extension": lazy_gettext("内線"),
    "email": "E-Mail",
    "info": lazy_gettext("情報"),
    "extra_info": lazy_gettext("付帯情報"),
    "auth_method": lazy_gettext("認証方式"),
    "role": lazy_gettext("権限"),
    "administers_business_id": lazy_gettext("管理する業務"),
}
GENDER_LABELS = {Gender.UNSPECIFIED: "指定なし", Gender.MALE: "男性", Gender.FEMALE: "女性"}
AUTH_METHOD_LABELS = {AuthMethod.PASSWORD: "ID・パスワード", AuthMethod.BIOMETRIC: "生体認証"}
ROLE_LABELS = {Role.OPERATOR: "操作者", Role.TENANT_MANAGER: "運用管理部門",
               Role.BUSINESS_ADMIN: "業務システムの管理者", Role.SYSTEM_ADMIN: "システム管理者"}
# The *_LABELS above are also the CSV's words (import accepts them, export writes them): screens show these.
GENDER_NAMES = {Gender.UNSPECIFIED: lazy_gettext("指定なし"), Gender.MALE: lazy_gettext("男性"),
                Gender.FEMALE: lazy_gettext("女性")}
AUTH_METHOD_NAMES = {AuthMethod.PASSWORD: lazy_gettext("ID・パスワード"),
                     AuthMethod.BIOMETRIC: lazy_gettext("生体認証")}
ROLE_NAMES = {Role.OPERATOR: lazy_gettext("操作者"), Role.TENANT_MANAGER: lazy_gettext("運用管理部門"),
              Role.BUSINESS_ADMIN: lazy_gettext("業務システムの管理者"),
              Role.SYSTEM_ADMIN: lazy_gettext("システム管理者")}
_MAX = {"name": 200, "department": 200, "email": 320, "info": 1000, "extra_info": 1000}
TEXT_FIELDS = ("operator_id", "name", "department", "phone", "extension", "email", "info", "extra_info")


def _enum(cls: type[Gender] | type[AuthMethod] | type[Role], labels: Mapping[Any, str], raw: str,
          label: str) -> object:
    raw = raw.strip()
    for member, text in labels.items():
        if raw == text:
            return member
    try:
        return cls(raw)
    except ValueError:
        allowed = "、".join(labels.values()) + " (" + ", ".join(m.value for m in cls) + ")"
        raise InvalidInput(lazy_gettext("%(field)s は次のいずれかです: %(allowed)s", field=label,
                                        allowed=allowed)) from None


def parse_business_ids(raw: object) -> tuple[str, ...]:
    """業務IDs from a list or from text separated by ';', ',' or spaces; sorted, duplicates removed."""
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        items = [p for p in re.split(r"[;,\s]+", raw.strip()) if p]
    elif isinstance(raw, (list, tuple)) and all(isinstance(p, str) for p in raw):
        items = [p.strip() for p in raw]
    else:
        raise InvalidInput(lazy_gettext("許可業務 (business_ids) は2桁の業務IDのリストで指定してください。"))
    for item in items:
        if not BUSINESS_ID.match(item):
            raise InvalidInput(lazy_gettext(
                "許可業務 (business_ids): %(item)s は2桁の業務IDではありません。", item=item[:10]))
    return tuple(sorted(set(items)))


@dataclass(frozen=True)
class OperatorData:
    """Everything about an operator except the password (which is only ever hashed)."""

    operator_id: str
    name: str
    department: str = ""
    gender: Gender = Gender.UNSPECIFIED
    phone: str = ""
    extension: str = ""
    email: str = ""
    info: str = ""
    extra_info: str = ""
    auth_method: AuthMethod = AuthMethod.PASSWORD
    business_ids: tuple[str, ...] = ()
    in_business_id: str = ""  # applied to every permitted business system (the seed's single field)
    role: Role = Role.OPERATOR
    administers_business_id: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, operator_id: str | None = None) -> OperatorData:
        """Validate form, JSON or CSV input; ``InvalidInput`` names the first bad field."""
        values: dict[str, str] = {}
        for name in (*TEXT_FIELDS, "gender", "auth_method", "in_business_id", "role", "administers_business_id"):
            raw = data.get(name, "")
            if raw is None:
                raw = ""
            if not isinstance(raw, str):
                raise InvalidInput(lazy_gettext(
                    "%(label)s (%(field)s) は文字列で指定してください。", label=LABELS[name],
                                                field=name))
            values[name] = raw.strip()
        if operator_id is not None:
            values["operator_id"] = operator_id
        for name, value in values.items():
            if _CONTROL.search(value):
                raise InvalidInput(lazy_gettext("%(label)s (%(field)s) に制御文字は使えません。", label=LABELS[name],
                                                field=name))
        if not OPERATOR_ID.match(values["operator_id"]):
            raise InvalidInput(lazy_gettext("オペレータID (operator_id) は半角英数字の1〜64文字で指定してください。"))
        if not values["name"]:
            raise InvalidInput(lazy_gettext("氏名・組織名 (name) は必須です。"))
        for name, limit in _MAX.items():
            if len(values[name]) > limit:
                raise InvalidInput(lazy_gettext("%(label)s (%(field)s) は%(limit)s文字以内で指定してください。",
                                                label=LABELS[name], field=name, limit=limit))
            # Exported CSVs are opened in Excel: a leading = + - @ would be run as a formula there.
            if values[name][:1] in _FORMULA_START:
                raise InvalidInput(lazy_gettext("%(label)s (%(field)s) の先頭に = + - @ は使えません。",
                                                label=LABELS[name], field=name))
        if values["phone"] and not PHONE.match(values["phone"]):
            raise InvalidInput(lazy_gettext(
                "連絡先電話 (phone) に使えるのは半角数字とハイフンだけです（20文字以内）。"))
        if values["extension"] and not EXTENSION.match(values["extension"]):
            raise InvalidInput(lazy_gettext("内線 (extension) に使えるのは半角数字とハイフンだけです（20文字以内）。"))
        if values["email"] and not EMAIL.match(values["email"]):
            raise InvalidInput(lazy_gettext("E-Mail (email) のアドレスが正しくありません。"))
        if values["in_business_id"] and not IN_BUSINESS_ID.match(values["in_business_id"]):
            raise InvalidInput(lazy_gettext(
                "業務内ID (in_business_id) は半角英数字と _ . @ - の1〜64文字で指定してください。"))
        gender = _enum(Gender, GENDER_LABELS, values["gender"] or "unspecified", lazy_gettext("性別 (gender)"))
        auth_method = _enum(AuthMethod, AUTH_METHOD_LABELS, values["auth_method"] or "password",
                            lazy_gettext("認証方式 (auth_method)"))
        role = _enum(Role, ROLE_LABELS, values["role"] or "operator", lazy_gettext("権限 (role)"))
        if values["administers_business_id"] and not BUSINESS_ID.match(values["administers_business_id"]):
            raise InvalidInput(lazy_gettext("管理する業務 (administers_business_id) は2桁の業務IDで指定してください。"))
        if role is Role.BUSINESS_ADMIN and not values["administers_business_id"]:
            raise InvalidInput(lazy_gettext(
                "業務システムの管理者には 管理する業務 (administers_business_id) が必要です。"))
        return cls(
            operator_id=values["operator_id"], name=values["name"], department=values["department"],
            gender=gender,  # type: ignore[arg-type]
            phone=values["phone"], extension=values["extension"], email=values["email"],
            info=values["info"], extra_info=values["extra_info"],
            auth_method=auth_method,  # type: ignore[arg-type]
            business_ids=parse_business_ids(data.get("business_ids")),
            in_business_id=values["in_business_id"],
            role=role,  # type: ignore[arg-type]
            administers_business_id=values["administers_business_id"] if role is Role.BUSINESS_ADMIN else "",
        )

    def as_json(self) -> dict[str, object]:
        """JSON-safe form (for the registration target list and the audit log)."""
        return {
            "operator_id": self.operator_id, "name": self.name, "department": self.department,
            "gender": self.gender.value, "phone": self.phone, "extension": self.extension,
            "email": self.email, "info": self.info, "extra_info": self.extra_info,
            "auth_method": self.auth_method.value, "business_ids": list(self.business_ids),
            "in_business_id": self.in_business_id, "role": self.role.value,
            "administers_business_id": self.administers_business_id,
        }
