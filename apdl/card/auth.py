"""Cryptograms of the reference adapter's mutual authentication (AES-CMAC over the other side's challenge).

A stand-in for the real chip's authentication, which is not public. A different constant byte for
each direction keeps a card's answer from being replayed as the terminal's.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.cmac import CMAC

_CARD_PROOF = b"\x01"
_TERMINAL_PROOF = b"\x02"


def _cmac(key: bytes, message: bytes) -> bytes:
    mac = CMAC(AES(key))
    mac.update(message)
    return mac.finalize()


def card_cryptogram(key: bytes, terminal_challenge: bytes) -> bytes:
    """What the card answers to INTERNAL AUTHENTICATE over the terminal's challenge."""
    return _cmac(key, _CARD_PROOF + terminal_challenge)


def terminal_cryptogram(key: bytes, card_challenge: bytes) -> bytes:
    """What the terminal sends in EXTERNAL AUTHENTICATE over the card's GET CHALLENGE answer."""
    return _cmac(key, _TERMINAL_PROOF + card_challenge)
