"""First steps of a new administrator: the one-time password changed without a browser (API, CLI),
and a refused form says what was wrong with it."""

from __future__ import annotations

import base64

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

import db
from kernel.audit import AuditEvent
from tests.conftest import csrf_token

NEW_PASSWORD = "Scripted-Setup-Password-7"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _actions(app: Flask) -> list[str]:
    with app.app_context():
        return [e.action for e in db.get_session().scalars(select(AuditEvent).order_by(AuditEvent.id))]


def test_api_client_changes_the_one_time_password_and_then_gets_in(app: Flask) -> None:
    client = app.test_client()
    otp = app.config["BOOTSTRAP_PASSWORD"]
    # Before: every API call is refused while the password is the one-time one.
    refused = client.get("/api/v1/tenants", headers=_basic("admin@system", otp))
    assert refused.status_code == 403 and refused.get_json()["error"] == "password_change_required"

    weak = client.post("/api/v1/me/password", headers=_basic("admin@system", otp), json={"new_password": "short"})
    assert weak.status_code == 400 and weak.get_json()["error"] == "password_rejected"
    assert "auth.password_change_rejected" in _actions(app)

    changed = client.post("/api/v1/me/password", headers=_basic("admin@system", otp),
                          json={"new_password": NEW_PASSWORD})
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["must_change_password"] is False
    assert "auth.password_changed" in _actions(app)

    assert client.get("/api/v1/tenants", headers=_basic("admin@system", otp)).status_code == 401
    assert client.get("/api/v1/tenants", headers=_basic("admin@system", NEW_PASSWORD)).status_code == 200


def test_api_password_change_needs_the_current_password_by_http_basic(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/api/v1/me/password", json={"new_password": NEW_PASSWORD}).status_code == 401
    wrong = client.post("/api/v1/me/password", headers=_basic("admin@system", "not-the-password"),
                        json={"new_password": NEW_PASSWORD})
    assert wrong.status_code == 401
    missing = client.post("/api/v1/me/password", headers=_basic("admin@system", app.config["BOOTSTRAP_PASSWORD"]),
                          json={})
    assert missing.status_code == 400 and "new_password" in missing.get_json()["message"]


def test_api_password_change_ignores_a_browser_session_cookie(admin_client: FlaskClient) -> None:
    # Without a form and its CSRF token a logged-in browser must not change its password through the API.
    response = admin_client.post("/api/v1/me/password", json={"new_password": NEW_PASSWORD})
    assert response.status_code == 403 and response.get_json()["error"] == "csrf"  # the API's cookie guard


def test_cli_changes_the_one_time_password(app: Flask) -> None:
    otp = app.config["BOOTSTRAP_PASSWORD"]
    runner = app.test_cli_runner()
    bad = runner.invoke(args=["operator", "change-password", "admin"], input=f"wrong\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert bad.exit_code == 2 and "current password is not correct" in bad.output
    result = runner.invoke(args=["operator", "change-password", "--tenant", "system", "admin"],
                           input=f"{otp}\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert otp not in result.output and NEW_PASSWORD not in result.output
    assert app.test_client().get("/api/v1/tenants", headers=_basic("admin", NEW_PASSWORD)).status_code == 200
    actions = _actions(app)
    assert "auth.password_change_rejected" in actions and "auth.password_changed" in actions


# --- CSRF refusals say which check failed ----------------------------------------------------------

def _login_form(client: FlaskClient, app: Flask, base_url: str) -> dict[str, str]:
    page = client.get("/login", base_url=base_url).get_data(as_text=True)
    return {"csrf_token": csrf_token(page), "tenant": "system", "operator_id": "admin",
            "password": app.config["BOOTSTRAP_PASSWORD"]}


def test_scripted_https_login_without_referer_is_told_the_referer_is_missing(app: Flask) -> None:
    client = app.test_client()
    base = "https://localhost"
    response = client.post("/login", base_url=base, data=_login_form(client, app, base))
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Referer ヘッダがありません" in body and "有効期限" not in body

    response = client.post("/login", base_url=base, data=_login_form(client, app, base),
                           headers={"Referer": "https://evil.example/login"})
    assert response.status_code == 400
    assert "Referer ヘッダがこのサイトのものではありません" in response.get_data(as_text=True)

    response = client.post("/login", base_url=base, data=_login_form(client, app, base),
                           headers={"Referer": "https://localhost/login"})
    assert response.status_code == 302


def test_form_without_token_or_session_is_told_so(app: Flask) -> None:
    client = app.test_client()
    form = _login_form(client, app, "http://localhost")
    without_token = client.post("/login", data={k: v for k, v in form.items() if k != "csrf_token"})
    assert without_token.status_code == 400
    assert "確認用トークン (csrf_token) がありません" in without_token.get_data(as_text=True)

    fresh = app.test_client()  # no session cookie: the token cannot be checked against anything
    no_session = fresh.post("/login", data=form)
    assert no_session.status_code == 400 and "セッションがないため" in no_session.get_data(as_text=True)

    other = app.test_client()
    _login_form(other, app, "http://localhost")  # a session of its own, with a different secret
    mismatched = other.post("/login", data=form)
    assert mismatched.status_code == 400 and "トークンが正しくありません" in mismatched.get_data(as_text=True)
