"""Typed errors; one handler in app.py maps them to a 4xx with a clear message."""

from __future__ import annotations


class OpauthError(Exception):
    """Base class: an error whose message is safe and useful to show to the client."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCsr(OpauthError):
    code = "invalid_csr"


class InvalidInput(OpauthError):
    code = "invalid_input"


class NotFound(OpauthError):
    status = 404
    code = "not_found"


class Conflict(OpauthError):
    status = 409
    code = "conflict"


class Forbidden(OpauthError):
    status = 403
    code = "forbidden"


class CaNotInitialised(OpauthError):
    status = 503
    code = "ca_not_initialised"


class SettingsConflict(OpauthError):
    """This process's environment disagrees with the instance about what goes into certificates."""

    status = 409
    code = "settings_conflict"
