"""Business login in a real browser: a password operator signs in to a business system through opauth.

Chromium follows the business system's authorization request to opauth's login, the forced password
change and back, and lands on the business system's redirect URI with a code (the business system's
host is answered by Playwright). The business system then exchanges the code presenting its SSL通信証明書
(forwarded as a trusted proxy would) and reads the operator's claims.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from werkzeug.serving import make_server

from tests.browser.conftest import LiveServer, _free_port
from tests.conftest import ADMIN_PASSWORD, initialise, make_app
from tests.oidc.conftest import REDIRECTS, SYSTEMS, AuthRequest, World, basic, exchange, redirect_params, web_login

ONE_TIME = "One-Time-Password-2026"
NEW_PASSWORD = "Browser-Operator-2026"


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("oidc-browser")
    shutil.copy(sqlite_template, base / "opauth.db")
    port = _free_port()
    url = f"http://localhost:{port}"
    app = make_app(base / "instance", f"sqlite:///{base / 'opauth.db'}", PUBLIC_BASE_URL=url,
                   TRUSTED_PROXIES="127.0.0.1", ARGON2_MEMORY_KIB=8192, ARGON2_TIME_COST=1, ARGON2_PARALLELISM=1)
    password = initialise(app)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LiveServer(app=app, url=url, bootstrap_password=password)
    server.shutdown()
    thread.join(timeout=10)
    app.extensions["opauth.engine"].dispose()


def _world(server: LiveServer) -> World:
    """Business system 05 with business login, its certificate, and operator OP0601 (through the API)."""
    app = server.app
    web_login(app, "system", "admin", server.bootstrap_password, ADMIN_PASSWORD)
    admin = basic(app, "admin@system", ADMIN_PASSWORD)
    assert admin.put("/api/v1/business-systems/05", json=SYSTEMS["05"]).status_code in (200, 201)
    assert admin.post("/api/v1/tenants", json={"code": "minamiedo", "name": "南江戸市",
                                               "kind": "municipality"}).status_code == 201
    assert admin.put("/api/v1/business-systems/05/joint-use", json={"tenants": ["minamiedo"]}).status_code == 200
    assert admin.post("/api/v1/tenants/minamiedo/operators", json={
        "operator_id": "OP0601", "name": "山田 太郎", "auth_method": "password", "business_ids": ["05"],
        "password": ONE_TIME}).status_code == 201
    assert admin.put("/api/v1/business-systems/05/oidc-client",
                     json={"enabled": True, "redirect_uris": [REDIRECTS["05"]]}).status_code == 200
    world = World(app=app, admin=admin, browser=app.test_client())
    world.certs["05"] = world.issue_ssl_cert("05")
    return world


def test_password_operator_signs_in_to_a_business_system_in_chromium(browser: Any, oidc_server: LiveServer) -> None:
    world = _world(oidc_server)
    req = AuthRequest("05")
    context = browser.new_context(base_url=oidc_server.url)
    context.set_default_timeout(15000)
    landed: list[str] = []

    def business_system(route: Any) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<h1>業務システム</h1>")

    context.route("https://www1.city.itozaki.nagano.jp/**", business_system)
    page = context.new_page()
    page.goto(req.url())
    assert page.url.endswith("/login")
    page.select_option("#tenant", "minamiedo")
    page.fill("#operator_id", "OP0601")
    page.fill("#password", ONE_TIME)
    page.click("#login")
    page.wait_for_url("**/password")
    page.fill("#current_password", ONE_TIME)
    page.fill("#new_password", NEW_PASSWORD)
    page.fill("#confirm_password", NEW_PASSWORD)
    page.click("#change")
    page.wait_for_url(REDIRECTS["05"] + "?**")
    context.close()
    params = redirect_params(landed[-1])
    assert params["state"] == req.state and params["iss"] == oidc_server.url + "/oidc"
    # Playwright's event loop runs in this thread; the certificate check (asyncio) runs in its own, as in a server.
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(
        exchange(world.app, req, params["code"], world.certs["05"]).get_json()))
    worker.start()
    worker.join(timeout=60)
    body = result
    keys = KeySet.import_key_set(world.app.test_client().get("/oidc/jwks.json").get_json())
    claims = jwt.decode(body["id_token"], keys, algorithms=["ES256"]).claims
    assert claims["name"] == "山田 太郎" and claims["amr"] == ["pwd"] and claims["nonce"] == req.nonce
    assert claims["https://opauth/tenant"]["code"] == "minamiedo"
