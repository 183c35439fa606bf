"""The card adapter: what the AP download module asks of a card, and a reference implementation.

:class:`CardSession` is the interface the module programs against. :class:`GlobalPlatformCardSession`
implements it with public commands only: ISO/IEC 7816-4 (SELECT, VERIFY, GET CHALLENGE, EXTERNAL and
INTERNAL AUTHENTICATE, READ BINARY/RECORD) and the GlobalPlatform Card Specification (GET STATUS,
INSTALL, LOAD, DELETE, GET DATA), plus CHANGE REFERENCE DATA and RESET RETRY COUNTER.

It is a **stand-in for the real chip protocol**: the My Number Card's card-manager commands, keys and
AIDs are disclosed only under agreement with J-LIS and are not used here. A real adapter is a second
class with the same methods. Given keys, management commands run under a GlobalPlatform SCP03 secure
channel (:mod:`apdl.card.scp03`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from apdl.card import auth, commands, scp03, tlv
from apdl.card.apdu import CommandApdu, ResponseApdu, StatusWord, explain
from apdl.card.commands import ApSpec, Area
from apdl.errors import CardError


class Transport(Protocol):
    """Carries one command APDU to the card and returns the raw response (data + SW1 SW2)."""

    def transmit(self, apdu: bytes) -> bytes:
        """Send ``apdu``, return the response bytes."""
        ...


class CardStatusError(CardError):
    """The card answered a status word other than 9000."""

    def __init__(self, command: str, response: ResponseApdu) -> None:
        self.command = command
        self.response = response
        super().__init__(f"{command}: {explain(response.sw, lang='en')}")

    @property
    def sw(self) -> int:
        """The status word as an integer (e.g. 0x6A84)."""
        return self.response.sw

    @property
    def status(self) -> StatusWord | None:
        """The known status word, if any."""
        return self.response.status

    @property
    def retries_left(self) -> int | None:
        """PIN tries left after a failed VERIFY (0 when blocked)."""
        return self.response.retries_left


@dataclass(frozen=True)
class AppEntry:
    """One row of GET STATUS: an application or security domain on the card."""

    aid: bytes
    life_cycle: int
    privileges: bytes
    security_domain: bytes  # AID of the associated security domain (the area)


@dataclass(frozen=True)
class FreeSpace:
    """GET DATA FF21 (extended card resources) as seen from one security domain."""

    installed_apps: int
    free_bytes: int


@dataclass(frozen=True)
class CardInfo:
    """The card's identifier (カードFID here) and the holder's residence municipality code."""

    card_identifier: str
    residence_code: str


class CardSession(Protocol):
    """Card operations of the AP download module, independent of the chip protocol behind them."""

    def select(self, aid: bytes) -> bytes:
        """Select an application or area by AID; returns its FCI."""
        ...

    def card_info(self) -> CardInfo:
        """Read the card identifier and residence municipality code."""
        ...

    def list_apps(self) -> list[AppEntry]:
        """All applications and security domains on the card."""
        ...

    def create_regional_area(self) -> None:
        """地域住民向け領域設定: create the regional area."""
        ...

    def install(self, ap: ApSpec, *, area: Area) -> None:
        """Install (and make selectable) one card AP in ``area``."""
        ...

    def load(self, load_file_aid: bytes, load_file: bytes, *, area: Area) -> None:
        """Load a custom AP's load file into ``area``."""
        ...

    def delete(self, aid: bytes) -> None:
        """Delete an application, area or load file."""
        ...

    def free_space(self, area: Area) -> FreeSpace:
        """Installed count and free bytes of ``area``."""
        ...

    def verify_pin(self, pin: bytes) -> None:
        """VERIFY the selected AP's PIN; CardStatusError carries the tries left."""
        ...

    def pin_retries(self) -> int:
        """Tries left for the selected AP's PIN, without spending one."""
        ...

    def change_pin(self, old: bytes, new: bytes) -> None:
        """Change the selected AP's PIN (the holder knows the current one)."""
        ...

    def reset_retry_counter(self, new_pin: bytes | None = None) -> None:
        """Unblock the selected AP's PIN, optionally setting a new one (needs mutual authentication first)."""
        ...

    def mutual_auth(self, key: bytes) -> None:
        """Authenticate card and terminal to each other with the selected AP's key."""
        ...

    def read_user_id(self, *, record: bool) -> bytes:
        """The 利用者ID stored in the selected AP (READ RECORD for type A, READ BINARY for C)."""
        ...


