"""Business systems (業務システム): validation and create/update."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from flask_babel import gettext as _
from flask_babel import lazy_gettext
from flask_babel.speaklater import LazyString
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ca import names
from ca.models import Certificate
from kernel import webinput
from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import Conflict, InvalidInput, NotFound
from operators.models import BusinessSystem

_BUSINESS_ID = re.compile(r"^[0-9]{2}$")
_PHONE = re.compile(r"^[0-9][0-9-]{0,19}$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")

URL_FIELDS = ("top_url", "operator_admin_url", "personalize_url")
LABELS = {
    "business_id": lazy_gettext("業務ID"),
    "name": lazy_gettext("業務システム名"),
    "admin_org": lazy_gettext("管理組織名"),
    "top_url": lazy_gettext("業務トップURL"),
    "operator_admin_url": lazy_gettext("オペレータ管理URL"),
    "personalize_url": lazy_gettext("パーソナライズURL"),
    "phone": lazy_gettext("連絡先電話"),
    "email": "E-mail",
}
# Longest accepted value per field (the column sizes); longer input is refused, never cut.
MAX_LENGTHS = {"business_id": 2, "name": 200, "admin_org": 200, "top_url": 2000, "operator_admin_url": 2000,
               "personalize_url": 2000, "phone": 20, "email": 320}


@dataclass(frozen=True)
class BusinessSystemData:
    """Validated input for a business system record (the fields of the seed's screen)."""

    business_id: str
    name: str
    admin_org: str
    top_url: str
    operator_admin_url: str
    personalize_url: str
    phone: str
    email: str

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> BusinessSystemData:
        """Validate form or JSON input; raise ``InvalidInput`` naming the first bad field."""
        values: dict[str, str] = {}
        for field in LABELS:
            if field == "business_id":
                continue  # checked by its own pattern below, with its own message
            values[field] = webinput.text(data.get(field), field=_field_label(field),
                                          max_length=MAX_LENGTHS[field])
        raw_id = data.get("business_id")
        values["business_id"] = raw_id.strip() if isinstance(raw_id, str) else ""
        if not _BUSINESS_ID.match(values["business_id"]):
            raise InvalidInput(lazy_gettext("業務ID (business_id) は半角数字2桁で指定してください（例: 05）。"))
        if not values["name"]:
            raise InvalidInput(lazy_gettext("業務システム名 (name) は必須です。"))
        for field in URL_FIELDS:
            host_of(values[field], field)
        if values["phone"] and not _PHONE.match(values["phone"]):
            raise InvalidInput(lazy_gettext(
                "連絡先電話 (phone) に使えるのは半角数字とハイフンだけです（20文字以内）。"))
        if values["email"] and (len(values["email"]) > 320 or not _EMAIL.match(values["email"])):
            raise InvalidInput(lazy_gettext("E-Mail (email) のアドレスが正しくありません。"))
        return cls(**values)

    def hosts(self) -> list[str]:
        """Distinct host names of the three URLs, in screen order."""
        seen: list[str] = []
        for field in URL_FIELDS:
            host = host_of(getattr(self, field), field)
            if host not in seen:
                seen.append(host)
        return seen


def _field_label(field: str) -> str:
    """「業務システム名 (name)」, translated only when a message is made (most input is valid)."""
    label: str = LazyString(lambda: f"{LABELS[field]} ({field})")
    return label


def host_of(url: str, field: str = "url") -> str:
    """The host of a business system's https URL field (``ca.names.host_of`` with the field's label)."""
    return names.host_of(url, field, label=LABELS.get(field, field))




# Built once: issuance looks the system up on every certificate.
_BY_BUSINESS_ID = select(BusinessSystem).where(BusinessSystem.business_id == bindparam("business_id"))


def get_by_business_id(session: Session, business_id: str) -> BusinessSystem:
    system = find_by_business_id(session, business_id)
    if system is None:
        raise NotFound(lazy_gettext("業務ID %(id)s の業務システムはありません。", id=business_id))
    return system


def find_by_business_id(session: Session, business_id: str) -> BusinessSystem | None:
    return session.scalar(_BY_BUSINESS_ID, {"business_id": business_id})


def save_business_system(session: Session, data: BusinessSystemData) -> tuple[BusinessSystem, bool]:
    """Create the system for ``data.business_id`` or update it; returns (system, created)."""
    system = find_by_business_id(session, data.business_id)
    created = system is None
    if system is None:
        system = BusinessSystem(business_id=data.business_id)
        session.add(system)
    for field, value in asdict(data).items():
        setattr(system, field, value)
    try:
        session.flush()
    except IntegrityError:
        # Another request created the same 業務ID between our look-up and this insert.
        raise Conflict(_("業務ID %(business_id)s は同時に別の操作で登録されました。内容を確認してやり直してください。",
                         business_id=data.business_id)) from None
    return system, created


def save_and_audit(session: Session, data: BusinessSystemData, actor: Actor) -> tuple[BusinessSystem, bool]:
    """Create or update the business system and record the change in the audit log."""
    system, created = save_business_system(session, data)
    record_event(session, action=AuditAction.BUSINESS_SYSTEM_CREATED if created
                 else AuditAction.BUSINESS_SYSTEM_UPDATED, actor=actor,
                 target=f"business_system:{system.business_id}", detail=asdict(data))
    return system, created


def list_business_systems(session: Session) -> list[BusinessSystem]:
    return list(session.scalars(select(BusinessSystem).order_by(BusinessSystem.business_id)))


def registered_hosts(system: BusinessSystem) -> list[str]:
    """The host names registered for a business system: the hosts of its URLs, in screen order."""
    hosts: list[str] = []
    for field in URL_FIELDS:
        host = host_of(getattr(system, field), field)
        if host not in hosts:
            hosts.append(host)
    return hosts


def system_of(certificate: Certificate) -> BusinessSystem | None:
    """The business system a certificate was issued for (the backref declared on ``BusinessSystem``)."""
    system: BusinessSystem | None = getattr(certificate, "business_system")  # noqa: B009 - a backref
    return system


def system_ids(session: Session, business_id: str | None) -> list[int] | None:
    """A 業務ID filter as business system ids: None for no filter, [] when no such system exists."""
    if not business_id:
        return None
    system = find_by_business_id(session, business_id)
    return [system.id] if system else []
