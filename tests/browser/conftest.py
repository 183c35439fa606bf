"""Real-browser fixtures: one opauth server and one headless Chromium per test module.

The server is werkzeug in a thread on 127.0.0.1 with a free port, reached as
``http://localhost:PORT`` (a secure context for WebAuthn without TLS). The
browser is Debian's ``/usr/bin/chromium`` driven by Playwright (never a
downloaded browser); each test gets a fresh context with a CDP virtual
authenticator (CTAP2, internal, user verification).
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from tests.browser.terminal import CHROMIUM, add_fingerprint_reader, launch_chromium
from tests.conftest import initialise, make_app

if not Path(CHROMIUM).exists():  # scripts/system-deps.sh installs it; fail loudly under CI
    import os

    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/system-deps.sh")
    pytest.skip(f"{CHROMIUM} is not installed (scripts/system-deps.sh installs it)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@dataclass
class LiveServer:
    app: Flask
    url: str
    bootstrap_password: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("browser")
    shutil.copy(sqlite_template, base / "opauth.db")
    port = _free_port()
    url = f"http://localhost:{port}"
    app = make_app(base / "instance", f"sqlite:///{base / 'opauth.db'}", PUBLIC_BASE_URL=url,
                   ARGON2_MEMORY_KIB=8192, ARGON2_TIME_COST=2, ARGON2_PARALLELISM=1)
    password = initialise(app)
    server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="opauth-live-server", daemon=True)
    thread.start()
    yield LiveServer(app=app, url=url, bootstrap_password=password)
    server.shutdown()
    thread.join(timeout=10)
    app.extensions["opauth.engine"].dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


@dataclass
class Terminal:
    """A browser tab with a virtual platform authenticator (fingerprint reader) attached."""

    page: Any
    cdp: Any
    authenticator_id: str

    def set_user_verified(self, verified: bool) -> None:
        self.cdp.send("WebAuthn.setUserVerified", {"authenticatorId": self.authenticator_id,
                                                   "isUserVerified": verified})

    def credentials(self) -> list[dict[str, Any]]:
        result = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id})
        return list(result["credentials"])


@pytest.fixture
def terminal(browser: Any, live_server: LiveServer) -> Iterator[Terminal]:
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15000)
    page = context.new_page()
    cdp, authenticator_id = add_fingerprint_reader(context, page)
    yield Terminal(page=page, cdp=cdp, authenticator_id=authenticator_id)
    context.close()


@pytest.fixture
def second_tab(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    """Another browser (no authenticator), e.g. an administrator at their own desk."""
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15000)
    yield context.new_page()
    context.close()
