"""The system administrator's screen for business login settings (web form, CSRF, re-authentication)."""

from __future__ import annotations

from tests.conftest import ADMIN_PASSWORD, csrf_token
from tests.oidc.conftest import World, web_login


def test_administrator_enables_business_login_in_the_web_form(world: World) -> None:
    browser = web_login(world.app, "system", "admin", ADMIN_PASSWORD)
    listing = browser.get("/admin/business-systems").get_data(as_text=True)
    assert "/admin/business-systems/05/login" in listing
    page = browser.get("/admin/business-systems/05/login")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "biz-05" in html and "https://opauth.example.jp/oidc/.well-known/openid-configuration" in html
    uri = "https://perso.city.itozaki.nagano.jp/login/cb"
    response = browser.post("/admin/business-systems/05/login", data={
        "csrf_token": csrf_token(html), "enabled": "on", "redirect_uris": f"{uri}\r\n",
        "backchannel_logout_uri": ""})
    assert response.status_code == 302
    body = world.admin.get("/api/v1/business-systems/05/oidc-client").get_json()
    assert body["enabled"] is True and body["redirect_uris"] == [uri]


def test_bad_uri_in_the_form_is_shown_and_nothing_changes(world: World) -> None:
    browser = web_login(world.app, "system", "admin", ADMIN_PASSWORD)
    before = world.admin.get("/api/v1/business-systems/05/oidc-client").get_json()
    html = browser.get("/admin/business-systems/05/login").get_data(as_text=True)
    response = browser.post("/admin/business-systems/05/login", data={
        "csrf_token": csrf_token(html), "enabled": "on", "redirect_uris": "https://evil.example.jp/cb"})
    assert response.status_code == 400 and "evil.example.jp" in response.get_data(as_text=True)
    assert world.admin.get("/api/v1/business-systems/05/oidc-client").get_json() == before


def test_operators_cannot_reach_the_settings(world: World) -> None:
    assert world.browser.get("/admin/business-systems/05/login").status_code == 403
    assert world.app.test_client().get("/admin/business-systems/99/login").status_code == 302  # to the login
