"""gunicorn's threaded worker, answering every request gunicorn itself refuses to read (a request line longer
than ``limit_request_line``, a NUL or other invalid byte in it, an unknown method or HTTP version, an invalid
or oversized header...) with the module's own answer and the right status (400, 414, 431...) instead of
gunicorn's bare text, which repeats the request. Shorter over-long URLs reach the application, which answers
414 itself (a page, or JSON under /api/)."""

from __future__ import annotations

from http import HTTPStatus
from types import TracebackType
from typing import Any

from gunicorn import util
from gunicorn.http.errors import (
    ConfigurationProblem,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.workers.gthread import ThreadWorker

from apdl.app import unreadable_request_answer

STATUSES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...] = (
    (LimitRequestLine, 414), (LimitRequestHeaders, 431), (ExpectationFailed, 417), (UnsupportedTransferCoding, 501),
    (ForbiddenProxyRequest, 403), ((ConfigurationProblem, InvalidResponseHeader, InvalidResponseHeaderName), 500),
)  # every other ParseException (request line, method, version, header, chunk, proxy line...): 400


def status_of(exc: BaseException) -> int:
    """The status gunicorn gives the parse error (its workers/base.py handle_error)."""
    return next((status for kinds, status in STATUSES if isinstance(exc, kinds)), 400)


def request_start(exc: BaseException) -> bytes:
    """The first bytes of the request gunicorn failed to read, b"" when unknown.

    gunicorn passes handle_error no bytes; they are in its parser's buffer, the ``buf`` of
    gunicorn.http.message.Request.parse, reachable only through the exception's traceback."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        buf = frame.f_locals.get("buf") if frame.f_code.co_name == "parse" else None
        if isinstance(buf, (bytes, bytearray)) and frame.f_code.co_filename.endswith("message.py"):
            return bytes(buf[:64])
        tb = tb.tb_next
    return b""


def is_api(start: bytes) -> bool:
    """Whether the request line starts ``<METHOD> /api/`` (one empty line before it is allowed, as gunicorn does)."""
    parts = start.removeprefix(b"\r\n").split(b" ", 2)
    return len(parts) > 1 and parts[1].startswith(b"/api/")


class Worker(ThreadWorker):
    """``worker_class`` of apdl.gunicorn_conf."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if not isinstance(exc, ParseException):  # the application's errors, TLS errors: gunicorn's own answer
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        try:
            code = status_of(exc)
            body, kind = unreadable_request_answer(self.wsgi, code, is_api(request_start(exc)))
            head = (f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\nConnection: close\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n\r\n")
            util.write_nonblock(client, head.encode("latin-1") + body)
        except Exception:  # the client went away, or the page could not be built: gunicorn's own answer
            super().handle_error(req, client, addr, exc)
