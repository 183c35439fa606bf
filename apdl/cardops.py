"""カードAP搭載 / 削除 / 地域住民向け領域設定 on the card in the server's PC/SC reader.

"Recorded or not done": an installation row is committed as ``pending`` before INSTALL and completed
after ``9000``; a refusal marks it ``failed``. A crash in between leaves ``pending`` rows, which the next
contact with the card settles from GET STATUS. These services therefore commit as they go (the row
must be durable before the card is touched). PINs and keys are never stored or logged.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import select

from apdl import cardstatus, oplog, terminals
from apdl.areas import may_use_area, municipality_code_valid
from apdl.auth import current_operator
from apdl.card.adapter import AppEntry, CardStatusError, GlobalPlatformCardSession, Transport
from apdl.card.apdu import StatusWord
from apdl.card.commands import REGIONAL_AREA_AID, ApSpec, ApType
from apdl.card.commands import Area as CardArea
from apdl.card.diversification import MasterKeys
from apdl.card.pcsc import PcscTransport
from apdl.card.scp03 import SecureChannelError
from apdl.db import SESSIONMAKER_KEY, get_session, utcnow
from apdl.errors import CardError, Conflict, InvalidInput, Refused
from apdl.models import Area, CardAp, FeedStatus, Installation, InstallState, Resident, TerminalPairing
from apdl.tenancy import Operator, TenantScope

KEY_SEED_FILE = "ap-key-seed"
RECONCILER = "apdl (card contact)"  # who settles a pending row when another tenant's operator read the card
CARD_KEYS_FILE = "card-keys"
CARD_LOCK_SECONDS = 20.0  # how long an operation waits for another one on the same card to finish


@dataclass(frozen=True)
class CardView:
    """What one contact with the card showed."""

    card_identifier: str
    residence_code: str
    aids: list[str]  # every application and security domain GET STATUS listed
    regional_created: bool
    free: dict[str, int]  # area → free bytes
    purged: tuple[str, ...] = ()  # names of the regional APs a reported move deleted at this contact
    closed: tuple[str, ...] = ()  # names of this tenant's installed APs the card no longer held (records closed)


def card_keys(config: Mapping[str, object]) -> MasterKeys:
    """The SCP03 master key set each card's static keys are diversified from (KDF3, per the card's
    diversification data): the APDL_CARD_KEYS file, or INSTANCE_DIR/card-keys generated once (0600).

    The emulator is given the same file when a card is issued (``python -m apdl.emulator --keys-file``).
    """
    configured = str(config.get("CARD_KEYS") or "")
    path = Path(configured) if configured else Path(str(config["INSTANCE_DIR"])) / CARD_KEYS_FILE
    if not configured and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(MasterKeys.generate().to_hex() + "\n")
    try:
        return MasterKeys.from_hex(path.read_text())
    except (OSError, ValueError) as exc:
        raise CardError(f"SCP03 card keys unusable ({path}): {type(exc).__name__}") from None


def card_session(transport: Transport) -> GlobalPlatformCardSession:
    """The reference adapter over ``transport``, with the SCP03 master keys when APDL_SCP03 is on (the
    highest security level: C-MAC, C-DECRYPTION, R-MAC, R-ENCRYPTION)."""
    keys = card_keys(current_app.config) if current_app.config["SCP03"] else None
    return GlobalPlatformCardSession(transport, keys=keys)


@contextmanager
def one_at_a_time(reader: str) -> Iterator[None]:
    """One card session at a time per reader (or terminal), across the module's workers and threads: an
    operation started while another runs on the same card waits for it, then reads the card afresh."""
    locks = Path(current_app.config["INSTANCE_DIR"]) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"card-{hashlib.sha256(reader.encode()).hexdigest()[:32]}.lock"
    with path.open("a+") as handle:  # flock: separate opens conflict, in this process too
        deadline = time.monotonic() + CARD_LOCK_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Conflict(_("カードは別の操作で使用中です。しばらくしてからやり直してください。")) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def session_terminal(operator: Operator | None) -> TerminalPairing | None:
    """The terminal this operator's session is paired with (its card agent carries the card's APDUs), or None. With
    APDL_CARD_TRANSPORT=agent an unpaired session is refused (403, logged) before any reader is touched: the module's
    own reader is never used for it."""
    db = get_session()
    paired = terminals.paired_terminal(db, operator.session_id) if operator is not None else None
    if paired is None and current_app.config["CARD_TRANSPORT"] == "agent":
        if operator is not None:
            db.rollback()
            oplog.record(db, tenant_code=operator.tenant_code, actor=operator.actor, action=oplog.Action.REFUSED,
                         target="terminal", detail={"reason": "session not paired with a terminal"})
            db.commit()
        raise Refused(_("端末が組付けられていません。端末の組付けを行ってください。"))
    return paired


@contextmanager
def agent_transport(paired: TerminalPairing) -> Iterator[terminals.AgentTransport]:
    """The paired terminal's card agent as a Transport, one card session at a time per terminal, released after."""
    with one_at_a_time(f"terminal:{paired.terminal_fingerprint}"):
        relay = current_app.extensions[SESSIONMAKER_KEY]()
        agent = terminals.AgentTransport(relay, paired.terminal_fingerprint,
                                         timeout=float(current_app.config["AGENT_TIMEOUT"]))
        try:
            yield agent
        finally:
            agent.close()
            relay.close()


