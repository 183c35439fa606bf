"""An emulated card: a GlobalPlatform-like card manager with two free areas and card APs of types A and C.

This models the public-standard stand-in that apdl's reference adapter speaks, not the real chip:

- the card manager (issuer security domain) answers GET STATUS, INSTALL, LOAD, DELETE and GET DATA;
- the regional area (地域住民向け領域) exists only after 地域住民向け領域設定 (INSTALL of a supplementary
  security domain); the extended area (拡張利用領域) exists from issuance; each has a byte quota
  (defaults: ten and twenty APs of the default size, as seed 003 assumes);
- type A APs hold a record behind mutual authentication and a PIN with a retry counter; type C APs
  can be read without authentication.

State lives in memory (optionally mirrored to a JSON file after every change) and can be inspected
with :meth:`EmulatedCard.snapshot`. :meth:`EmulatedCard.force_status` makes the card fail on purpose.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from apdl.card import auth, commands, tlv
from apdl.card.apdu import CommandApdu, StatusWord
from apdl.card.commands import ApType, Area

DEFAULT_AP_SIZE = 2048
DEFAULT_REGIONAL_QUOTA = 10 * DEFAULT_AP_SIZE
DEFAULT_EXTENDED_QUOTA = 20 * DEFAULT_AP_SIZE
# An ATR announcing T=1 with ten historical bytes "APDL-EMU01"; TCK closes it.
_ATR_BODY = bytes.fromhex("3B8A8001") + b"APDL-EMU01"


def _tck(body: bytes) -> int:
    check = 0
    for byte in body[1:]:
        check ^= byte
    return check


ATR = _ATR_BODY + bytes((_tck(_ATR_BODY),))

LIFE_CYCLE_SELECTABLE = 0x07
LIFE_CYCLE_SD_PERSONALIZED = 0x0F
LIFE_CYCLE_LOADED = 0x01
_STATUS_PAGE_BYTES = 240
_STANDARD_LOAD_FILES = {commands.TYPE_A_LOAD_FILE_AID.hex().upper(): ApType.A,
                        commands.TYPE_C_LOAD_FILE_AID.hex().upper(): ApType.C}


class CardReply(Exception):
    """Ends processing of one command with a status word (and optional data)."""

    def __init__(self, sw: int, data: bytes = b"") -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw
        self.data = data


@dataclass
class AppState:
    """One installed card AP."""

    aid: str
    area: str
    load_file: str
    ap_type: str
    size: int
    user_id: str = ""  # hex
    pin: str = ""  # hex
    pin_max_tries: int = 0
    pin_tries_left: int = 0
    auth_key: str = ""  # hex


@dataclass
class LoadFileState:
    """A custom load file brought in with INSTALL [for load] + LOAD."""

    aid: str
    area: str
    size: int


@dataclass
class CardState:
    """Everything that survives a power cycle."""

    card_identifier: str = "1234567890123"
    residence_code: str = "131016"
    regional_quota: int = DEFAULT_REGIONAL_QUOTA
    extended_quota: int = DEFAULT_EXTENDED_QUOTA
    regional_created: bool = False
    apps: dict[str, AppState] = field(default_factory=dict)
    load_files: dict[str, LoadFileState] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CardState:
        """Rebuild from :meth:`to_json` output."""
        state = cls(**{k: v for k, v in data.items() if k not in ("apps", "load_files")})
        state.apps = {k: AppState(**v) for k, v in data.get("apps", {}).items()}
        state.load_files = {k: LoadFileState(**v) for k, v in data.get("load_files", {}).items()}
        return state

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass
class _Session:
    """What a power cycle or reset forgets: selection, authentication, pending load, paging."""

    selected: str = "manager"  # "manager", "area:<name>" or "app:<AID hex>"
    authenticated: bool = False
    pin_verified: bool = False
    card_challenge: bytes = b""
    load_aid: str = ""
    load_area: str = ""
    load_next_block: int = 0
    load_buffer: bytearray = field(default_factory=bytearray)
    status_pages: list[bytes] = field(default_factory=list)


@dataclass
class _Forced:
    sw: int
    ins: int | None
    remaining: int


def _lv_fields(data: bytes, count: int) -> list[bytes]:
    out: list[bytes] = []
    i = 0
    for _ in range(count):
        if i >= len(data) or i + 1 + data[i] > len(data):
            raise CardReply(StatusWord.INCORRECT_DATA)
        out.append(data[i + 1:i + 1 + data[i]])
        i += 1 + data[i]
    return out


def _tlvs(data: bytes) -> dict[int, bytes]:
    try:
        return tlv.as_dict(data)
    except ValueError:
        raise CardReply(StatusWord.INCORRECT_DATA)


class EmulatedCard:
    """The card's command processor. Thread-safe: tests inspect it while pcscd talks to it."""

    def __init__(self, state: CardState | None = None, *, state_path: Path | None = None) -> None:
        if state is None and state_path is not None and state_path.exists():
            state = CardState.from_json(json.loads(state_path.read_text()))
        self.state = state or CardState()
        self.state_path = state_path
        self._session = _Session()
        self._forced: list[_Forced] = []
        self._lock = threading.Lock()
        self._handlers: dict[int, Callable[[CommandApdu], bytes]] = {
            commands.INS_SELECT: self._select,
            commands.INS_GET_STATUS: self._get_status,
            commands.INS_INSTALL: self._install,
            commands.INS_LOAD: self._load,
            commands.INS_DELETE: self._delete,
            commands.INS_GET_DATA: self._get_data,
            commands.INS_VERIFY: self._verify,
            commands.INS_GET_CHALLENGE: self._get_challenge,
            commands.INS_EXTERNAL_AUTHENTICATE: self._external_authenticate,
            commands.INS_INTERNAL_AUTHENTICATE: self._internal_authenticate,
            commands.INS_READ_BINARY: self._read,
            commands.INS_READ_RECORD: self._read,
        }

    # --- control from tests and from the reader link ---

    def power_cycle(self) -> None:
        """Power off/on or reset: forget selection and authentication, keep the card's contents."""
        with self._lock:
            self._session = _Session()

    def load_state(self, state: CardState) -> None:
        """Replace the card's contents (a fresh card for the next test), clearing forced failures."""
        with self._lock:
            self.state = state
            self._session = _Session()
            self._forced.clear()
            self._save()

    def force_status(self, sw: int, *, ins: int | None = None, times: int = 1) -> None:
        """Answer the next ``times`` commands (with instruction ``ins``, or any) with ``sw`` and do nothing."""
        with self._lock:
            self._forced.append(_Forced(sw, ins, times))

    def snapshot(self) -> dict[str, Any]:
        """A copy of the persistent state (AIDs as upper-case hex)."""
        with self._lock:
            return self.state.to_json()

    def installed(self, area: Area | None = None) -> set[str]:
        """AIDs (hex) of the installed APs, in one area or all."""
        with self._lock:
            return {a.aid for a in self.state.apps.values() if area is None or a.area == area.value}

    # --- APDU processing ---

    def process(self, raw: bytes) -> bytes:
        """One command APDU in, one response APDU (data + SW) out."""
        with self._lock:
            try:
                command = CommandApdu.parse(raw)
            except ValueError:
                return StatusWord.WRONG_LENGTH.to_bytes(2, "big")
            try:
                data = self._dispatch(command)
                return data + StatusWord.OK.to_bytes(2, "big")
            except CardReply as reply:
                return reply.data + reply.sw.to_bytes(2, "big")

    def _dispatch(self, command: CommandApdu) -> bytes:
        for forced in self._forced:
            if forced.ins is None or forced.ins == command.ins:
                forced.remaining -= 1
                if forced.remaining <= 0:
                    self._forced.remove(forced)
                raise CardReply(forced.sw)
        if command.cla & 0x7C not in (0x00,):
            raise CardReply(StatusWord.CLA_NOT_SUPPORTED)
        handler = self._handlers.get(command.ins)
        if handler is None:
            raise CardReply(StatusWord.INS_NOT_SUPPORTED)
        gp_command = command.ins in (commands.INS_GET_STATUS, commands.INS_INSTALL, commands.INS_LOAD,
                                     commands.INS_DELETE, commands.INS_GET_DATA)
        if gp_command and self._session.selected.startswith("app:"):
            raise CardReply(StatusWord.INS_NOT_SUPPORTED)  # card APs do not implement card management
        return handler(command)

    def _save(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state.to_json(), indent=1))
        os.replace(tmp, self.state_path)

    # --- areas and memory ---

    def _selected_area(self) -> str | None:
        selected = self._session.selected
        return selected.split(":", 1)[1] if selected.startswith("area:") else None

    def _quota(self, area: str) -> int:
        return self.state.regional_quota if area == Area.REGIONAL else self.state.extended_quota

    def _free(self, area: str) -> int:
        used = sum(a.size for a in self.state.apps.values() if a.area == area)
        used += sum(f.size for f in self.state.load_files.values() if f.area == area)
        return self._quota(area) - used

    def _areas(self) -> list[str]:
        return ([Area.REGIONAL.value] if self.state.regional_created else []) + [Area.EXTENDED.value]

    def _aid_in_use(self, aid: str) -> bool:
        sd_aids = {commands.CARD_MANAGER_AID.hex().upper(), commands.EXTENDED_AREA_AID.hex().upper()}
        if self.state.regional_created:
            sd_aids.add(commands.REGIONAL_AREA_AID.hex().upper())
        return aid in self.state.apps or aid in self.state.load_files or aid in sd_aids or aid in _STANDARD_LOAD_FILES

    # --- ISO/IEC 7816-4 and GlobalPlatform commands ---

    def _select(self, command: CommandApdu) -> bytes:
        if command.p1 != 0x04:
            raise CardReply(StatusWord.INCORRECT_P1P2)
        aid = command.data.hex().upper()
        if command.data == commands.CARD_MANAGER_AID:
            target = "manager"
        elif command.data == commands.EXTENDED_AREA_AID:
            target = f"area:{Area.EXTENDED.value}"
        elif command.data == commands.REGIONAL_AREA_AID and self.state.regional_created:
            target = f"area:{Area.REGIONAL.value}"
        elif aid in self.state.apps:
            target = f"app:{aid}"
        else:
            raise CardReply(StatusWord.NOT_FOUND)
        self._session = _Session(selected=target)
        return tlv.encode(0x6F, tlv.encode(0x84, command.data) + tlv.encode(0xA5, b""))

    def _status_entries(self, p1: int, prefix: str) -> list[bytes]:
        area = self._selected_area()
        entries: list[bytes] = []
        if p1 == commands.STATUS_ISD and area is None:
            entries.append(tlv.encode(0xE3, tlv.encode(0x4F, commands.CARD_MANAGER_AID)
                                      + tlv.encode(0x9F70, bytes((LIFE_CYCLE_SD_PERSONALIZED,)))
                                      + tlv.encode(0xC5, bytes.fromhex("9E0000"))))
        elif p1 == commands.STATUS_APPS_AND_SDS:
            if area is None:
                for name in self._areas():
                    entries.append(tlv.encode(0xE3, tlv.encode(0x4F, Area(name).aid)
                                              + tlv.encode(0x9F70, bytes((LIFE_CYCLE_SD_PERSONALIZED,)))
                                              + tlv.encode(0xC5, bytes.fromhex("A00000"))
                                              + tlv.encode(0xCC, commands.CARD_MANAGER_AID)))
            for app in self.state.apps.values():
                if area is None or app.area == area:
                    entries.append(tlv.encode(0xE3, tlv.encode(0x4F, bytes.fromhex(app.aid))
                                              + tlv.encode(0x9F70, bytes((LIFE_CYCLE_SELECTABLE,)))
                                              + tlv.encode(0xC5, bytes(3))
                                              + tlv.encode(0xCC, Area(app.area).aid)))
        elif p1 == commands.STATUS_LOAD_FILES:
            files = [(aid, Area.EXTENDED.value) for aid in _STANDARD_LOAD_FILES]
            files += [(f.aid, f.area) for f in self.state.load_files.values()]
            for aid, owner in files:
                if area is None or owner == area:
                    entries.append(tlv.encode(0xE2, tlv.encode(0x4F, bytes.fromhex(aid))
                                              + tlv.encode(0x9F70, bytes((LIFE_CYCLE_LOADED,)))
                                              + tlv.encode(0xCC, Area(owner).aid)))
        elif p1 != commands.STATUS_ISD:
            raise CardReply(StatusWord.INCORRECT_P1P2)
        return [e for e in entries if tlv.as_dict(tlv.as_dict(e).popitem()[1])[0x4F].hex().upper().startswith(prefix)]

    def _get_status(self, command: CommandApdu) -> bytes:
        if command.p2 == commands.STATUS_NEXT_TLV:
            if not self._session.status_pages:
                raise CardReply(StatusWord.INCORRECT_P1P2)
        elif command.p2 == commands.STATUS_FIRST_TLV:
            prefix = _tlvs(command.data).get(0x4F, b"").hex().upper()
            entries = self._status_entries(command.p1, prefix)
            if not entries:
                raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)
            pages: list[bytes] = [b""]
            for entry in entries:
                if len(pages[-1]) + len(entry) > _STATUS_PAGE_BYTES:
                    pages.append(b"")
                pages[-1] += entry
            self._session.status_pages = pages
        else:
            raise CardReply(StatusWord.INCORRECT_P1P2)
        page = self._session.status_pages.pop(0)
        if self._session.status_pages:
            raise CardReply(StatusWord.MORE_DATA, page)
        return page

    def _install(self, command: CommandApdu) -> bytes:
        if command.p1 == commands.INSTALL_FOR_LOAD:
            return self._install_for_load(command)
        if command.p1 not in (commands.INSTALL_FOR_INSTALL, commands.INSTALL_FOR_INSTALL_AND_MAKE_SELECTABLE):
            raise CardReply(StatusWord.INCORRECT_P1P2)
        elf, _module, aid_bytes, _privileges, params, _token = _lv_fields(command.data, 6)
        aid = aid_bytes.hex().upper()
        if elf == commands.SSD_LOAD_FILE_AID:
            return self._create_regional_area(aid_bytes)
        area = self._selected_area()
        if area is None:
            raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)  # APs go into an area, not the card manager
        if not 5 <= len(aid_bytes) <= 16:
            raise CardReply(StatusWord.INCORRECT_DATA)
        elf_hex = elf.hex().upper()
        if elf_hex not in _STANDARD_LOAD_FILES and elf_hex not in self.state.load_files:
            raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)
        if self._aid_in_use(aid):
            raise CardReply(StatusWord.ALREADY_EXISTS)
        fields = _tlvs(params)
        app_params = _tlvs(fields.get(0xC9, b""))
        size = int.from_bytes(_tlvs(fields.get(0xEF, b"")).get(0xC8, b""), "big")
        try:
            ap_type = ApType(app_params.get(commands.PARAM_AP_TYPE, b"").decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CardReply(StatusWord.INCORRECT_DATA)
        if size <= 0:
            raise CardReply(StatusWord.INCORRECT_DATA)
        app = AppState(aid=aid, area=area, load_file=elf_hex, ap_type=ap_type.value, size=size,
                       user_id=app_params.get(commands.PARAM_USER_ID, b"").hex().upper())
        if ap_type is ApType.A:
            pin = app_params.get(commands.PARAM_PIN, b"")
            tries = app_params.get(commands.PARAM_PIN_TRIES, b"\x03")
            key = app_params.get(commands.PARAM_AUTH_KEY, b"")
            if not pin or len(key) != 16 or len(tries) != 1 or not 1 <= tries[0] <= 15:
                raise CardReply(StatusWord.INCORRECT_DATA)
            app.pin, app.pin_max_tries, app.pin_tries_left, app.auth_key = pin.hex(), tries[0], tries[0], key.hex()
        if size > self._free(area):
            raise CardReply(StatusWord.NOT_ENOUGH_MEMORY)
        self.state.apps[aid] = app
        self._save()
        return b"\x00"

    def _create_regional_area(self, aid: bytes) -> bytes:
        if self._session.selected != "manager":
            raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)
        if aid != commands.REGIONAL_AREA_AID:
            raise CardReply(StatusWord.INCORRECT_DATA)
        if self.state.regional_created:
            raise CardReply(StatusWord.ALREADY_EXISTS)
        self.state.regional_created = True
        self._save()
        return b"\x00"

    def _install_for_load(self, command: CommandApdu) -> bytes:
        elf, _sd, _hash, params, _token = _lv_fields(command.data, 5)
        aid = elf.hex().upper()
        area = self._selected_area() or Area.EXTENDED.value
        if not 5 <= len(elf) <= 16:
            raise CardReply(StatusWord.INCORRECT_DATA)
        if self._aid_in_use(aid):
            raise CardReply(StatusWord.ALREADY_EXISTS)
        announced = int.from_bytes(_tlvs(_tlvs(params).get(0xEF, b"")).get(0xC6, b""), "big")
        if announced > self._free(area):
            raise CardReply(StatusWord.NOT_ENOUGH_MEMORY)
        session = self._session
        session.load_aid, session.load_area, session.load_next_block = aid, area, 0
        session.load_buffer = bytearray()
        return b"\x00"

    def _load(self, command: CommandApdu) -> bytes:
        session = self._session
        if not session.load_aid:
            raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)
        if command.p2 != session.load_next_block:
            raise CardReply(StatusWord.INCORRECT_P1P2)
        session.load_buffer += command.data
        session.load_next_block += 1
        if not command.p1 & 0x80:
            return b""
        aid, area = session.load_aid, session.load_area
        session.load_aid = ""
        try:
            (tag, body), = tlv.iterate(bytes(session.load_buffer))
        except ValueError:
            raise CardReply(StatusWord.INCORRECT_DATA)
        if tag != 0xC4:
            raise CardReply(StatusWord.INCORRECT_DATA)
        if len(body) > self._free(area):
            raise CardReply(StatusWord.NOT_ENOUGH_MEMORY)
        self.state.load_files[aid] = LoadFileState(aid=aid, area=area, size=len(body))
        self._save()
        return b"\x00"

    def _delete(self, command: CommandApdu) -> bytes:
        aid_bytes = _tlvs(command.data).get(0x4F)
        if aid_bytes is None:
            raise CardReply(StatusWord.INCORRECT_DATA)
        aid = aid_bytes.hex().upper()
        area = self._selected_area()
        if aid in self.state.apps and area in (None, self.state.apps[aid].area):
            del self.state.apps[aid]
        elif aid in self.state.load_files and area in (None, self.state.load_files[aid].area):
            if any(a.load_file == aid for a in self.state.apps.values()):
                raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)
            del self.state.load_files[aid]
        elif aid_bytes == commands.REGIONAL_AREA_AID and self.state.regional_created and area is None:
            if self._free(Area.REGIONAL.value) != self.state.regional_quota:
                raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)  # delete its APs first
            self.state.regional_created = False
        elif self._aid_in_use(aid):
            raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)  # card manager, extended area, standard files
        else:
            raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)
        self._save()
        return b"\x00"

    def _get_data(self, command: CommandApdu) -> bytes:
        tag = (command.p1 << 8) | command.p2
        area = self._selected_area()
        if tag == commands.TAG_EXTENDED_CARD_RESOURCES:
            areas = [area] if area is not None else self._areas()
            count = sum(1 for a in self.state.apps.values() if a.area in areas)
            free = sum(self._free(a) for a in areas)
            body = (tlv.encode(0x81, count.to_bytes(1, "big")) + tlv.encode(0x82, free.to_bytes(4, "big"))
                    + tlv.encode(0x83, (0x0800).to_bytes(2, "big")))
            return tlv.encode(tag, body)
        if tag == commands.TAG_CARD_INFO and area is None:
            body = (tlv.encode(0xC1, self.state.card_identifier.encode("ascii"))
                    + tlv.encode(0xC2, self.state.residence_code.encode("ascii")))
            return tlv.encode(tag, body)
        raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)

    def _selected_app(self) -> AppState:
        selected = self._session.selected
        if not selected.startswith("app:"):
            raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)
        return self.state.apps[selected[4:]]

    def _verify(self, command: CommandApdu) -> bytes:
        app = self._selected_app()
        if command.p2 != commands.PIN_REFERENCE or command.p1 != 0x00:
            raise CardReply(StatusWord.INCORRECT_P1P2)
        if app.ap_type != ApType.A:
            raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)  # type C has no PIN
        if app.pin_tries_left == 0:
            raise CardReply(StatusWord.PIN_BLOCKED)
        if not command.data:
            if self._session.pin_verified:
                return b""
            raise CardReply(0x63C0 | app.pin_tries_left)
        if secrets.compare_digest(command.data, bytes.fromhex(app.pin)):
            app.pin_tries_left = app.pin_max_tries
            self._session.pin_verified = True
            self._save()
            return b""
        app.pin_tries_left -= 1
        self._session.pin_verified = False
        self._save()
        raise CardReply(0x63C0 | app.pin_tries_left)

    def _auth_key(self) -> bytes:
        app = self._selected_app()
        if app.ap_type != ApType.A:
            raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)  # type C has no key
        return bytes.fromhex(app.auth_key)

    def _get_challenge(self, command: CommandApdu) -> bytes:
        self._auth_key()
        self._session.card_challenge = secrets.token_bytes(8)
        return self._session.card_challenge

    def _external_authenticate(self, command: CommandApdu) -> bytes:
        key = self._auth_key()
        challenge, self._session.card_challenge = self._session.card_challenge, b""
        if not challenge:
            raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)  # GET CHALLENGE first; each challenge once
        if not secrets.compare_digest(command.data, auth.terminal_cryptogram(key, challenge)):
            self._session.authenticated = False
            raise CardReply(StatusWord.VERIFICATION_FAILED)
        self._session.authenticated = True
        return b""

    def _internal_authenticate(self, command: CommandApdu) -> bytes:
        key = self._auth_key()
        if len(command.data) != 8:
            raise CardReply(StatusWord.WRONG_LENGTH)
        return auth.card_cryptogram(key, command.data)

    def _read(self, command: CommandApdu) -> bytes:
        app = self._selected_app()
        if app.ap_type == ApType.A and not (self._session.authenticated and self._session.pin_verified):
            raise CardReply(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        if command.ins == commands.INS_READ_RECORD and command.p1 != 1:
            raise CardReply(StatusWord.RECORD_NOT_FOUND)
        return bytes.fromhex(app.user_id)
