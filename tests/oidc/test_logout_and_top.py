"""RP-initiated logout and starting a business system's login from the operator top screen."""

from __future__ import annotations

import urllib.parse

from tests.conftest import csrf_token
from tests.oidc.conftest import REDIRECTS, AuthRequest, World, exchange, get_code

POST_LOGOUT = "https://www1.city.itozaki.nagano.jp/BizSys/bye"
INITIATE = "https://www1.city.itozaki.nagano.jp/BizSys/oidc/start"


def _configure(world: World) -> None:
    response = world.admin.put("/api/v1/business-systems/05/oidc-client", json={
        "enabled": True, "redirect_uris": [REDIRECTS["05"]], "post_logout_redirect_uris": [POST_LOGOUT],
        "initiate_login_uri": INITIATE})
    assert response.status_code == 200, response.get_json()


def _id_token(world: World) -> str:
    req = AuthRequest("05")
    token: str = exchange(world.app, req, get_code(world.browser, req), world.certs["05"]).get_json()["id_token"]
    return token


def test_logout_with_the_sessions_id_token_ends_the_session_and_returns(world: World) -> None:
    _configure(world)
    hint = _id_token(world)
    query = urllib.parse.urlencode({"id_token_hint": hint, "post_logout_redirect_uri": POST_LOGOUT, "state": "s1"})
    response = world.browser.get(f"/oidc/logout?{query}")
    assert response.status_code == 302 and response.headers["Location"] == POST_LOGOUT + "?state=s1"
    assert world.browser.get("/top").status_code == 302, "the opauth session has ended"


def test_logout_without_a_hint_asks_first_and_never_redirects_elsewhere(world: World) -> None:
    _configure(world)
    query = urllib.parse.urlencode({"post_logout_redirect_uri": POST_LOGOUT, "client_id": "biz-05"})
    page = world.browser.get(f"/oidc/logout?{query}")
    assert page.status_code == 200 and "confirm-logout" in page.get_data(as_text=True)
    assert world.browser.get("/top").status_code == 200, "nothing happens before the operator confirms"
    response = world.browser.post("/oidc/logout", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                        "post_logout_redirect_uri": POST_LOGOUT,
                                                        "client_id": "biz-05"})
    assert response.status_code == 200 and "Location" not in response.headers
    assert world.browser.get("/top").status_code == 302


def test_unregistered_post_logout_uri_is_not_followed(world: World) -> None:
    _configure(world)
    query = urllib.parse.urlencode({"id_token_hint": _id_token(world),
                                    "post_logout_redirect_uri": "https://evil.example.jp/"})
    response = world.browser.get(f"/oidc/logout?{query}")
    assert response.status_code == 200 and "Location" not in response.headers


def test_forged_id_token_hint_is_refused(world: World) -> None:
    response = world.browser.get("/oidc/logout?id_token_hint=eyJhbGciOiJub25lIn0.e30.")
    assert response.status_code == 400
    assert world.browser.get("/top").status_code == 200


def test_top_screen_starts_the_business_systems_login(world: World) -> None:
    before = world.browser.get("/top").get_data(as_text=True)
    assert 'href="https://www1.city.itozaki.nagano.jp/BizSys/?gid=05&amp;type=1"' in before
    _configure(world)
    html = world.browser.get("/top").get_data(as_text=True)
    expected = INITIATE + "?" + urllib.parse.urlencode({"iss": "https://opauth.example.jp/oidc",
                                                         "target_link_uri": "https://www1.city.itozaki.nagano.jp/BizSys/?gid=05&type=1"})
    assert expected.replace("&", "&amp;") in html