@contextmanager
def open_card() -> Iterator[GlobalPlatformCardSession]:
    """A card session, released afterwards: on the server's reader (APDL_READER), or with
    APDL_CARD_TRANSPORT=agent through the card agent of the terminal paired with this operator's session."""
    if current_app.config["CARD_TRANSPORT"] == "agent":
        paired = session_terminal(current_operator())
        assert paired is not None  # refused otherwise
        with agent_transport(paired) as agent:
            yield card_session(agent)
        return
    with one_at_a_time(f"reader:{current_app.config['READER']}"):
        transport = PcscTransport(current_app.config["READER"])
        try:
            yield card_session(transport)
        finally:
            transport.close()


def _key_seed() -> bytes:
    path = Path(current_app.config["INSTANCE_DIR"]) / KEY_SEED_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


def _auth_key(ap: CardAp, user_id: str) -> bytes:
    """A type A AP's mutual-authentication key, derived from the instance's seed (never stored)."""
    return hmac.new(_key_seed(), f"{ap.aid}:{user_id}".encode(), hashlib.sha256).digest()[:16]


def _aids(entries: list[AppEntry]) -> list[str]:
    return [e.aid.hex().upper() for e in entries]


def contact(scope: TenantScope, card: GlobalPlatformCardSession, resident: Resident, *,
            operator: Operator) -> CardView:
    """Read the card, check it is the holder's, settle pending rows from GET STATUS; logged.

    Every card operation starts here, so this is where a card's status is checked, before the first APDU:
    a 即時停止 or a lost / stolen / suspended / abolished card is refused (and the refusal logged). A move
    (転出) reported by the feed deletes the card's regional APs at this contact and keeps the extended ones.
    """
    status = check_card(scope, resident, operator=operator)
    info = card.card_info()
    if info.card_identifier != resident.card_identifier:
        raise Conflict(_("読み取ったカードはこの利用者のカードではありません。"))
    aids = _aids(card.list_apps())
    purged: tuple[str, ...] = ()
    if status.regional_purge:
        aids, purged = _purge_regional(scope, card, info.card_identifier, aids, operator=operator)
    residence_code = (status.residence_code if status.feed_status is FeedStatus.MOVED and status.residence_code
                      else info.residence_code)
    regional = REGIONAL_AREA_AID.hex().upper() in aids
    free = {Area.EXTENDED.value: card.free_space(CardArea.EXTENDED).free_bytes}
    if regional:
        free[Area.REGIONAL.value] = card.free_space(CardArea.REGIONAL).free_bytes
    db = scope.session
    closed = _reconcile(scope, resident.card_identifier, aids, operator=operator)
    oplog.record(db, tenant_code=scope.tenant_code, actor=operator.actor, action=oplog.Action.CARD_SESSION,
                 target=f"card:{info.card_identifier}", detail={"apps": len(aids), "regional": regional})
    db.commit()
    return CardView(info.card_identifier, residence_code, aids, regional, free, purged, closed)


def check_card(scope: TenantScope, resident: Resident, *, operator: Operator) -> cardstatus.StatusView:
    """The card's status, or the refusal (logged) when a 即時停止 or the feed forbids any operation on it: the
    same :func:`apdl.cardstatus.refusal` the 利用者 page uses to hide its card buttons. No APDU."""
    status = cardstatus.status_of(scope.session, resident.card_identifier, viewer=scope.viewer)
    refused = cardstatus.refusal(status)
    if refused is not None:
        raise _refuse(scope, operator, f"card:{resident.card_identifier}", "card stopped", refused)
    return status


def moved_away(scope: TenantScope, resident: Resident) -> str:
    """The new residence code when the feed reports the card moved (転出) to a municipality whose regional area
    this tenant may not use (the old municipality after a move), else ""."""
    status = cardstatus.status_of(scope.session, resident.card_identifier, viewer=scope.viewer)
    if status.feed_status is not FeedStatus.MOVED or not status.residence_code:
        return ""
    allowed = may_use_area(scope.profile(), Area.REGIONAL, residence_code=status.residence_code)
    return "" if allowed else status.residence_code


