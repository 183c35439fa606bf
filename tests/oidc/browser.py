"""A scripted browser for the real-client tests: cookies kept, redirects not followed, opauth's CA trusted."""

from __future__ import annotations

import http.cookiejar
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import ClassVar


class FormBrowser:
    """Enough of a browser for opauth's login forms; each redirect is returned so a test can check the hop."""

    headers: ClassVar[dict[str, str]] = {}  # sent with every request besides the Referer

    def __init__(self, ca: Path) -> None:
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        context = ssl.create_default_context(cafile=str(ca))
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                                  urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                                                  NoRedirect())

    def location(self, url: str, raw: str) -> str:
        """The Location of an answer to ``url`` as the test sees it (here: as sent)."""
        return raw

    def go(self, url: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        """GET (or POST ``form`` to) ``url``: status, Location and body."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, headers={"Referer": url, **self.headers})
        try:
            response = self.opener.open(request, timeout=30)
        except urllib.error.HTTPError as exc:
            return exc.code, self.location(url, exc.headers.get("Location", "")), exc.read().decode()
        return response.status, self.location(url, response.headers.get("Location", "")), response.read().decode()

    def post_form(self, url: str, fields: dict[str, str]) -> tuple[int, str, str]:
        """Open the form at ``url`` and post ``fields`` with its CSRF token."""
        _status, _location, page = self.go(url)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, page[:500]
        return self.go(url, {"csrf_token": token.group(1), **fields})