class GlobalPlatformCardSession:
    """Reference :class:`CardSession` over ISO/IEC 7816-4 and GlobalPlatform commands.

    A stand-in for the real chip protocol, which is not public (see the module docstring).
    """

    def __init__(self, transport: Transport, *, keys: scp03.KeySource | None = None,
                 level: scp03.SecurityLevel = scp03.DEFAULT_LEVEL) -> None:
        self._transport = transport
        self._secure = scp03.HostChannel(transport, keys, level=level) if keys is not None else None

    def _transmit(self, command: CommandApdu) -> ResponseApdu:
        channel = self._secure if self._secure is not None and self._secure.is_open else self._transport
        return ResponseApdu.parse(channel.transmit(command.to_bytes()))

    def _send(self, name: str, command: CommandApdu) -> ResponseApdu:
        response = self._transmit(command)
        if not response.ok:
            raise CardStatusError(name, response)
        return response

    def select(self, aid: bytes) -> bytes:
        """SELECT by AID (this ends any secure channel session)."""
        if self._secure is not None:
            self._secure.close()
        return self._send("SELECT", commands.select(aid)).data

    def _select_domain(self, aid: bytes) -> None:
        """SELECT the card manager or an area and, with keys, open the SCP03 session with it."""
        self.select(aid)
        if self._secure is not None:
            self._secure.open()

    def card_info(self) -> CardInfo:
        """GET DATA DF20 from the card manager."""
        self._select_domain(commands.CARD_MANAGER_AID)
        fields = tlv.as_dict(self._send("GET DATA", commands.get_data(commands.TAG_CARD_INFO)).data)
        inner = tlv.as_dict(fields.get(commands.TAG_CARD_INFO, b""))
        return CardInfo(inner.get(0xC1, b"").decode("ascii"), inner.get(0xC2, b"").decode("ascii"))

    def list_apps(self) -> list[AppEntry]:
        """GET STATUS (applications and security domains) from the card manager, following 6310 paging."""
        self._select_domain(commands.CARD_MANAGER_AID)
        entries: list[AppEntry] = []
        first = True
        while True:
            response = self._transmit(commands.get_status(commands.STATUS_APPS_AND_SDS, first=first))
            if response.sw == StatusWord.REFERENCED_DATA_NOT_FOUND and first:
                return entries  # GP answers 6A88 when nothing matches
            if response.sw not in (StatusWord.OK, StatusWord.MORE_DATA):
                raise CardStatusError("GET STATUS", response)
            for tag, value in tlv.iterate(response.data):
                if tag != 0xE3:
                    continue
                fields = tlv.as_dict(value)
                entries.append(AppEntry(fields.get(0x4F, b""), fields.get(0x9F70, b"\x00")[0],
                                        fields.get(0xC5, b""), fields.get(0xCC, b"")))
            if response.sw == StatusWord.OK:
                return entries
            first = False

    def create_regional_area(self) -> None:
        """INSTALL of the regional area's security domain from the card manager."""
        self._select_domain(commands.CARD_MANAGER_AID)
        self._send("INSTALL", commands.create_regional_area())

    def install(self, ap: ApSpec, *, area: Area) -> None:
        """Select the area's security domain, then INSTALL [for install and make selectable]."""
        self._select_domain(area.aid)
        self._send("INSTALL", commands.install_ap(ap))

    def load(self, load_file_aid: bytes, load_file: bytes, *, area: Area) -> None:
        """INSTALL [for load] then the LOAD blocks, through the area's security domain."""
        self._select_domain(area.aid)
        self._send("INSTALL", commands.install_for_load(load_file_aid, size_bytes=len(load_file)))
        for block in commands.load_blocks(load_file):
            self._send("LOAD", block)

    def delete(self, aid: bytes) -> None:
        """DELETE from the card manager."""
        self._select_domain(commands.CARD_MANAGER_AID)
        self._send("DELETE", commands.delete(aid))

    def free_space(self, area: Area) -> FreeSpace:
        """GET DATA FF21 from the area's security domain."""
        self._select_domain(area.aid)
        data = tlv.as_dict(self._send("GET DATA", commands.get_data(commands.TAG_EXTENDED_CARD_RESOURCES)).data)
        inner = tlv.as_dict(data.get(commands.TAG_EXTENDED_CARD_RESOURCES, b""))
        return FreeSpace(installed_apps=int.from_bytes(inner.get(0x81, b"\x00"), "big"),
                         free_bytes=int.from_bytes(inner.get(0x82, b"\x00"), "big"))

    def verify_pin(self, pin: bytes) -> None:
        """VERIFY; a wrong PIN raises CardStatusError with ``retries_left``."""
        self._send("VERIFY", commands.verify(pin))

    def pin_retries(self) -> int:
        """VERIFY without data: 63Cx gives x; 9000 means already verified (full count unknown: -1)."""
        response = self._transmit(commands.verify(None))
        if response.retries_left is not None:
            return response.retries_left
        if response.ok:
            return -1
        raise CardStatusError("VERIFY", response)

    def change_pin(self, old: bytes, new: bytes) -> None:
        """CHANGE REFERENCE DATA; a wrong current PIN spends a try like VERIFY."""
        self._send("CHANGE REFERENCE DATA", commands.change_pin(old, new))

    def reset_retry_counter(self, new_pin: bytes | None = None) -> None:
        """RESET RETRY COUNTER (P1 02 with a new PIN, 03 without)."""
        self._send("RESET RETRY COUNTER", commands.reset_retry_counter(new_pin))

    def mutual_auth(self, key: bytes) -> None:
        """INTERNAL AUTHENTICATE (the card proves its key), then GET CHALLENGE + EXTERNAL AUTHENTICATE."""
        challenge = secrets.token_bytes(8)
        proof = self._send("INTERNAL AUTHENTICATE", commands.internal_authenticate(challenge)).data
        if not secrets.compare_digest(proof, auth.card_cryptogram(key, challenge)):
            raise CardError("the card failed INTERNAL AUTHENTICATE: wrong key or not the expected card")
        card_challenge = self._send("GET CHALLENGE", commands.get_challenge()).data
        cryptogram = auth.terminal_cryptogram(key, card_challenge)
        self._send("EXTERNAL AUTHENTICATE", commands.external_authenticate(cryptogram))

    def read_user_id(self, *, record: bool) -> bytes:
        """READ RECORD 1 (type A) or READ BINARY (type C)."""
        command = commands.read_record(1) if record else commands.read_binary()
        return self._send("READ", command).data


# mypy checks here that the reference implementation satisfies the interface.
_REFERENCE_ADAPTER: Callable[[Transport], CardSession] = GlobalPlatformCardSession
