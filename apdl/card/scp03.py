"""GlobalPlatform Secure Channel Protocol '03' (GP Card Specification v2.2 Amendment D v1.1.1).

Both ends live here, because they share the data derivation scheme:

- :class:`HostChannel` is the off-card entity (the module's server): it sends INITIALIZE UPDATE, takes the
  card's static keys from its key source and the key diversification data in the answer, checks the card
  cryptogram, sends EXTERNAL AUTHENTICATE with the host cryptogram, then wraps each command (C-DECRYPTION
  of the data field, then the C-MAC over the MAC chaining value and the header) and checks the R-MAC of
  each answer and deciphers its data (R-ENCRYPTION). It wraps any :class:`~apdl.card.adapter.Transport`:
  the local PC/SC reader or a terminal's card agent, which then only ever sees ciphertext and MACs.
- :class:`CardChannel` is the card's side, used by the emulator: it answers INITIALIZE UPDATE, verifies
  the host cryptogram and every C-MAC (a wrong one aborts the session: ``6982``), decrypts the data,
  enciphers the answer's data and adds the R-MAC.

Data derivation (§4.1.5): NIST SP 800-108 KDF in counter mode with AES-CMAC as PRF; fixed input =
11 bytes ``00`` + derivation constant, separation indicator ``00``, L (2 bytes, bits), counter i (1 byte),
context (host challenge ‖ card challenge). AES and CMAC come from ``cryptography``.

R-ENCRYPTION (§6.2.7): the answer's data, padded with ``80 00…``, is enciphered with S-ENC in AES-CBC;
the ICV is AES(S-ENC, the command's encryption counter block with its first byte set to ``80``); the
R-MAC is then computed over the ciphered data (as GlobalPlatformPro's ``SCP03Wrapper`` checks it).

Supported: AES-128/192/256 static keys; random card challenges ("i" = ``60``: R-MAC and R-ENCRYPTION
supported); security levels C-MAC, C-DECRYPTION + C-MAC, either with R-MAC, and all four (``33``, the
default). Per-card static keys from a master key set: :mod:`apdl.card.diversification`. Not implemented:
pseudo-random challenges, S16 mode, BEGIN/END R-MAC SESSION, PUT KEY (key rotation on the card).
"""

from __future__ import annotations

import enum
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.ciphers.modes import CBC, ECB
from cryptography.hazmat.primitives.cmac import CMAC

from apdl.card.apdu import CommandApdu, ResponseApdu, StatusWord
from apdl.errors import CardError

INS_INITIALIZE_UPDATE = 0x50
INS_EXTERNAL_AUTHENTICATE = 0x82
CLA_SECURE_MESSAGING = 0x04  # the secure messaging indicator in a GP or ISO class byte
SCP_ID = 0x03
I_PARAMETER = 0x60  # random card challenge, R-MAC and R-ENCRYPTION supported (Table 5-1)
MAC_LENGTH = 8
BLOCK = 16

# Data derivation constants (Table 4-1).
CARD_CRYPTOGRAM = 0x00
HOST_CRYPTOGRAM = 0x01
CARD_CHALLENGE = 0x02
S_ENC = 0x04
S_MAC = 0x06
S_RMAC = 0x07


class SecurityLevel(enum.IntFlag):
    """EXTERNAL AUTHENTICATE P1 (Table 7-3)."""

    C_MAC = 0x01
    C_DECRYPTION = 0x02
    R_MAC = 0x10
    R_ENCRYPTION = 0x20


FULL_LEVEL = SecurityLevel.C_MAC | SecurityLevel.C_DECRYPTION | SecurityLevel.R_MAC | SecurityLevel.R_ENCRYPTION
# Table 7-3: R-ENCRYPTION only together with all the others.
SUPPORTED_LEVELS = {SecurityLevel.C_MAC, SecurityLevel.C_MAC | SecurityLevel.C_DECRYPTION,
                    SecurityLevel.C_MAC | SecurityLevel.R_MAC,
                    SecurityLevel.C_MAC | SecurityLevel.C_DECRYPTION | SecurityLevel.R_MAC, FULL_LEVEL}
DEFAULT_LEVEL = FULL_LEVEL


class SecureChannelError(CardError):
    """The secure channel could not be opened or an answer failed its check (wrong keys, a forged R-MAC)."""