def _reconcile(scope: TenantScope, card_identifier: str, aids: list[str], *,
               operator: Operator) -> tuple[str, ...]:
    """The card is the evidence: each AID on it backs one recorded installation. A pending row becomes
    installed when its AID is on the card and no other row already holds it, failed otherwise; an installed
    row whose AID is not on the card (the card was replaced, reset or changed elsewhere) or that another row
    already holds is marked deleted. Every change is logged under the row's own tenant. Returns the names of
    this tenant's installed APs closed because the card no longer holds them (another tenant's stay unnamed)."""
    db = scope.session
    held: set[str] = set()
    closed: list[str] = []
    for row, aid in db.execute(scope.recorded_on_card(card_identifier)).all():
        backed = aid in aids and aid not in held
        if backed:
            held.add(aid)
        if row.state == InstallState.INSTALLED:
            if backed:
                continue
            row.state, row.deleted_at, row.deleted_by = InstallState.DELETED, utcnow(), RECONCILER
            row.detail = "not on the card at contact" if aid not in aids else "recorded twice"
            ap = db.get(CardAp, row.card_ap_id) if aid not in aids and row.tenant_code == scope.tenant_code else None
            if ap is not None:
                closed.append(ap.name)
        else:
            row.state = InstallState.INSTALLED if backed else InstallState.FAILED
            row.completed_at, row.detail = utcnow(), "reconciled from GET STATUS"
        own = row.tenant_code == scope.tenant_code  # another tenant's row: its log names no foreign operator
        oplog.record(db, tenant_code=row.tenant_code, actor=operator.actor if own else RECONCILER,
                     action=oplog.Action.CARD_RECONCILED, target=f"installation:{row.id}",
                     detail={"aid": aid, "state": row.state, "why": row.detail,
                             **({} if own else {"at": "another tenant's contact"})})
    return tuple(closed)


def _purge_regional(scope: TenantScope, card: GlobalPlatformCardSession, card_identifier: str, aids: list[str], *,
                    operator: Operator) -> tuple[list[str], tuple[str, ...]]:
    """A move was reported: DELETE the card's regional APs (whoever loaded them), record each deletion. Returns
    the AIDs left on the card and the names of the APs deleted."""
    db = scope.session
    doomed = cardstatus.regional_aps_on(db, aids)
    for ap in doomed:
        try:
            card.delete(bytes.fromhex(ap.aid))
        except CardStatusError as exc:
            if exc.sw != StatusWord.REFERENCED_DATA_NOT_FOUND:
                raise CardError(f"DELETE refused: SW {exc.sw:04X}") from exc
    marked = cardstatus.settle_move(db, card_identifier, doomed, actor=operator.actor)
    for ap in doomed:
        oplog.record(db, tenant_code=scope.tenant_code, actor=operator.actor, action=oplog.Action.AP_DELETED,
                     target=f"ap:{ap.aid}", detail={"card": card_identifier, "reason": "moved", "rows": marked,
                                                    "name": ap.name})
    db.commit()  # also when nothing regional was on the card: the pending purge is settled
    gone = {ap.aid for ap in doomed}
    return [aid for aid in aids if aid not in gone], tuple(ap.name for ap in doomed)


def may_offer(scope: TenantScope, view: CardView, ap: CardAp) -> bool:
    """Whether the カードAP搭載 table offers ``ap`` for the card just read: an area this tenant may change,
    present on the card, with room for the AP."""
    area = Area(ap.area)
    return (ap.aid not in view.aids and may_use_area(scope.profile(), area, residence_code=view.residence_code)
            and ap.size_bytes <= view.free.get(area.value, 0))


def _refuse(scope: TenantScope, operator: Operator, target: str, reason: str, message: str) -> Refused:
    db = scope.session
    db.rollback()
    oplog.record(db, tenant_code=scope.tenant_code, actor=operator.actor, action=oplog.Action.REFUSED, target=target,
                 detail={"reason": reason})
    db.commit()
    return Refused(message)


