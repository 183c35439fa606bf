"""The emulated card manager and area security domains: SELECT, GET STATUS, INSTALL, LOAD, DELETE, GET DATA.

Each function handles one command against the card's state and channel and returns the response data,
or raises CardReply with the status word.
"""

from __future__ import annotations

from apdl.card import commands, tlv
from apdl.card.apdu import CommandApdu, StatusWord
from apdl.card.commands import ApType, Area
from apdl.emulator.state import (
    STANDARD_LOAD_FILES,
    AppState,
    CardReply,
    CardState,
    Channel,
    LoadFileState,
    lv_fields,
    tlvs,
)

LIFE_CYCLE_SELECTABLE = 0x07
LIFE_CYCLE_SD_PERSONALIZED = 0x0F
LIFE_CYCLE_LOADED = 0x01
STATUS_PAGE_BYTES = 232  # GET STATUS answers fit a short APDU even enciphered (+ padding to 240 + R-MAC 8); 6310 pages


def select(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """SELECT by AID: the card manager, an existing area or an installed AP; 6A82 otherwise."""
    if command.p1 != 0x04:
        raise CardReply(StatusWord.INCORRECT_P1P2)
    aid = command.data.hex().upper()
    if command.data == commands.CARD_MANAGER_AID:
        target = "manager"
    elif command.data == commands.EXTENDED_AREA_AID:
        target = f"area:{Area.EXTENDED.value}"
    elif command.data == commands.REGIONAL_AREA_AID and state.regional_created:
        target = f"area:{Area.REGIONAL.value}"
    elif aid in state.apps:
        target = f"app:{aid}"
    else:
        raise CardReply(StatusWord.NOT_FOUND)
    channel.restart(selected=target)  # a new selection forgets authentication, pending load and paging
    return tlv.encode(0x6F, tlv.encode(0x84, command.data) + tlv.encode(0xA5, b""))


def _entry(tag: int, aid: bytes, life_cycle: int, *, privileges: bytes | None, domain: bytes | None) -> bytes:
    body = tlv.encode(0x4F, aid) + tlv.encode(0x9F70, bytes((life_cycle,)))
    if privileges is not None:
        body += tlv.encode(0xC5, privileges)
    if domain is not None:
        body += tlv.encode(0xCC, domain)
    return tlv.encode(tag, body)


def _status_entries(state: CardState, channel: Channel, p1: int) -> list[tuple[bytes, bytes]]:
    """(AID, E2/E3 entry) pairs visible from the selected security domain."""
    area = channel.selected_area()
    entries: list[tuple[bytes, bytes]] = []
    if p1 == commands.STATUS_ISD:
        if area is None:
            aid = commands.CARD_MANAGER_AID
            entries.append((aid, _entry(0xE3, aid, LIFE_CYCLE_SD_PERSONALIZED, privileges=bytes.fromhex("9E0000"),
                                        domain=None)))
    elif p1 == commands.STATUS_APPS_AND_SDS:
        if area is None:
            for name in state.areas():
                aid = Area(name).aid
                entries.append((aid, _entry(0xE3, aid, LIFE_CYCLE_SD_PERSONALIZED, privileges=bytes.fromhex("A00000"),
                                            domain=commands.CARD_MANAGER_AID)))
        for app in state.apps.values():
            if area is None or app.area == area:
                aid = bytes.fromhex(app.aid)
                entries.append((aid, _entry(0xE3, aid, LIFE_CYCLE_SELECTABLE, privileges=bytes(3),
                                            domain=Area(app.area).aid)))
    elif p1 == commands.STATUS_LOAD_FILES:
        files = [(aid, Area.EXTENDED.value) for aid in STANDARD_LOAD_FILES]
        files += [(f.aid, f.area) for f in state.load_files.values()]
        for hex_aid, owner in files:
            if area is None or owner == area:
                aid = bytes.fromhex(hex_aid)
                entries.append((aid, _entry(0xE2, aid, LIFE_CYCLE_LOADED, privileges=None, domain=Area(owner).aid)))
    else:
        raise CardReply(StatusWord.INCORRECT_P1P2)
    return entries


def get_status(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """GET STATUS in TLV format, paged: 6310 while more entries follow (ask again with P2 03)."""
    if command.p2 == commands.STATUS_NEXT_TLV:
        if not channel.status_pages:
            raise CardReply(StatusWord.INCORRECT_P1P2)
    elif command.p2 == commands.STATUS_FIRST_TLV:
        prefix = tlvs(command.data).get(0x4F, b"")
        entries = [e for aid, e in _status_entries(state, channel, command.p1) if aid.startswith(prefix)]
        if not entries:
            raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)
        pages: list[bytes] = [b""]
        for entry in entries:
            if len(pages[-1]) + len(entry) > STATUS_PAGE_BYTES:
                pages.append(b"")
            pages[-1] += entry
        channel.status_pages = pages
    else:
        raise CardReply(StatusWord.INCORRECT_P1P2)
    page = channel.status_pages.pop(0)
    if channel.status_pages:
        raise CardReply(StatusWord.MORE_DATA, page)
    return page


def install(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """INSTALL [for load], or [for install (and make selectable)] of an AP or of the regional area."""
    if command.p1 == commands.INSTALL_FOR_LOAD:
        return _install_for_load(state, channel, command)
    if command.p1 not in (commands.INSTALL_FOR_INSTALL, commands.INSTALL_FOR_INSTALL_AND_MAKE_SELECTABLE):
        raise CardReply(StatusWord.INCORRECT_P1P2)
    elf, _module, aid_bytes, _privileges, params, _token = lv_fields(command.data, 6)
    if elf == commands.SSD_LOAD_FILE_AID:
        return _create_regional_area(state, channel, aid_bytes)
    area = channel.selected_area()
    if area is None:
        raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)  # APs go into an area, not the card manager
    if not 5 <= len(aid_bytes) <= 16:
        raise CardReply(StatusWord.INCORRECT_DATA)
    elf_hex, aid = elf.hex().upper(), aid_bytes.hex().upper()
    if elf_hex not in STANDARD_LOAD_FILES and elf_hex not in state.load_files:
        raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)
    if state.aid_in_use(aid):
        raise CardReply(StatusWord.ALREADY_EXISTS)
    fields = tlvs(params)
    app_params = tlvs(fields.get(0xC9, b""))
    size = int.from_bytes(tlvs(fields.get(0xEF, b"")).get(0xC8, b""), "big")
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
    if size > state.free(area):
        raise CardReply(StatusWord.NOT_ENOUGH_MEMORY)
    state.apps[aid] = app
    return b"\x00"


