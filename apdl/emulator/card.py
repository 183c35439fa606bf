"""An emulated card: a GlobalPlatform-like card manager with two free areas and card APs of types A and C.

This models the public-standard stand-in that apdl's reference adapter speaks, not the real chip:

- the card manager (issuer security domain) answers GET STATUS, INSTALL, LOAD, DELETE and GET DATA
  (:mod:`apdl.emulator.manager`);
- the regional area (地域住民向け領域) exists only after 地域住民向け領域設定 (INSTALL of a supplementary
  security domain); the extended area (拡張利用領域) exists from issuance; each has a byte quota
  (defaults: ten and twenty APs of the default size, as seed 003 assumes);
- with SCP03 keys in its state (its own, diversified from the issuer's master key set and the card's
  diversification data, :meth:`CardState.issued`), the card manager and the areas demand a GlobalPlatform
  SCP03 secure channel (at least C-MAC) for GET STATUS, INSTALL, LOAD and DELETE, answer ``6982`` to a
  wrong C-MAC or host cryptogram, and encipher and MAC their answers at the level the host chose, up to
  R-ENCRYPTION (:mod:`apdl.card.scp03`); without keys they are open, as before;
- type A APs hold a record behind mutual authentication and a PIN with a retry counter; type C APs
  can be read without authentication (:mod:`apdl.emulator.applet`).

State lives in memory (optionally mirrored to a JSON file after every change) and can be inspected
with :meth:`EmulatedCard.snapshot`. :meth:`EmulatedCard.force_status` makes the card fail on purpose from the
same process; a fault file (:mod:`apdl.emulator.faults`, ``--faults``) does so from any process.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apdl.card import commands, scp03
from apdl.card.apdu import CommandApdu, StatusWord
from apdl.card.commands import Area
from apdl.emulator import applet, manager
from apdl.emulator.faults import FaultFile
from apdl.emulator.state import DEFAULT_AP_SIZE, CardReply, CardState, Channel

__all__ = ["ATR", "DEFAULT_AP_SIZE", "CardState", "EmulatedCard"]


def _with_tck(body: bytes) -> bytes:
    check = 0
    for byte in body[1:]:
        check ^= byte
    return body + bytes((check,))


# T=0 and T=1 offered, ten historical bytes "APDL-EMU01", closed by the check byte TCK.
ATR = _with_tck(bytes.fromhex("3B8A8001") + b"APDL-EMU01")

Handler = Callable[[CardState, Channel, CommandApdu], bytes]
_HANDLERS: dict[int, Handler] = {
    commands.INS_SELECT: manager.select,
    commands.INS_GET_STATUS: manager.get_status,
    commands.INS_INSTALL: manager.install,
    commands.INS_LOAD: manager.load,
    commands.INS_DELETE: manager.delete,
    commands.INS_GET_DATA: manager.get_data,
    commands.INS_VERIFY: applet.verify,
    commands.INS_CHANGE_REFERENCE_DATA: applet.change_pin,
    commands.INS_RESET_RETRY_COUNTER: applet.reset_retry_counter,
    commands.INS_GET_CHALLENGE: applet.get_challenge,
    commands.INS_EXTERNAL_AUTHENTICATE: applet.external_authenticate,
    commands.INS_INTERNAL_AUTHENTICATE: applet.internal_authenticate,
    commands.INS_READ_BINARY: applet.read,
    commands.INS_READ_RECORD: applet.read,
}
_CARD_MANAGEMENT = {commands.INS_GET_STATUS, commands.INS_INSTALL, commands.INS_LOAD, commands.INS_DELETE,
                    commands.INS_GET_DATA}
# With SCP03 keys on the card, these need a secure channel session (at least C-MAC) with the security domain.
_NEEDS_SECURE_CHANNEL = {commands.INS_GET_STATUS, commands.INS_INSTALL, commands.INS_LOAD, commands.INS_DELETE}
_CHANGES_STATE = {commands.INS_INSTALL, commands.INS_LOAD, commands.INS_DELETE, commands.INS_VERIFY,
                  commands.INS_CHANGE_REFERENCE_DATA, commands.INS_RESET_RETRY_COUNTER}


@dataclass
class _Forced:
    sw: int
    ins: int | None
    remaining: int


class EmulatedCard:
    """The card's command processor. Thread-safe: tests inspect it while pcscd talks to it."""

    def __init__(self, state: CardState | None = None, *, state_path: Path | None = None,
                 fault_path: Path | None = None) -> None:
        if state is None and state_path is not None and state_path.exists():
            state = CardState.from_json(json.loads(state_path.read_text()))
        self.state = state or CardState()
        self.state_path = state_path
        self._channel = Channel()
        self._forced: list[_Forced] = []
        self._altered: list[_Forced] = []  # answers whose R-MAC is spoilt on purpose (sw unused)
        self._lock = threading.Lock()
        self.commands = 0  # command APDUs received since the last load_state (tests: "no APDU was sent")
        self.faults: FaultFile | None = None if fault_path is None else FaultFile(fault_path)

    def use_fault_file(self, path: Path) -> None:
        """Obey the fault file at ``path`` from now on (see :mod:`apdl.emulator.faults`)."""
        self.faults = FaultFile(path)

    def fault_mode(self) -> str:
        """present, absent, mute or no_atr, as the fault file says (present without one)."""
        return "present" if self.faults is None else self.faults.mode()

    def power_cycle(self) -> None:
        """Power off/on or reset: forget selection and authentication, keep the card's contents."""
        with self._lock:
            self._channel = Channel()

    def load_state(self, state: CardState) -> None:
        """Replace the card's contents (a fresh card for the next test), clearing forced failures."""
        with self._lock:
            self.state = state
            self._channel = Channel()
            self._forced.clear()
            self._altered.clear()
            self.commands = 0
            self._save()

    def force_status(self, sw: int, *, ins: int | None = None, times: int = 1) -> None:
        """Answer the next ``times`` commands (with instruction ``ins``, or any) with ``sw`` and do nothing."""
        with self._lock:
            self._forced.append(_Forced(sw, ins, times))

    def alter_answers(self, *, ins: int | None = None, times: int = 1) -> None:
        """Flip a bit of the R-MAC of the next ``times`` secure-channel answers (to instruction ``ins``, or any),
        after the command took effect: what a relay that tampers with answers delivers."""
        with self._lock:
            self._altered.append(_Forced(0, ins, times))

    def snapshot(self) -> dict[str, Any]:
        """A copy of the persistent state (AIDs as upper-case hex)."""
        with self._lock:
            return self.state.to_json()

    def installed(self, area: Area | None = None) -> set[str]:
        """AIDs (hex) of the installed APs, in one area or all."""
        with self._lock:
            return {a.aid for a in self.state.apps.values() if area is None or a.area == area.value}

    def process(self, raw: bytes) -> bytes:
        """One command APDU in, one response APDU (data + SW) out."""
        with self._lock:
            self.commands += 1
            try:
                command = CommandApdu.parse(raw)
            except ValueError:
                return StatusWord.WRONG_LENGTH.to_bytes(2, "big")
            secure = None
            try:
                clear = self._secure_messaging(command)
                secure = self._channel.secure
                data = self._dispatch(clear)
                sw = int(StatusWord.OK)
            except CardReply as refused:
                data, sw = refused.data, refused.sw
            if command.ins in _CHANGES_STATE:
                self._save()  # also after a refusal: a wrong PIN spends a try
            if secure is not None and secure is self._channel.secure:
                return self._maybe_altered(command.ins, secure.wrap_response(data, sw))
            return data + sw.to_bytes(2, "big")

    def _maybe_altered(self, ins: int, answer: bytes) -> bytes:
        for rule in self._altered:
            if (rule.ins is None or rule.ins == ins) and len(answer) >= 2 + scp03.MAC_LENGTH:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._altered.remove(rule)
                return answer[:-3] + bytes((answer[-3] ^ 0x01,)) + answer[-2:]
        return answer

    def _secure_messaging(self, command: CommandApdu) -> CommandApdu:
        """SCP03 at a security domain of a card that has keys: open a session, or check and strip a
        command's protection. Card management there needs at least C-MAC; a security error is 6982."""
        keys = self.state.scp03_keys
        channel = self._channel
        if not keys or command.ins == commands.INS_SELECT or channel.selected.startswith("app:"):
            return command
        if command.ins == scp03.INS_INITIALIZE_UPDATE and command.cla & 0xF0 == 0x80:
            channel.secure = scp03.CardChannel(scp03.StaticKeys.from_hex(keys), kdd=self.state.kdd_bytes())
            answer = channel.secure.initialize_update(command)
            raise CardReply(answer.sw, answer.data)
        if channel.secure is not None and channel.secure.level == 0 and command.ins == scp03.INS_EXTERNAL_AUTHENTICATE:
            answer = channel.secure.external_authenticate(command)
            raise CardReply(answer.sw, answer.data)
        clear = channel.secure.unwrap(command) if channel.secure is not None else (
            None if command.cla & scp03.CLA_SECURE_MESSAGING else command)
        if clear is None:
            raise CardReply(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        if clear.ins in _NEEDS_SECURE_CHANNEL and (
                channel.secure is None or not channel.secure.level & scp03.SecurityLevel.C_MAC):
            raise CardReply(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        return clear

    def _dispatch(self, command: CommandApdu) -> bytes:
        for forced in self._forced:
            if forced.ins is None or forced.ins == command.ins:
                forced.remaining -= 1
                if forced.remaining <= 0:
                    self._forced.remove(forced)
                raise CardReply(forced.sw)
        if self.faults is not None:
            sw = self.faults.take_status(command)
            if sw is not None:
                raise CardReply(sw)
        if command.cla & 0x7C:
            raise CardReply(StatusWord.CLA_NOT_SUPPORTED)  # only 00 and 80 (secure messaging is unwrapped before)
        handler = _HANDLERS.get(command.ins)
        if handler is None:
            raise CardReply(StatusWord.INS_NOT_SUPPORTED)
        if command.ins in _CARD_MANAGEMENT and self._channel.selected.startswith("app:"):
            raise CardReply(StatusWord.INS_NOT_SUPPORTED)  # card APs do not implement card management
        return handler(self.state, self._channel, command)

    def _save(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")  # the card's keys and PINs: readable by the owner only
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(json.dumps(self.state.to_json(), indent=1))
        os.replace(tmp, self.state_path)
