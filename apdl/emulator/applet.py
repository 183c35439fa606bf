"""The emulated card APs: type A (a record behind mutual authentication and a PIN) and type C (open).

Each function handles one ISO/IEC 7816-4 command addressed to the selected AP.
"""

from __future__ import annotations

import secrets

from apdl.card import auth, commands
from apdl.card.apdu import CommandApdu, StatusWord
from apdl.card.commands import ApType
from apdl.emulator.state import AppState, CardReply, CardState, Channel


def _selected_app(state: CardState, channel: Channel) -> AppState:
    if not channel.selected.startswith("app:"):
        raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)
    return state.apps[channel.selected[4:]]


def _auth_key(state: CardState, channel: Channel) -> bytes:
    app = _selected_app(state, channel)
    if app.ap_type != ApType.A:
        raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)  # type C has no key
    return bytes.fromhex(app.auth_key)


def verify(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """VERIFY: 63Cx with x tries left after a wrong PIN, 6983 once blocked; no data asks for the counter."""
    app = _selected_app(state, channel)
    if command.p2 != commands.PIN_REFERENCE or command.p1 != 0x00:
        raise CardReply(StatusWord.INCORRECT_P1P2)
    if app.ap_type != ApType.A:
        raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)  # type C has no PIN
    if app.pin_tries_left == 0:
        raise CardReply(StatusWord.PIN_BLOCKED)
    if not command.data:
        if channel.pin_verified:
            return b""
        raise CardReply(0x63C0 | app.pin_tries_left)
    if secrets.compare_digest(command.data, bytes.fromhex(app.pin)):
        app.pin_tries_left = app.pin_max_tries
        channel.pin_verified = True
        return b""
    app.pin_tries_left -= 1
    channel.pin_verified = False
    raise CardReply(0x63C0 | app.pin_tries_left)


def change_pin(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """CHANGE REFERENCE DATA: current PIN (its stored length) followed by the new one; counts tries like VERIFY."""
    app = _selected_app(state, channel)
    if command.p2 != commands.PIN_REFERENCE or command.p1 != 0x00:
        raise CardReply(StatusWord.INCORRECT_P1P2)
    if app.ap_type != ApType.A:
        raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)
    if app.pin_tries_left == 0:
        raise CardReply(StatusWord.PIN_BLOCKED)
    current = bytes.fromhex(app.pin)
    old, new = command.data[:len(current)], command.data[len(current):]
    if not new:
        raise CardReply(StatusWord.WRONG_LENGTH)
    if not secrets.compare_digest(old, current):
        app.pin_tries_left -= 1
        channel.pin_verified = False
        raise CardReply(0x63C0 | app.pin_tries_left)
    app.pin, app.pin_tries_left = new.hex(), app.pin_max_tries
    channel.pin_verified = True
    return b""


def reset_retry_counter(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """RESET RETRY COUNTER after mutual authentication (the terminal holds the AP's key): 6982 without it."""
    app = _selected_app(state, channel)
    if command.p2 != commands.PIN_REFERENCE or command.p1 not in (0x02, 0x03):
        raise CardReply(StatusWord.INCORRECT_P1P2)
    if app.ap_type != ApType.A:
        raise CardReply(StatusWord.REFERENCED_DATA_NOT_FOUND)
    if not channel.authenticated:
        raise CardReply(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
    if command.p1 == 0x02:
        if not command.data:
            raise CardReply(StatusWord.WRONG_LENGTH)
        app.pin = command.data.hex()
    app.pin_tries_left = app.pin_max_tries
    return b""


def get_challenge(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """GET CHALLENGE: eight random bytes, good for one EXTERNAL AUTHENTICATE."""
    _auth_key(state, channel)
    channel.card_challenge = secrets.token_bytes(8)
    return channel.card_challenge


def external_authenticate(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """EXTERNAL AUTHENTICATE: the terminal's cryptogram over the last challenge; 6300 when wrong."""
    key = _auth_key(state, channel)
    challenge, channel.card_challenge = channel.card_challenge, b""
    if not challenge:
        raise CardReply(StatusWord.CONDITIONS_NOT_SATISFIED)  # GET CHALLENGE first; each challenge once
    if not secrets.compare_digest(command.data, auth.terminal_cryptogram(key, challenge)):
        channel.authenticated = False
        raise CardReply(StatusWord.VERIFICATION_FAILED)
    channel.authenticated = True
    return b""


def internal_authenticate(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """INTERNAL AUTHENTICATE: the card's cryptogram over the terminal's eight-byte challenge."""
    key = _auth_key(state, channel)
    if len(command.data) != 8:
        raise CardReply(StatusWord.WRONG_LENGTH)
    return auth.card_cryptogram(key, command.data)


def read(state: CardState, channel: Channel, command: CommandApdu) -> bytes:
    """READ BINARY / READ RECORD 1 of the 利用者ID; type A only after mutual authentication and VERIFY (6982)."""
    app = _selected_app(state, channel)
    if app.ap_type == ApType.A and not (channel.authenticated and channel.pin_verified):
        raise CardReply(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
    if command.ins == commands.INS_READ_RECORD and command.p1 != 1:
        raise CardReply(StatusWord.RECORD_NOT_FOUND)
    return bytes.fromhex(app.user_id)
