"""Builders for the ISO/IEC 7816-4 and GlobalPlatform Card Specification commands the adapter sends.

Instruction and P1 values follow the GlobalPlatform Card Specification (and GlobalPlatformPro's
constants). The AIDs of the card manager's areas and of the preloaded standard load files are those
of this project's emulator: the real card's values are not public.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from apdl.card import tlv
from apdl.card.apdu import CommandApdu

CLA_ISO = 0x00
CLA_GP = 0x80

INS_SELECT = 0xA4
INS_GET_STATUS = 0xF2
INS_INSTALL = 0xE6
INS_LOAD = 0xE8
INS_DELETE = 0xE4
INS_GET_DATA = 0xCA
INS_VERIFY = 0x20
INS_CHANGE_REFERENCE_DATA = 0x24
INS_RESET_RETRY_COUNTER = 0x2C
INS_GET_CHALLENGE = 0x84
INS_EXTERNAL_AUTHENTICATE = 0x82
INS_INTERNAL_AUTHENTICATE = 0x88
INS_READ_BINARY = 0xB0
INS_READ_RECORD = 0xB2

# INSTALL P1 (GP CS 11.5.2.1): for load, for install, make selectable, both.
INSTALL_FOR_LOAD = 0x02
INSTALL_FOR_INSTALL = 0x04
INSTALL_MAKE_SELECTABLE = 0x08
INSTALL_FOR_INSTALL_AND_MAKE_SELECTABLE = 0x0C

# GET STATUS P1 (GP CS 11.4.2.1).
STATUS_ISD = 0x80
STATUS_APPS_AND_SDS = 0x40
STATUS_LOAD_FILES = 0x20
# GET STATUS P2: TLV format, first or next occurrence.
STATUS_FIRST_TLV = 0x02
STATUS_NEXT_TLV = 0x03

TAG_EXTENDED_CARD_RESOURCES = 0xFF21
TAG_CARD_INFO = 0xDF20  # proprietary to the emulator: card identifier and residence municipality code
PIN_REFERENCE = 0x81  # VERIFY P2: specific (application) reference data

CARD_MANAGER_AID = bytes.fromhex("A000000151000000")  # GP issuer security domain
SSD_LOAD_FILE_AID = bytes.fromhex("A0000001515350")  # GP supplementary security domain package
SSD_MODULE_AID = bytes.fromhex("A000000151535041")
# The two free areas, modelled as supplementary security domains with memory quotas.
REGIONAL_AREA_AID = bytes.fromhex("D392F0000101")  # 地域住民向け領域
EXTENDED_AREA_AID = bytes.fromhex("D392F0000102")  # 拡張利用領域
# Preloaded load files of the standard AP types (業務タイプA, 共通カードAP = type C).
TYPE_A_LOAD_FILE_AID = bytes.fromhex("D392F00001A0")
TYPE_C_LOAD_FILE_AID = bytes.fromhex("D392F00001C0")

# Application-specific install parameters (inside tag C9) understood by the emulator's AP types.
PARAM_AP_TYPE = 0x80
PARAM_PIN = 0x81
PARAM_PIN_TRIES = 0x82
PARAM_AUTH_KEY = 0x83
PARAM_USER_ID = 0x84

LOAD_BLOCK_SIZE = 224  # 224 + ISO padding (240) + C-MAC (8) still fits a short APDU under SCP03


class Area(enum.StrEnum):
    """The card's two free areas."""

    REGIONAL = "regional"  # 地域住民向け領域: only the residence municipality
    EXTENDED = "extended"  # 拡張利用領域: any permitted provider

    @property
    def aid(self) -> bytes:
        """AID of the area's security domain."""
        return REGIONAL_AREA_AID if self is Area.REGIONAL else EXTENDED_AREA_AID