def create_regional_area(scope: TenantScope, card: GlobalPlatformCardSession, resident: Resident, *,
                         operator: Operator) -> tuple[CardView, bool]:
    """地域住民向け領域設定: only the residence municipality. Returns the contact and whether it was created (False:
    it was there already)."""
    view = contact(scope, card, resident, operator=operator)
    if not may_use_area(scope.profile(), Area.REGIONAL, residence_code=view.residence_code):
        raise _refuse(scope, operator, f"card:{view.card_identifier}", "not the residence municipality",
                      _("地域住民向け領域は住所地の市町村だけが設定できます。"))
    if view.regional_created:
        return view, False
    card.create_regional_area()
    oplog.record(scope.session, tenant_code=scope.tenant_code, actor=operator.actor,
                 action=oplog.Action.REGIONAL_AREA_CREATED, target=f"card:{view.card_identifier}")
    scope.session.commit()
    return view, True


def _new_user_id(scope: TenantScope, ap: CardAp) -> str:
    while True:
        user_id = secrets.token_hex(8).upper()
        taken = scope.session.scalars(select(Installation.id).where(Installation.card_ap_id == ap.id,
                                                                    Installation.user_id_in_ap == user_id)).first()
        if taken is None:
            return user_id


def _new_standard_id(scope: TenantScope, municipality_code: str) -> str:
    """標準ID: the tenant's 全国地方公共団体コード + 10 random digits, unique across the database."""
    while True:
        candidate = municipality_code + f"{secrets.randbelow(10**10):010d}"
        if scope.session.scalars(select(Installation.id).where(Installation.standard_id == candidate)).first() is None:
            return candidate


def _check_resident(scope: TenantScope, resident: Resident, operator: Operator) -> None:
    if resident.card_status != "active":
        raise _refuse(scope, operator, f"resident:{resident.id}", "card not active",
                      _("このカードは運用中ではありません。"))
    if resident.holder_request_at is None:
        raise _refuse(scope, operator, f"resident:{resident.id}", "no holder request",
                      _("本人の申出が記録されていません。"))


def download(scope: TenantScope, card: GlobalPlatformCardSession, resident: Resident, ap_ids: list[int], *,
             pin: str, operator: Operator) -> tuple[CardView, list[Installation]]:
    """Load the selected APs; every rule is checked before the first INSTALL (and, for what the database already
    knows — a move reported by the feed — before the first APDU). Returns the contact and the rows loaded."""
    if not ap_ids:
        raise InvalidInput(_("搭載するカードAPを選択してください。"))
    aps = [scope.ap_or_404(ap_id, loadable=True) for ap_id in dict.fromkeys(ap_ids)]
    _check_resident(scope, resident, operator)
    moved_to = moved_away(scope, resident) if any(ap.area == Area.REGIONAL.value for ap in aps) else ""
    if moved_to:
        ap = next(ap for ap in aps if ap.area == Area.REGIONAL.value)
        raise _refuse(scope, operator, f"ap:{ap.aid}", "moved: regional area of the former municipality",
                      _("この利用者は転出しています（転出先 %(code)s）。転出前の市町村の地域住民向け領域のカードAP"
                        "「%(name)s」は搭載できません。", code=moved_to, name=ap.name))
    if any(ap.ap_type == ApType.A for ap in aps) and not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 16):
        raise InvalidInput(_("暗証番号（4〜16桁の数字）を入力してください。"))
    view = contact(scope, card, resident, operator=operator)
    needed: dict[str, int] = {}
    for ap in aps:
        area = Area(ap.area)
        if not may_use_area(scope.profile(), area, residence_code=view.residence_code):
            raise _refuse(scope, operator, f"ap:{ap.aid}", "regional area of another municipality",
                          _("地域住民向け領域のカードAPは住所地の市町村だけが搭載できます。"))
        if area is Area.REGIONAL and not view.regional_created:
            raise Refused(_("先に地域住民向け領域を設定してください。"))
        if ap.needs_standard_id and not _municipality_code(scope):
            raise _refuse(scope, operator, f"ap:{ap.aid}", "standard ID needs a municipality code",
                          _("標準IDを付番するカードAPは全国地方公共団体コードのある市町村だけが搭載できます。"))
        if ap.aid in view.aids:
            raise Conflict(_("カードAP「%(name)s」は搭載済みです。", name=ap.name))
        needed[area.value] = needed.get(area.value, 0) + ap.size_bytes
    for area_name, size in needed.items():
        if size > view.free.get(area_name, 0):
            raise _refuse(scope, operator, f"card:{view.card_identifier}", f"no space in {area_name}",
                          _("カードの空き容量が足りません。"))
    done: list[Installation] = []
    for ap in aps:
        done.append(_install_one(scope, card, resident, ap, pin=pin, operator=operator))
    return view, done


def _municipality_code(scope: TenantScope) -> str:
    profile = scope.profile()
    return profile.municipality_code if profile is not None and municipality_code_valid(
        profile.municipality_code) else ""


