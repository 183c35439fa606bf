"""Typed errors of the AP download module (its own root: apdl never imports opauth)."""

from __future__ import annotations


class ApdlError(Exception):
    """Base of every error apdl raises on purpose."""


class CardError(ApdlError):
    """The card or the path to it failed (no reader, no card, malformed answer)."""


class CardUnavailable(CardError):
    """No reader, no card in the reader, or the card does not answer."""


class InvalidInput(ApdlError):
    """A form or request value is not acceptable (HTTP 400); the message is shown to the operator."""

    status = 400


class Conflict(ApdlError):
    """The request clashes with what exists (a duplicate AID, a card that is not the holder's): HTTP 409."""

    status = 409


class Refused(ApdlError):
    """A rule forbids the operation for this operator or tenant (area rules, card state): HTTP 403."""

    status = 403


class TooManyAttempts(ApdlError):
    """Too many failed attempts in a short time (pairing codes): HTTP 429."""

    status = 429
