"""PC/SC transport through pyscard: pyscard → pcscd → reader driver → card."""

from __future__ import annotations

import contextlib
from typing import Any

from smartcard.Exceptions import CardConnectionException, NoCardException
from smartcard.System import readers

from apdl.errors import CardUnavailable


def reader_names() -> list[str]:
    """Names of the readers pcscd knows."""
    try:
        return [str(r) for r in readers()]
    except Exception as exc:  # pyscard raises its own types for "no service"
        raise CardUnavailable(f"PC/SC service unavailable: {exc}")


class PcscTransport:
    """A :class:`apdl.card.adapter.Transport` over one PC/SC reader (the server holds the reader)."""

    def __init__(self, reader_name: str) -> None:
        matches = [r for r in readers() if str(r) == reader_name]
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