def _install_one(scope: TenantScope, card: GlobalPlatformCardSession, resident: Resident, ap: CardAp, *, pin: str,
                 operator: Operator) -> Installation:
    db = scope.session
    user_id = _new_user_id(scope, ap)
    row = Installation(tenant_code=scope.tenant_code, resident_id=resident.id,
                       card_identifier=resident.card_identifier, card_ap_id=ap.id, user_id_in_ap=user_id,
                       standard_id=_new_standard_id(scope, _municipality_code(scope)) if ap.needs_standard_id else None,
                       state=InstallState.PENDING, created_by=operator.actor)
    db.add(row)
    db.commit()  # durable before the card is touched
    ap_type = ApType(ap.ap_type)
    spec = ApSpec(aid=bytes.fromhex(ap.aid), ap_type=ap_type, size_bytes=ap.size_bytes, user_id=user_id.encode(),
                  pin=pin.encode() if ap_type is ApType.A else b"",
                  pin_max_tries=ap.pin_max_tries if ap_type is ApType.A else 3,
                  auth_key=_auth_key(ap, user_id) if ap_type is ApType.A else b"")
    try:
        card.install(spec, area=CardArea(ap.area))
    except CardStatusError as exc:
        row.state, row.completed_at, row.detail = InstallState.FAILED, utcnow(), f"SW {exc.sw:04X}"
        oplog.record(db, tenant_code=scope.tenant_code, actor=operator.actor,
                     action=oplog.Action.AP_INSTALL_FAILED, target=f"ap:{ap.aid}",
                     detail={"card": resident.card_identifier, "sw": f"{exc.sw:04X}"})
        db.commit()
        if exc.sw == StatusWord.NOT_ENOUGH_MEMORY:
            raise Refused(_("カードの空き容量が足りません。")) from exc
        raise CardError(f"INSTALL refused: SW {exc.sw:04X}") from exc
    except SecureChannelError as exc:
        # The card's answer failed its R-MAC or R-ENCRYPTION check: not recorded as installed. The row stays
        # pending (the card may have acted); the next contact settles it from an authenticated GET STATUS.
        row.detail = f"secure channel: {exc}"[:200]
        oplog.record(db, tenant_code=scope.tenant_code, actor=operator.actor, action=oplog.Action.REFUSED,
                     target=f"ap:{ap.aid}", detail={"card": resident.card_identifier, "reason": row.detail})
        db.commit()
        raise
    row.state, row.completed_at = InstallState.INSTALLED, utcnow()
    oplog.record(db, tenant_code=scope.tenant_code, actor=operator.actor, action=oplog.Action.AP_INSTALLED,
                 target=f"ap:{ap.aid}", detail={"card": resident.card_identifier, "installation": row.id,
                                                "area": ap.area})
    db.commit()
    return row


def delete(scope: TenantScope, card: GlobalPlatformCardSession, resident: Resident, installation: Installation, *,
           operator: Operator) -> tuple[CardView, CardAp]:
    """カードAP削除 on the holder's request; regional APs only by the residence municipality."""
    ap = check_delete(scope, resident, installation, operator=operator)
    view = contact(scope, card, resident, operator=operator)
    if not may_use_area(scope.profile(), Area(ap.area), residence_code=view.residence_code):
        raise _refuse(scope, operator, f"ap:{ap.aid}", "regional area of another municipality",
                      _("地域住民向け領域のカードAPは住所地の市町村だけが削除できます。"))
    try:
        card.delete(bytes.fromhex(ap.aid))
    except CardStatusError as exc:
        if exc.sw != StatusWord.REFERENCED_DATA_NOT_FOUND:  # already gone from the card: record the deletion
            raise CardError(f"DELETE refused: SW {exc.sw:04X}") from exc
    installation.state, installation.deleted_at, installation.deleted_by = (InstallState.DELETED, utcnow(),
                                                                            operator.actor)
    oplog.record(scope.session, tenant_code=scope.tenant_code, actor=operator.actor, action=oplog.Action.AP_DELETED,
                 target=f"ap:{ap.aid}", detail={"card": resident.card_identifier, "installation": installation.id,
                                                "reason": "holder_request"})
    scope.session.commit()
    return view, ap


def check_delete(scope: TenantScope, resident: Resident, installation: Installation, *,
                 operator: Operator) -> CardAp:
    """Whether :func:`delete` may start (its confirmation asks first): the AP, or the refusal. No APDU."""
    ap = scope.session.get(CardAp, installation.card_ap_id)
    if ap is None or installation.state != InstallState.INSTALLED or installation.resident_id != resident.id:
        raise Conflict(_("このカードAPは搭載されていません。"))
    check_card(scope, resident, operator=operator)
    return ap
