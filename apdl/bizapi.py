"""The business-system API (業務システム連携): who is calling, and what that business system may see and do.

**Who.** A business system calls over mutual TLS with the SSL通信証明書 opauth issued for it
(``flask --app app ssl issue --tenant T --business-id 05 ...``). The certificate is checked by the module's one
client-certificate check (:func:`apdl.clientcert.verify`: chain to the trusted CA, validity, clientAuth EKU,
the CRL at its own distribution point on every request). opauth writes the business system into that
certificate's subject as ``OU=<業務ID> <業務システム名>`` (a terminal's is ``OU=terminal <名前>``) and gives the
SSL通信証明書 profile both serverAuth and clientAuth; the 業務ID is read from there and nowhere else, never
from a request parameter.

**What.** Everything goes through :class:`apdl.tenancy.BusinessScope`: only APs whose registered 業務ID is the
caller's, the 利用者 who have one of them installed, and the cards that hold one. A card that holds none of
them is a 404, the same as a card that does not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask_babel import gettext as _

from apdl import cardstatus, clientcert
from apdl.errors import Conflict, InvalidInput
from apdl.models import CardAp, Installation, Resident
from apdl.tenancy import BusinessScope

_SYSTEM_OU = re.compile(r"([0-9]{2}) (.*)", re.DOTALL)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class BusinessSystem:
    """The calling business system as its certificate shows it."""

    business_id: str
    name: str
    fingerprint: str
    serial: int

    @property
    def actor(self) -> str:
        """How the operation log names it."""
        return f"business:{self.business_id} ({self.name[:60]})"


def authenticate() -> BusinessSystem:
    """The business system behind this request's client certificate; CertificateRefused (403) otherwise."""
    cert = clientcert.verify(clientcert.BUSINESS_SYSTEM)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    match = _SYSTEM_OU.fullmatch(str(units[0].value)) if len(units) == 1 else None
    if match is None or ExtendedKeyUsageOID.SERVER_AUTH not in clientcert.usages(cert):
        raise clientcert.CertificateRefused(_("業務システムのSSL通信証明書ではありません。"))
    return BusinessSystem(match.group(1), match.group(2), clientcert.fingerprint(cert), cert.serial_number)


# --- parameters ----------------------------------------------------------------------------------------------


def _clean(raw: str) -> str:
    if "\x00" in raw:
        raise InvalidInput(_("リクエストに使えない文字が含まれています。"))
    return raw.strip()


