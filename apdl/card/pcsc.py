"""PC/SC transport through pyscard: pyscard → pcscd → reader driver → card."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from smartcard import scard
from smartcard.Exceptions import CardConnectionException, NoCardException
from smartcard.pcsc.PCSCExceptions import EstablishContextException, ListReadersException
from smartcard.System import readers

from apdl.errors import CardUnavailable


def reader_names() -> list[str]:
    """Names of the readers pcscd knows."""
    try:
        return [str(r) for r in readers()]
    except Exception as exc:  # pyscard raises its own types for "no service"
        raise CardUnavailable(f"PC/SC service unavailable: {exc}")


@dataclass(frozen=True)
class ReaderState:
    """What pcscd reports for one reader without connecting: a card in it, one that gave no valid ATR."""

    present: bool
    mute: bool
    atr: bytes


def reader_state(reader_name: str) -> ReaderState:
    """The reader's state now (SCardGetStatusChange without waiting); CardUnavailable when pcscd cannot tell."""
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        raise CardUnavailable(f"PC/SC service unavailable: {scard.SCardGetErrorMessage(hresult)}")
    try:
        hresult, states = scard.SCardGetStatusChange(context, 0, [(reader_name, scard.SCARD_STATE_UNAWARE)])
        if hresult not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
            raise CardUnavailable(f"reader {reader_name!r}: {scard.SCardGetErrorMessage(hresult)}")
        _name, flags, atr = states[0]
        return ReaderState(present=bool(flags & scard.SCARD_STATE_PRESENT), mute=bool(flags & scard.SCARD_STATE_MUTE),
                           atr=bytes(atr))
    finally:
        scard.SCardReleaseContext(context)


PROTOCOLS = {scard.SCARD_PROTOCOL_T0: "T=0", scard.SCARD_PROTOCOL_T1: "T=1", scard.SCARD_PROTOCOL_RAW: "RAW"}


class PcscTransport:
    """A :class:`apdl.card.adapter.Transport` over one PC/SC reader (the server holds the reader)."""

    def __init__(self, reader_name: str) -> None:
        try:
            matches = [r for r in readers() if str(r) == reader_name]
        except (EstablishContextException, ListReadersException) as exc:  # pcscd is not running
            raise CardUnavailable(f"the PC/SC service is not available: {exc}") from None
        if not matches:
            raise CardUnavailable(f"no PC/SC reader named {reader_name!r}")
        self._connection: Any = matches[0].createConnection()
        try:
            self._connection.connect()
        except (NoCardException, CardConnectionException) as exc:
            self._release()
            raise CardUnavailable(f"no card in {reader_name!r}: {exc}")

    @property
    def atr(self) -> bytes:
        """The card's answer to reset."""
        return bytes(self._connection.getATR())

    @property
    def protocol(self) -> str:
        """The protocol pcscd negotiated with the card (T=0 or T=1)."""
        value = int(self._connection.getProtocol())
        return PROTOCOLS.get(value, f"0x{value:X}")

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU and return data + SW1 SW2."""
        try:
            data, sw1, sw2 = self._connection.transmit(list(apdu))
        except CardConnectionException as exc:
            raise CardUnavailable(f"card did not answer: {exc}")
        return bytes(data) + bytes((sw1, sw2))

    def close(self) -> None:
        """Release the card (pcscd resets it for the next user) and the PC/SC context."""
        with contextlib.suppress(CardConnectionException):
            self._connection.disconnect()
        self._release()

    def _release(self) -> None:
        # pyscard otherwise releases the context in __del__, possibly after pcscd is gone
        with contextlib.suppress(CardConnectionException):
            self._connection.release()