class ApType(enum.StrEnum):
    """カードAPの種類 modelled by the reference adapter."""

    A = "A"  # 業務タイプA: records, mutual authentication + PIN
    C = "C"  # 共通カードAP: readable without authentication

    @property
    def load_file_aid(self) -> bytes:
        """AID of the preloaded load file for this type."""
        return TYPE_A_LOAD_FILE_AID if self is ApType.A else TYPE_C_LOAD_FILE_AID


@dataclass(frozen=True)
class ApSpec:
    """What INSTALL needs to create one card AP instance."""

    aid: bytes
    ap_type: ApType
    size_bytes: int
    user_id: bytes = b""
    pin: bytes = b""  # type A only
    pin_max_tries: int = 3
    auth_key: bytes = b""  # type A only: 16-byte AES key for mutual authentication
    load_file_aid: bytes | None = None  # None: the type's preloaded standard load file

    def __post_init__(self) -> None:
        if not 5 <= len(self.aid) <= 16:
            raise ValueError("an AID has 5 to 16 bytes")
        if not 0 < self.size_bytes <= 0xFFFF:
            raise ValueError("size_bytes must be 1..65535")
        if self.ap_type is ApType.A and (not self.pin or len(self.auth_key) != 16 or not 1 <= self.pin_max_tries <= 15):
            raise ValueError("type A needs a PIN, 1..15 tries and a 16-byte authentication key")


def _lv(value: bytes) -> bytes:
    return bytes((len(value),)) + value


def select(aid: bytes) -> CommandApdu:
    """SELECT by DF name (AID), first or only occurrence, FCI returned."""
    return CommandApdu(CLA_ISO, INS_SELECT, 0x04, 0x00, aid, le=256)


def get_status(p1: int, *, first: bool = True, aid_prefix: bytes = b"") -> CommandApdu:
    """GET STATUS in TLV format; ``aid_prefix`` empty matches everything."""
    p2 = STATUS_FIRST_TLV if first else STATUS_NEXT_TLV
    return CommandApdu(CLA_GP, INS_GET_STATUS, p1, p2, tlv.encode(0x4F, aid_prefix), le=256)


def install_for_install(*, load_file_aid: bytes, module_aid: bytes, aid: bytes, privileges: int,
                        app_params: bytes, size_bytes: int | None) -> CommandApdu:
    """INSTALL [for install and make selectable] with C9 application parameters and an optional memory quota."""
    params = tlv.encode(0xC9, app_params)
    if size_bytes is not None:
        params += tlv.encode(0xEF, tlv.encode(0xC8, size_bytes.to_bytes(2, "big")))
    data = (_lv(load_file_aid) + _lv(module_aid) + _lv(aid) + _lv(bytes((privileges,)))
            + _lv(params) + _lv(b""))
    return CommandApdu(CLA_GP, INS_INSTALL, INSTALL_FOR_INSTALL_AND_MAKE_SELECTABLE, 0x00, data, le=256)


def install_ap(ap: ApSpec) -> CommandApdu:
    """INSTALL [for install and make selectable] of one card AP from its load file."""
    params = tlv.encode(PARAM_AP_TYPE, ap.ap_type.value.encode())
    if ap.user_id:
        params += tlv.encode(PARAM_USER_ID, ap.user_id)
    if ap.ap_type is ApType.A:
        params += (tlv.encode(PARAM_PIN, ap.pin) + tlv.encode(PARAM_PIN_TRIES, bytes((ap.pin_max_tries,)))
                   + tlv.encode(PARAM_AUTH_KEY, ap.auth_key))
    elf = ap.load_file_aid or ap.ap_type.load_file_aid
    return install_for_install(load_file_aid=elf, module_aid=elf, aid=ap.aid, privileges=0x00,
                               app_params=params, size_bytes=ap.size_bytes)


def create_regional_area() -> CommandApdu:
    """地域住民向け領域設定: install the regional area's supplementary security domain."""
    return install_for_install(load_file_aid=SSD_LOAD_FILE_AID, module_aid=SSD_MODULE_AID, aid=REGIONAL_AREA_AID,
                               privileges=0xA0, app_params=b"", size_bytes=None)