def parse_limit(raw: str | None) -> int:
    """``limit``: 1..1000 (default 100)."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    value = _clean(raw)
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_LIMIT):
        raise InvalidInput(_("limit は1〜%(max)dの整数で指定してください。", max=MAX_LIMIT))
    return int(value)


def parse_cursor(raw: str | None) -> int:
    """``cursor``: what the previous page returned as ``next_cursor`` (0 or absent: from the start)."""
    if raw is None or raw == "":
        return 0
    value = _clean(raw)
    if not (value.isascii() and value.isdigit() and len(value) <= 10 and int(value) < 2**31):
        raise InvalidInput(_("cursor が正しくありません。"))
    return int(value)


def parse_since(raw: str | None) -> datetime:
    """``since``: ISO 8601 with an offset (``2026-11-30T09:00:00+09:00`` or ``...Z``)."""
    value = re.sub(r" ([0-9]{2}:?[0-9]{2})$", r"+\1", _clean(raw or ""))  # an unescaped "+" arrives as a space
    try:
        at = datetime.fromisoformat(value) if value and len(value) <= 40 else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise InvalidInput(_("since は時差付きの ISO 8601 日時で指定してください（例 2026-11-30T09:00:00+09:00）。"))
    return at.astimezone(UTC)


def parse_card(raw: str) -> str:
    """A カードFID in the path: 8–32 digits (anything else cannot name a card: 404 as a missing one)."""
    return raw if cardstatus.CARD_ID.fullmatch(raw) else ""


# --- 利用者情報連携 ------------------------------------------------------------------------------------------


def _user(installation: Installation, resident: Resident, ap: CardAp, labels: dict[str, str]) -> dict[str, Any]:
    """One 利用者 as one of this system's APs knows them: the 利用者ID numbered into that installation, its 標準ID,
    and what the tenant registered (never a 個人番号 or 住民票コード: the module stores neither)."""
    return {
        "user_id": installation.user_id_in_ap,
        "standard_id": installation.standard_id,
        "ap": {"aid": ap.aid, "name": ap.name},
        "card_identifier": installation.card_identifier,
        "tenant": installation.tenant_code,
        "installed_at": _at(installation.completed_at or installation.created_at),
        "card_status": resident.card_status,
        "kana_family": resident.kana_family, "kana_given": resident.kana_given,
        "kanji_family": resident.kanji_family, "kanji_given": resident.kanji_given,
        "birth_date": resident.birth_date.isoformat(), "gender": resident.gender,
        "postal_code": resident.postal_code, "address1": resident.address1, "address2": resident.address2,
        "phone": resident.phone, "email": resident.email, "occupation": resident.occupation,
        "custom": {labels.get(key, key): value for key, value in sorted(resident.custom.items())},
    }


def users(scope: BusinessScope, *, limit: int, cursor: int) -> dict[str, Any]:
    """One page of this system's 利用者 (one entry per installation of one of its APs), by installation id."""
    rows = list(scope.session.execute(scope.installations().where(Installation.id > cursor).limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    labels = scope.field_labels({r.tenant_code for _, r, _ in page})
    return {"users": [_user(i, r, ap, labels) for i, r, ap in page],
            "next_cursor": str(page[-1][0].id) if more else None}


def user(scope: BusinessScope, user_id: str) -> dict[str, Any] | None:
    """The 利用者 behind one 利用者ID of one of this system's APs, or None."""
    if not re.fullmatch(r"[0-9A-Fa-f]{1,32}", user_id):
        return None
    row = scope.session.execute(scope.installations().where(Installation.user_id_in_ap == user_id.upper())).first()
    if row is None:
        return None
    installation, resident, ap = row
    return _user(installation, resident, ap, scope.field_labels({resident.tenant_code}))


# --- card status ---------------------------------------------------------------------------------------------


def _at(value: datetime | None) -> str | None:
    """A time as every answer writes it: ISO 8601 in UTC with its offset (the database keeps UTC; a value read
    back without a zone is UTC, never the server's local time)."""
    if value is None:
        return None
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()


def changes(scope: BusinessScope, since: datetime, *, limit: int) -> dict[str, Any]:
    """Status changes since ``since`` of the cards holding one of this system's APs, oldest first."""
    found = cardstatus.changes_since(scope.session, since, limit=limit, cards=scope.cards())
    return {"changes": [{"card_identifier": c.card_identifier, "kind": c.kind, "status": c.status,
                         "residence_code": c.residence_code, "at": _at(c.at)} for c in found],
            "more": len(found) == limit, "next_since": _at(found[-1].at) if found else None}


def card_status(scope: BusinessScope, card_identifier: str) -> dict[str, Any] | None:
    """One card's status, or None when the card holds none of this system's APs."""
    tenant = scope.tenant_on_card(card_identifier) if card_identifier else None
    if tenant is None:
        return None
    view = cardstatus.status_of(scope.session, card_identifier, viewer=tenant)  # another 利用機関's reason: null
    return {"card_identifier": card_identifier,
            "status": view.feed_status.value if view.feed_status else None,
            "residence_code": view.residence_code, "occurred_at": _at(view.occurred_at),
            "stopped": view.stop is not None, "stop_reason": view.stop.reason if view.stop else None,
            "stopped_at": _at(view.stop.stopped_at) if view.stop else None, "usable": not view.blocked}


def stop(scope: BusinessScope, system: BusinessSystem, card_identifier: str, reason: str) -> bool:
    """即時停止 of a card holding one of this system's APs (False: it holds none). Logged; the caller commits."""
    tenant = scope.tenant_on_card(card_identifier) if card_identifier else None
    if tenant is None:
        return False
    cardstatus.stop(scope.session, card_identifier, reason, actor=system.actor, tenant_code=tenant)
    return True


def cancel(scope: BusinessScope, system: BusinessSystem, card_identifier: str, reason: str) -> bool:
    """Lift a 即時停止 this system made (an operator's stop is not its to lift). Logged; the caller commits."""
    tenant = scope.tenant_on_card(card_identifier) if card_identifier else None
    if tenant is None:
        return False
    current = cardstatus.active_stop(scope.session, card_identifier)
    if current is None or current.stopped_by != system.actor[:200]:
        raise Conflict(_("このカードに解除できる即時停止はありません。"))
    cardstatus.cancel_stop(scope.session, card_identifier, reason, actor=system.actor, tenant_code=current.tenant_code)
    return True
