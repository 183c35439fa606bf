"""カードAP管理: the AP registry, per-tenant availability and tenant profiles (services; callers commit)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from flask_babel import gettext as _
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from apdl import oplog, validation
from apdl.areas import municipality_code_valid
from apdl.card import commands
from apdl.db import utcnow
from apdl.errors import Conflict, InvalidInput
from apdl.models import Area, CardAp, PinPolicy, TenantApAvailability, TenantKind, TenantProfile
from apdl.tenancy import Operator

RESERVED_AIDS = {a.hex().upper() for a in (
    commands.CARD_MANAGER_AID, commands.SSD_LOAD_FILE_AID, commands.SSD_MODULE_AID, commands.REGIONAL_AREA_AID,
    commands.EXTENDED_AREA_AID, commands.TYPE_A_LOAD_FILE_AID, commands.TYPE_C_LOAD_FILE_AID)}
TENANT_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def normalise_aid(raw: str) -> str:
    """Upper-case hex of an AID of 5 to 16 bytes; InvalidInput otherwise."""
    aid = re.sub(r"\s+", "", raw or "").upper()
    if not re.fullmatch(r"(?:[0-9A-F]{2}){5,16}", aid):
        raise InvalidInput(_("AIDは5〜16バイトの16進数で入力してください。"))
    if aid in RESERVED_AIDS:
        raise InvalidInput(_("このAIDはカードマネージャが使用しています。"))
    return aid


def _int(form: Mapping[str, str], name: str, label: str, low: int, high: int) -> int:
    raw = (form.get(name) or "").strip()
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidInput(_("%(label)sは%(low)d〜%(high)dの整数で入力してください。", label=label, low=low, high=high))
    return int(raw)


def register_ap(session: Session, form: Mapping[str, str], *, operator: Operator) -> CardAp:
    """Register one card AP from the form; duplicate AID → Conflict."""
    aid = normalise_aid(form.get("aid", ""))
    area = (form.get("area") or "").strip()
    if area not in {a.value for a in Area}:
        raise InvalidInput(_("領域を選択してください。"))
    ap_type = (form.get("ap_type") or "").strip()
    if ap_type not in {"A", "C"}:
        raise InvalidInput(_("カードAPの種類を選択してください。"))
    business_id = (form.get("business_id") or "").strip()
    if not re.fullmatch(r"[0-9]{2}", business_id):
        raise InvalidInput(_("業務IDは2桁の数字で入力してください。"))
    personalize_url = validation.text(form, "personalize_url", _("パーソナライズURL"), max_length=2000,
                                      required=False)
    if personalize_url and not personalize_url.startswith("https://"):
        raise InvalidInput(_("パーソナライズURLは https:// で始めてください。"))
    text = validation.text
    ap = CardAp(aid=aid, name=text(form, "name", _("カードAP名"), max_length=100),
                description=text(form, "description", _("説明"), max_length=1000, required=False, multiline=True),
                provider_name=text(form, "provider_name", _("提供者"), max_length=100), area=area, ap_type=ap_type,
                size_bytes=_int(form, "size_bytes", _("サイズ"), 1, 65535),
                pin_policy=PinPolicy.USER.value if ap_type == "A" else PinPolicy.NONE.value,
                pin_max_tries=_int(form, "pin_max_tries", _("PIN試行回数"), 1, 15) if ap_type == "A" else 0,
                business_id=business_id, personalize_url=personalize_url,
                needs_standard_id=form.get("needs_standard_id") == "on")
    if session.scalars(select(CardAp.id).where(CardAp.aid == aid)).first() is not None:
        raise Conflict(_("AID %(aid)s は登録済みです。", aid=aid))
    session.add(ap)
    session.flush()
    oplog.record(session, tenant_code=operator.tenant_code, actor=operator.actor, action=oplog.Action.AP_REGISTERED,
                 target=f"ap:{aid}", detail={"name": ap.name, "area": area, "type": ap_type, "size": ap.size_bytes,
                                             "business_id": business_id})
    return ap


def withdraw_ap(session: Session, ap: CardAp, *, operator: Operator) -> None:
    """Withdraw an AP: no new downloads, no longer offered to any tenant."""
    if ap.withdrawn_at is None:
        ap.withdrawn_at = utcnow()
        session.execute(delete(TenantApAvailability).where(TenantApAvailability.card_ap_id == ap.id))
        oplog.record(session, tenant_code=operator.tenant_code, actor=operator.actor,
                     action=oplog.Action.AP_WITHDRAWN, target=f"ap:{ap.aid}")


def set_profile(session: Session, form: Mapping[str, str], *, operator: Operator) -> TenantProfile:
    """Create or change a tenant's profile (kind and 全国地方公共団体コード, check digit verified)."""
    code = (form.get("tenant_code") or "").strip()
    if not TENANT_CODE.match(code):
        raise InvalidInput(_("利用機関コードは半角英小文字・数字・ハイフンで入力してください。"))
    kind = (form.get("kind") or "").strip()
    if kind not in {k.value for k in TenantKind}:
        raise InvalidInput(_("利用機関の種別を選択してください。"))
    municipality_code = (form.get("municipality_code") or "").strip()
    if municipality_code and not municipality_code_valid(municipality_code):
        raise InvalidInput(_("全国地方公共団体コードが正しくありません（6桁、検査数字を確認してください）。"))
    if kind == TenantKind.MUNICIPALITY and not municipality_code:
        raise InvalidInput(_("市町村には全国地方公共団体コードが必要です。"))
    profile = session.get(TenantProfile, code) or TenantProfile(tenant_code=code)
    profile.kind, profile.municipality_code = kind, municipality_code
    session.add(profile)
    oplog.record(session, tenant_code=operator.tenant_code, actor=operator.actor,
                 action=oplog.Action.TENANT_PROFILE_SET, target=f"tenant:{code}",
                 detail={"kind": kind, "municipality_code": municipality_code})
    return profile


def available_ids(session: Session, tenant_code: str) -> set[int]:
    """Ids of the APs ``tenant_code`` may download."""
    return set(session.scalars(select(TenantApAvailability.card_ap_id)
                               .where(TenantApAvailability.tenant_code == tenant_code)))


def change_availability(session: Session, tenant_code: str, ap_ids: list[int], *, add: bool,
                        operator: Operator) -> None:
    """選択>>> (``add``) or <<<取消 the given APs for ``tenant_code``."""
    if session.get(TenantProfile, tenant_code) is None:
        raise InvalidInput(_("利用機関が登録されていません。"))
    current = available_ids(session, tenant_code)
    active = set(session.scalars(select(CardAp.id).where(CardAp.id.in_(ap_ids), CardAp.withdrawn_at.is_(None))))
    if add:
        for ap_id in sorted(active - current):
            session.add(TenantApAvailability(tenant_code=tenant_code, card_ap_id=ap_id))
    else:
        session.execute(delete(TenantApAvailability).where(TenantApAvailability.tenant_code == tenant_code,
                                                           TenantApAvailability.card_ap_id.in_(ap_ids)))
    oplog.record(session, tenant_code=operator.tenant_code, actor=operator.actor,
                 action=oplog.Action.AVAILABILITY_CHANGED, target=f"tenant:{tenant_code}",
                 detail={"added" if add else "removed": sorted(active if add else set(ap_ids))})
