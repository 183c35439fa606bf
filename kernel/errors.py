"""Typed errors; one handler in app.py maps them to a 4xx with a clear message.

Messages are written in Japanese and marked for translation with ``lazy_gettext``
(``InvalidInput(lazy_gettext("団体名 (name) は必須です"))``): the text is chosen when it
is shown (``exc.message``), so a web page or API answer speaks the request's language
and the CLI the operator's (``i18n.select_locale``). ``code`` is the stable machine name
that API clients should test instead of the words.
"""

from __future__ import annotations

from flask_babel.speaklater import LazyString


class OpauthError(Exception):
    """Base class: an error whose message is safe and useful to show to the client."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str | LazyString) -> None:
        super().__init__(message)
        self._message = message

    @property
    def message(self) -> str:
        """The message in the current language (a lazy message is translated when read)."""
        return str(self._message)

    def __str__(self) -> str:
        return self.message


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


class UnsupportedMediaType(OpauthError):
    """A body in a format the endpoint does not take (RFC 9110 15.5.16)."""

    status = 415
    code = "unsupported_media_type"


class CaNotInitialised(OpauthError):
    status = 503
    code = "ca_not_initialised"


class SettingsConflict(OpauthError):
    """This process's environment disagrees with the instance about what goes into certificates."""

    status = 409
    code = "settings_conflict"
