"""Typed errors of the AP download module (its own root: apdl never imports opauth)."""

from __future__ import annotations


class ApdlError(Exception):
    """Base of every error apdl raises on purpose."""


class CardError(ApdlError):
    """The card or the path to it failed (no reader, no card, malformed answer)."""


class CardUnavailable(CardError):
    """No reader, no card in the reader, or the card does not answer."""
