"""The emulated card's contents (kept across power cycles) and its per-power-up channel state."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from apdl.card import commands, tlv
from apdl.card.apdu import StatusWord
from apdl.card.commands import ApType, Area
from apdl.card.diversification import MasterKeys, new_kdd
from apdl.card.scp03 import CardChannel

DEFAULT_AP_SIZE = 2048
# Seed 003: the regional area holds about ten APs, the extended area about twenty of equal size.
DEFAULT_REGIONAL_QUOTA = 10 * DEFAULT_AP_SIZE
DEFAULT_EXTENDED_QUOTA = 20 * DEFAULT_AP_SIZE
STANDARD_LOAD_FILES = {commands.TYPE_A_LOAD_FILE_AID.hex().upper(): ApType.A,
                       commands.TYPE_C_LOAD_FILE_AID.hex().upper(): ApType.C}


class CardReply(Exception):
    """Ends processing of one command with a status word (and optional data)."""

    def __init__(self, sw: int, data: bytes = b"") -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw
        self.data = data


@dataclass
class AppState:
    """One installed card AP (binary values as upper-case hex, so the state is plain JSON)."""

    aid: str
    area: str
    load_file: str
    ap_type: str
    size: int
    user_id: str = ""
    pin: str = ""
    pin_max_tries: int = 0
    pin_tries_left: int = 0
    auth_key: str = ""


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
    scp03_keys: str = ""  # the card's SCP03 key set as VV:ENC:MAC:DEK hex; empty: no secure channel (open card manager)
    kdd: str = ""  # key diversification data (10 bytes hex) the card gives in INITIALIZE UPDATE; empty: zeros
    apps: dict[str, AppState] = field(default_factory=dict)
    load_files: dict[str, LoadFileState] = field(default_factory=dict)

    @classmethod
    def issued(cls, master: MasterKeys, *, kdd: bytes | None = None, **fields: Any) -> CardState:
        """A new card personalised as the card issuer would: fresh diversification data (or ``kdd``) and the
        static keys derived from ``master`` and it. The card holds only its own keys, never the master."""
        kdd = new_kdd() if kdd is None else kdd
        return cls(scp03_keys=master.for_card(kdd).to_hex(), kdd=kdd.hex().upper(), **fields)

    def kdd_bytes(self) -> bytes:
        """The diversification data as bytes (zeros when the card was issued without)."""
        return bytes.fromhex(self.kdd) if self.kdd else bytes(10)

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

    def areas(self) -> list[str]:
        """The areas that exist on this card."""
        return ([Area.REGIONAL.value] if self.regional_created else []) + [Area.EXTENDED.value]

    def quota(self, area: str) -> int:
        """Bytes the area may hold."""
        return self.regional_quota if area == Area.REGIONAL else self.extended_quota

    def free(self, area: str) -> int:
        """Bytes still free in the area (APs and load files count against it)."""
        used = sum(a.size for a in self.apps.values() if a.area == area)
        used += sum(f.size for f in self.load_files.values() if f.area == area)
        return self.quota(area) - used

    def aid_in_use(self, aid: str) -> bool:
        """True when an AP, load file or security domain already has this AID."""
        sd_aids = {commands.CARD_MANAGER_AID.hex().upper(), commands.EXTENDED_AREA_AID.hex().upper()}
        if self.regional_created:
            sd_aids.add(commands.REGIONAL_AREA_AID.hex().upper())
        return aid in self.apps or aid in self.load_files or aid in sd_aids or aid in STANDARD_LOAD_FILES


@dataclass
class Channel:
    """What a power cycle or reset forgets: selection, authentication, pending load, paging, secure channel."""

    selected: str = "manager"  # "manager", "area:<name>" or "app:<AID hex>"
    authenticated: bool = False
    pin_verified: bool = False
    card_challenge: bytes = b""
    load_aid: str = ""
    load_area: str = ""
    load_next_block: int = 0
    load_buffer: bytearray = field(default_factory=bytearray)
    status_pages: list[bytes] = field(default_factory=list)
    secure: CardChannel | None = None  # the SCP03 session with the selected security domain

    def restart(self, *, selected: str = "manager") -> None:
        """Back to the state after power-up, with ``selected`` selected."""
        vars(self).update(vars(Channel(selected=selected)))

    def selected_area(self) -> str | None:
        """The selected area's name, or None when the card manager or an AP is selected."""
        return self.selected.split(":", 1)[1] if self.selected.startswith("area:") else None


def lv_fields(data: bytes, count: int) -> list[bytes]:
    """Split ``count`` length-prefixed fields (GlobalPlatform INSTALL data); 6A80 when they do not fit."""
    out: list[bytes] = []
    i = 0
    for _ in range(count):
        if i >= len(data) or i + 1 + data[i] > len(data):
            raise CardReply(StatusWord.INCORRECT_DATA)
        out.append(data[i + 1:i + 1 + data[i]])
        i += 1 + data[i]
    return out


def tlvs(data: bytes) -> dict[int, bytes]:
    """BER-TLV by tag; 6A80 when malformed."""
    try:
        return tlv.as_dict(data)
    except ValueError:
        raise CardReply(StatusWord.INCORRECT_DATA)