def cmac(key: bytes, message: bytes) -> bytes:
    """AES-CMAC (NIST SP 800-38B), full 16 bytes."""
    mac = CMAC(AES(key))
    mac.update(message)
    return mac.finalize()


def kdf_counter(key: bytes, *, prefix: bytes, suffix: bytes, length: int) -> bytes:
    """NIST SP 800-108 KDF in counter mode, PRF AES-CMAC, one-byte counter between ``prefix`` and ``suffix``."""
    out = b""
    counter = 1
    while len(out) < length:
        out += cmac(key, prefix + bytes((counter,)) + suffix)
        counter += 1
    return out[:length]


def derive(key: bytes, constant: int, context: bytes, bits: int) -> bytes:
    """The SCP03 data derivation scheme (§4.1.5): ``bits`` of derived data."""
    prefix = bytes(11) + bytes((constant,)) + b"\x00" + bits.to_bytes(2, "big")
    return kdf_counter(key, prefix=prefix, suffix=context, length=bits // 8)


def kcv(key: bytes) -> bytes:
    """Key check value of an AES key: the first 3 bytes of AES(key, 16 × '01') (Amendment D §7.2.2)."""
    encryptor = Cipher(AES(key), ECB()).encryptor()  # noqa: S305 - one block, the KCV definition
    return (encryptor.update(b"\x01" * BLOCK) + encryptor.finalize())[:3]


@dataclass(frozen=True)
class StaticKeys:
    """A card's SCP03 key set (Key-ENC, Key-MAC, Key-DEK) and its key version number.

    The repr never shows the keys, only their check values.
    """

    enc: bytes = field(repr=False)
    mac: bytes = field(repr=False)
    dek: bytes = field(repr=False)
    version: int = 0x30

    def __post_init__(self) -> None:
        lengths = {len(self.enc), len(self.mac), len(self.dek)}
        if len(lengths) != 1 or lengths.pop() not in (16, 24, 32):
            raise ValueError("SCP03 keys are three AES keys of the same length (16, 24 or 32 bytes)")
        if not 1 <= self.version <= 0x7F:
            raise ValueError("key version number must be 01..7F")

    @classmethod
    def generate(cls, *, length: int = 16, version: int = 0x30) -> StaticKeys:
        """A fresh random key set."""
        return cls(secrets.token_bytes(length), secrets.token_bytes(length), secrets.token_bytes(length), version)

    @classmethod
    def from_hex(cls, text: str) -> StaticKeys:
        """Parse ``VV:ENC:MAC:DEK`` (hex), the form :meth:`to_hex` writes."""
        try:
            version, enc, mac, dek = text.strip().split(":")
            return cls(bytes.fromhex(enc), bytes.fromhex(mac), bytes.fromhex(dek), int(version, 16))
        except ValueError as exc:
            raise ValueError("SCP03 keys must be written as VV:ENC:MAC:DEK in hex") from exc

    def to_hex(self) -> str:
        """``VV:ENC:MAC:DEK`` in hex (for the key file and the emulator's card state; never for logs)."""
        return f"{self.version:02X}:{self.enc.hex().upper()}:{self.mac.hex().upper()}:{self.dek.hex().upper()}"

    def check_values(self) -> str:
        """The key check values, safe to show: ``ENC/MAC/DEK``."""
        return "/".join(kcv(k).hex().upper() for k in (self.enc, self.mac, self.dek))

    def for_card(self, kdd: bytes) -> StaticKeys:
        """These keys, whatever the card's diversification data (a card personalised with exactly them)."""
        return self


class KeySource(Protocol):
    """Where the host takes a card's static keys from: the card's own key set, or a master key set that
    derives them from the key diversification data the card gives in its INITIALIZE UPDATE answer."""

    @property
    def version(self) -> int:
        """The key version number to ask the card for."""
        ...

    def for_card(self, kdd: bytes) -> StaticKeys:
        """The static keys of the card that answered with diversification data ``kdd`` (10 bytes)."""
        ...


@dataclass(frozen=True)
class SessionKeys:
    """S-ENC, S-MAC and S-RMAC of one secure channel session."""

    enc: bytes = field(repr=False)
    mac: bytes = field(repr=False)
    rmac: bytes = field(repr=False)

    @classmethod
    def derive(cls, keys: StaticKeys, context: bytes) -> SessionKeys:
        """Session keys from the static keys and host challenge ‖ card challenge (§6.2.1)."""
        bits = len(keys.enc) * 8
        return cls(derive(keys.enc, S_ENC, context, bits), derive(keys.mac, S_MAC, context, bits),
                   derive(keys.mac, S_RMAC, context, bits))

    def cryptogram(self, constant: int, context: bytes) -> bytes:
        """The card (``00``) or host (``01``) authentication cryptogram: 8 bytes derived with S-MAC."""
        return derive(self.mac, constant, context, 64)


def _aes_cbc(key: bytes, iv: bytes, data: bytes, *, decrypt: bool) -> bytes:
    cipher = Cipher(AES(key), CBC(iv))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def _icv(key: bytes, counter: int, *, response: bool = False) -> bytes:
    block = bytearray(counter.to_bytes(BLOCK, "big"))
    if response:
        block[0] = 0x80
    encryptor = Cipher(AES(key), ECB()).encryptor()  # noqa: S305 - one block: the ICV of §6.2.6
    return encryptor.update(bytes(block)) + encryptor.finalize()


def _pad80(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: '80' then '00's to a whole block."""
    data += b"\x80"
    return data + bytes(-len(data) % BLOCK)


def _unpad80(data: bytes) -> bytes:
    """Undo :func:`_pad80`; ValueError when the padding is not there."""
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80") or len(data) - len(stripped) >= BLOCK:
        raise ValueError("bad padding")
    return stripped[:-1]


def _response_cipher(session: _Session, data: bytes, *, decrypt: bool) -> bytes:
    """R-ENCRYPTION (§6.2.7): AES-CBC with S-ENC; ICV from the command's counter block with '80' in front.
    ValueError when ``data`` to decipher is not whole blocks."""
    if decrypt and len(data) % BLOCK:
        raise ValueError("not whole blocks")
    return _aes_cbc(session.keys.enc, _icv(session.keys.enc, session.counter, response=True), data, decrypt=decrypt)


def _mac_input(chaining: bytes, command: CommandApdu, data: bytes) -> bytes:
    """MAC chaining value ‖ CLA' INS P1 P2 Lc' ‖ data (Lc' counts the C-MAC, §6.2.4)."""
    return chaining + bytes((command.cla | CLA_SECURE_MESSAGING, command.ins, command.p1, command.p2,
                             len(data) + MAC_LENGTH)) + data


def _response_mac_applies(sw: int) -> bool:
    """§6.2.5: only 9000 and warnings (62xx, 63xx) carry an R-MAC; errors carry neither data nor MAC."""
    return sw == StatusWord.OK or sw >> 8 in (0x62, 0x63)


@dataclass
class _Session:
    """State both ends keep during one session: keys, level, MAC chaining value, encryption counter."""

    keys: SessionKeys
    level: SecurityLevel
    chaining: bytes = bytes(BLOCK)
    counter: int = 0


class HostChannel:
    """The off-card entity's end of an SCP03 session over ``transport`` (anything with ``transmit``).

    Use :meth:`open` after SELECTing the security domain; then :meth:`transmit` wraps and unwraps.
    """

    def __init__(self, transport: object, keys: KeySource, *, level: SecurityLevel = DEFAULT_LEVEL) -> None:
        if level not in SUPPORTED_LEVELS:
            raise ValueError(f"unsupported security level {int(level):02X}")
        self._transport = transport
        self._keys = keys
        self._level = level
        self._session: _Session | None = None

    def _raw(self, apdu: bytes) -> ResponseApdu:
        return ResponseApdu.parse(self._transport.transmit(apdu))  # type: ignore[attr-defined]

    def open(self, *, host_challenge: bytes | None = None) -> None:
        """INITIALIZE UPDATE + EXTERNAL AUTHENTICATE; raises SecureChannelError if the card is not genuine."""
        self._session = None
        host_challenge = host_challenge if host_challenge is not None else secrets.token_bytes(8)
        init = CommandApdu(0x80, INS_INITIALIZE_UPDATE, self._keys.version, 0x00, host_challenge, le=256)
        response = self._raw(init.to_bytes())
        if not response.ok:
            raise SecureChannelError(f"INITIALIZE UPDATE refused: SW {response.sw:04X}")
        data = response.data
        if len(data) not in (29, 32) or data[11] != SCP_ID:
            raise SecureChannelError("INITIALIZE UPDATE: not an SCP03 answer")
        if data[10] != self._keys.version:
            raise SecureChannelError(f"the card has key version {data[10]:02X}, expected {self._keys.version:02X}")
        if self._level & SecurityLevel.R_MAC and not data[12] & 0x20:
            raise SecureChannelError("the card does not support R-MAC")
        if self._level & SecurityLevel.R_ENCRYPTION and not data[12] & 0x40:
            raise SecureChannelError("the card does not support R-ENCRYPTION")
        card_challenge, card_cryptogram = data[13:21], data[21:29]
        context = host_challenge + card_challenge
        keys = SessionKeys.derive(self._keys.for_card(data[:10]), context)
        if not hmac.compare_digest(keys.cryptogram(CARD_CRYPTOGRAM, context), card_cryptogram):
            raise SecureChannelError("wrong card cryptogram: the card does not hold this key set")
        session = _Session(keys, SecurityLevel.C_MAC)  # EXTERNAL AUTHENTICATE itself is C-MAC only
        auth = CommandApdu(0x80, INS_EXTERNAL_AUTHENTICATE, int(self._level), 0x00,
                           keys.cryptogram(HOST_CRYPTOGRAM, context))
        wrapped = self._wrap(session, auth)
        response = self._raw(wrapped)
        if not response.ok:
            raise SecureChannelError(f"EXTERNAL AUTHENTICATE refused: SW {response.sw:04X}")
        session.level = self._level
        self._session = session

    @property
    def is_open(self) -> bool:
        """True while a session is established."""
        return self._session is not None

    def close(self) -> None:
        """Forget the session (after a SELECT, the card has ended it too)."""
        self._session = None

    @staticmethod
    def _wrap(session: _Session, command: CommandApdu) -> bytes:
        data = command.data
        if session.level & SecurityLevel.C_DECRYPTION:
            session.counter += 1  # incremented for every command, even one without data (§6.2.6)
            if data:
                data = _aes_cbc(session.keys.enc, _icv(session.keys.enc, session.counter), _pad80(data),
                                decrypt=False)
        if len(data) + MAC_LENGTH > 255:
            raise ValueError("the protected command does not fit a short APDU")
        full = cmac(session.keys.mac, _mac_input(session.chaining, command, data))
        session.chaining = full
        wrapped = CommandApdu(command.cla | CLA_SECURE_MESSAGING, command.ins, command.p1, command.p2,
                              data + full[:MAC_LENGTH], command.le)
        return wrapped.to_bytes()

    def transmit(self, apdu: bytes) -> bytes:
        """Protect ``apdu`` at the session's level, send it, verify the R-MAC; returns data + SW in clear."""
        session = self._session
        if session is None:
            raise SecureChannelError("no secure channel session is open")
        command = CommandApdu.parse(apdu)
        response = self._raw(self._wrap(session, command))
        if session.level & SecurityLevel.R_MAC and _response_mac_applies(response.sw):
            if len(response.data) < MAC_LENGTH:
                self._session = None
                raise SecureChannelError("an answer without R-MAC inside an R-MAC session")
            body, mac = response.data[:-MAC_LENGTH], response.data[-MAC_LENGTH:]
            expected = cmac(session.keys.rmac, session.chaining + body + response.sw.to_bytes(2, "big"))
            if not hmac.compare_digest(expected[:MAC_LENGTH], mac):
                self._session = None
                raise SecureChannelError("wrong R-MAC: the answer was altered on its way")
            if session.level & SecurityLevel.R_ENCRYPTION and body:
                try:
                    body = _unpad80(_response_cipher(session, body, decrypt=True))
                except ValueError:
                    self._session = None
                    raise SecureChannelError("R-ENCRYPTION: the answer does not decipher to padded data") from None
            response = ResponseApdu(body, response.sw)
        if response.sw == StatusWord.SECURITY_STATUS_NOT_SATISFIED:
            self._session = None  # the card aborted the session
        return response.to_bytes()


class CardChannel:
    """The card's end of SCP03 (for the emulator): one instance per logical channel and selection."""

    def __init__(self, keys: StaticKeys, *, kdd: bytes = bytes(10)) -> None:
        if len(kdd) != 10:
            raise ValueError("key diversification data is 10 bytes")
        self._keys = keys
        self._kdd = kdd
        self._pending: tuple[bytes, SessionKeys] | None = None  # after INITIALIZE UPDATE
        self._session: _Session | None = None
        self.aborted = False

    @property
    def level(self) -> SecurityLevel:
        """The Current Security Level (0 when no session is established)."""
        return self._session.level if self._session is not None else SecurityLevel(0)

    def initialize_update(self, command: CommandApdu, *, card_challenge: bytes | None = None) -> ResponseApdu:
        """Answer INITIALIZE UPDATE: key diversification data, key information, challenge, card cryptogram."""
        self._session, self._pending, self.aborted = None, None, False
        if len(command.data) != 8:
            return ResponseApdu(b"", StatusWord.WRONG_LENGTH)
        if command.p1 not in (0x00, self._keys.version):
            return ResponseApdu(b"", StatusWord.REFERENCED_DATA_NOT_FOUND)
        card_challenge = card_challenge if card_challenge is not None else secrets.token_bytes(8)
        context = command.data + card_challenge
        keys = SessionKeys.derive(self._keys, context)
        self._pending = (context, keys)
        data = (self._kdd + bytes((self._keys.version, SCP_ID, I_PARAMETER)) + card_challenge
                + keys.cryptogram(CARD_CRYPTOGRAM, context))
        return ResponseApdu(data, StatusWord.OK)

    def external_authenticate(self, command: CommandApdu) -> ResponseApdu:
        """Check the C-MAC and host cryptogram; on success the session is open at the level in P1."""
        pending, self._pending = self._pending, None
        if pending is None:
            return ResponseApdu(b"", StatusWord.CONDITIONS_NOT_SATISFIED)
        context, keys = pending
        try:
            level = SecurityLevel(command.p1)
        except ValueError:
            level = SecurityLevel(0)
        if level not in SUPPORTED_LEVELS or len(command.data) != 16 or not command.cla & CLA_SECURE_MESSAGING:
            self.aborted = True
            return ResponseApdu(b"", StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        session = _Session(keys, SecurityLevel.C_MAC)
        if self._unwrap(session, command) is None or not hmac.compare_digest(
                command.data[:8], keys.cryptogram(HOST_CRYPTOGRAM, context)):
            self.aborted = True
            return ResponseApdu(b"", StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        session.level = level
        self._session = session
        return ResponseApdu(b"", StatusWord.OK)

    @staticmethod
    def _unwrap(session: _Session, command: CommandApdu) -> CommandApdu | None:
        """Verify the C-MAC and decrypt; None on any security error."""
        if not command.cla & CLA_SECURE_MESSAGING or len(command.data) < MAC_LENGTH:
            return None
        data, mac = command.data[:-MAC_LENGTH], command.data[-MAC_LENGTH:]
        full = cmac(session.keys.mac, _mac_input(session.chaining, command, data))
        if not hmac.compare_digest(full[:MAC_LENGTH], mac):
            return None
        session.chaining = full
        if session.level & SecurityLevel.C_DECRYPTION:
            session.counter += 1
            if data:
                if len(data) % BLOCK:
                    return None
                try:
                    data = _unpad80(_aes_cbc(session.keys.enc, _icv(session.keys.enc, session.counter), data,
                                             decrypt=True))
                except ValueError:
                    return None
        return CommandApdu(command.cla & ~CLA_SECURE_MESSAGING, command.ins, command.p1, command.p2, data,
                           command.le)

    def unwrap(self, command: CommandApdu) -> CommandApdu | None:
        """The command in clear when it passes the Current Security Level; None = security error (the
        caller answers 6982; the session is aborted). Without a session a command passes unchanged,
        unless a session was aborted in this application session."""
        session = self._session
        if session is None:
            if self.aborted or command.cla & CLA_SECURE_MESSAGING:
                return None
            return command
        clear = self._unwrap(session, command)
        if clear is None:
            self._session, self.aborted = None, True
        return clear

    def wrap_response(self, data: bytes, sw: int) -> bytes:
        """Data + SW: the data enciphered (R-ENCRYPTION) and the R-MAC added when the session asks for them."""
        session = self._session
        if session is not None and session.level & SecurityLevel.R_MAC and _response_mac_applies(sw):
            if session.level & SecurityLevel.R_ENCRYPTION and data:
                data = _response_cipher(session, _pad80(data), decrypt=False)
            mac = cmac(session.keys.rmac, session.chaining + data + sw.to_bytes(2, "big"))[:MAC_LENGTH]
            data += mac
        return data + sw.to_bytes(2, "big")