def install_for_load(load_file_aid: bytes, *, size_bytes: int) -> CommandApdu:
    """INSTALL [for load]: announce a load file and the non-volatile code space it needs."""
    params = tlv.encode(0xEF, tlv.encode(0xC6, size_bytes.to_bytes(2, "big")))
    data = _lv(load_file_aid) + _lv(b"") + _lv(b"") + _lv(params) + _lv(b"")
    return CommandApdu(CLA_GP, INS_INSTALL, INSTALL_FOR_LOAD, 0x00, data, le=256)


def load_blocks(load_file: bytes) -> list[CommandApdu]:
    """LOAD commands carrying ``C4`` + the load file, P1 80 on the last block, P2 the block number."""
    payload = tlv.encode(0xC4, load_file)
    chunks = [payload[i:i + LOAD_BLOCK_SIZE] for i in range(0, len(payload), LOAD_BLOCK_SIZE)]
    if len(chunks) > 256:
        raise ValueError("load file too large for 256 blocks")
    return [CommandApdu(CLA_GP, INS_LOAD, 0x80 if n == len(chunks) - 1 else 0x00, n, chunk, le=256)
            for n, chunk in enumerate(chunks)]


def delete(aid: bytes) -> CommandApdu:
    """DELETE of one application, security domain or load file by AID."""
    return CommandApdu(CLA_GP, INS_DELETE, 0x00, 0x00, tlv.encode(0x4F, aid), le=256)


def get_data(tag: int) -> CommandApdu:
    """GET DATA of a two-byte tag (FF21 extended card resources, DF20 card information)."""
    return CommandApdu(CLA_GP, INS_GET_DATA, tag >> 8, tag & 0xFF, le=256)


def verify(pin: bytes | None) -> CommandApdu:
    """VERIFY against the selected AP's PIN; ``None`` asks only for the retry counter."""
    return CommandApdu(CLA_ISO, INS_VERIFY, 0x00, PIN_REFERENCE, pin or b"")


def change_pin(old: bytes, new: bytes) -> CommandApdu:
    """CHANGE REFERENCE DATA: the current PIN followed by the new one."""
    return CommandApdu(CLA_ISO, INS_CHANGE_REFERENCE_DATA, 0x00, PIN_REFERENCE, old + new)


def reset_retry_counter(new_pin: bytes | None) -> CommandApdu:
    """RESET RETRY COUNTER: P1 02 with a new PIN, or P1 03 to unblock and keep the PIN."""
    if new_pin:
        return CommandApdu(CLA_ISO, INS_RESET_RETRY_COUNTER, 0x02, PIN_REFERENCE, new_pin)
    return CommandApdu(CLA_ISO, INS_RESET_RETRY_COUNTER, 0x03, PIN_REFERENCE)


def get_challenge() -> CommandApdu:
    """GET CHALLENGE: eight random bytes from the card."""
    return CommandApdu(CLA_ISO, INS_GET_CHALLENGE, 0x00, 0x00, le=8)


def external_authenticate(cryptogram: bytes) -> CommandApdu:
    """EXTERNAL AUTHENTICATE: the terminal's answer to the card's challenge."""
    return CommandApdu(CLA_ISO, INS_EXTERNAL_AUTHENTICATE, 0x00, 0x00, cryptogram)


def internal_authenticate(challenge: bytes) -> CommandApdu:
    """INTERNAL AUTHENTICATE: the card proves its key over the terminal's challenge."""
    return CommandApdu(CLA_ISO, INS_INTERNAL_AUTHENTICATE, 0x00, 0x00, challenge, le=256)


def read_binary() -> CommandApdu:
    """READ BINARY of the selected AP's data from offset 0."""
    return CommandApdu(CLA_ISO, INS_READ_BINARY, 0x00, 0x00, le=256)


def read_record(number: int = 1) -> CommandApdu:
    """READ RECORD ``number`` of the selected AP's current file."""
    return CommandApdu(CLA_ISO, INS_READ_RECORD, number, 0x04, le=256)
