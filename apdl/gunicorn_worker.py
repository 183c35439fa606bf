"""gunicorn's threaded worker, answering a request line longer than gunicorn reads (``limit_request_line``) with
the module's own 414 page instead of gunicorn's bare text. Shorter over-long URLs reach the application, which
answers 414 itself (a page, or JSON under /api/)."""

from __future__ import annotations

from typing import Any

from gunicorn import util
from gunicorn.http.errors import LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker

from apdl.app import uri_too_long_page


class Worker(ThreadWorker):
    """``worker_class`` of apdl.gunicorn_conf."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if not isinstance(exc, LimitRequestLine):
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        try:
            body = uri_too_long_page(self.wsgi)
            head = (f"HTTP/1.1 414 URI Too Long\r\nConnection: close\r\nContent-Type: text/html; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n\r\n")
            util.write_nonblock(client, head.encode("latin-1") + body)
        except Exception:  # the client went away, or the page could not be built: gunicorn's own answer
            super().handle_error(req, client, addr, exc)