def _create_regional_area(state: CardState, channel: Channel, aid: bytes) -> bytes:
    """地域住民向け領域設定: only from the card manager, only once."""
    if channel.selected != "manager":
        raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)
    if aid != commands.REGIONAL_AREA_AID:
        raise CardReply(StatusWord.INCORRECT_DATA)
    if state.regional_created:
        raise CardReply(StatusWord.ALREADY_EXISTS)
    state.regional_created = True
    return b"\x00"


def _install_for_load(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    elf, _sd, _hash, params, _token = lv_fields(command.data, 5)
    aid = elf.hex().upper()
    area = channel.selected_area() or Area.EXTENDED.value
    if not 5 <= len(elf) <= 16:
        raise CardReply(StatusWord.INCORRECT_DATA)
    if state.aid_in_use(aid):
        raise CardReply(StatusWord.ALREADY_EXISTS)
    announced = int.from_bytes(tlvs(tlvs(params).get(0xEF, b"")).get(0xC6, b""), "big")
    if announced > state.free(area):
        raise CardReply(StatusWord.NOT_ENOUGH_MEMORY)
    channel.load_aid, channel.load_area, channel.load_next_block = aid, area, 0
    channel.load_buffer = bytearray()
    return b"\x00"


def load(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """LOAD blocks in sequence after INSTALL [for load]; the last block (P1 80) stores the load file."""
    if not channel.load_aid:
        raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)
    if command.p2 != channel.load_next_block:
        raise CardReply(StatusWord.INCORRECT_P1P2)
    channel.load_buffer += command.data
    channel.load_next_block += 1
    if not command.p1 & 0x80:
        return b""
    aid, area = channel.load_aid, channel.load_area
    channel.load_aid = ""
    try:
        (tag, body), = tlv.iterate(bytes(channel.load_buffer))
    except ValueError:
        raise CardReply(StatusWord.INCORRECT_DATA)
    if tag != 0xC4:
        raise CardReply(StatusWord.INCORRECT_DATA)
    if len(body) > state.free(area):
        raise CardReply(StatusWord.NOT_ENOUGH_MEMORY)
    state.load_files[aid] = LoadFileState(aid=aid, area=area, size=len(body))
    return b"\x00"


def delete(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """DELETE an AP, an unused load file, or the empty regional area; 6A88 for an unknown AID."""
    aid_bytes = tlvs(command.data).get(0x4F)
    if aid_bytes is None:
        raise CardReply(StatusWord.INCORRECT_DATA)
    aid = aid_bytes.hex().upper()
    area = channel.selected_area()
    if aid in state.apps and area in (None, state.apps[aid].area):
        del state.apps[aid]
    elif aid in state.load_files and area in (None, state.load_files[aid].area):
        if any(a.load_file == aid for a in state.apps.values()):
            raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)
        del state.load_files[aid]
    elif aid_bytes == commands.REGIONAL_AREA_AID and state.regional_created and area is None:
        if state.free(Area.REGIONAL.value) != state.regional_quota:
            raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)  # delete its APs first
        state.regional_created = False
    elif state.aid_in_use(aid):
        raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)  # card manager, extended area, standard files
    else:
        raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)
    return b"\x00"


def get_data(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """GET DATA FF21 (installed count and free bytes of the selected area, or of all) or DF20 (card info)."""
    tag = (command.p1 << 8) | command.p2
    area = channel.selected_area()
    if tag == commands.TAG_EXTENDED_CARD_RESOURCES:
        areas = [area] if area is not None else state.areas()
        count = sum(1 for a in state.apps.values() if a.area in areas)
        free = sum(state.free(a) for a in areas)
        body = (tlv.encode(0x81, count.to_bytes(1, "big")) + tlv.encode(0x82, free.to_bytes(4, "big"))
                + tlv.encode(0x83, (0x0800).to_bytes(2, "big")))
        return tlv.encode(tag, body)
    if tag == commands.TAG_CARD_INFO and area is None:
        body = (tlv.encode(0xC1, state.card_identifier.encode("ascii"))
                + tlv.encode(0xC2, state.residence_code.encode("ascii")))
        return tlv.encode(tag, body)
    raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)
