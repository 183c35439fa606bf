"""Operators and managers in a real Chromium: biometric enrolment and login (CDP virtual authenticator),
password login, lockout, first-login password change, the operator top screen."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from sqlalchemy import insert, select

import db
from operators.models import JointUse, Role, Tenant, operator_business_system
from tests.bio.helpers import OPERATOR_PASSWORD, add_business_system, add_operator, register_biometric
from tests.browser.conftest import LiveServer, Terminal

_ids = itertools.count(1)


def _unique(prefix: str) -> str:
    return f"{prefix}{next(_ids):03d}"


def _password_login(page: Any, operator_id: str, password: str, tenant: str = "system") -> None:
    page.goto("/login")
    page.select_option("#tenant", tenant)
    page.fill("#operator_id", operator_id)
    page.fill("#password", password)
    page.click("#login")


def _logout(page: Any) -> None:
    page.click("header form button[type=submit]")
    page.wait_for_url(re.compile(r"/login$"))


def _admin(live_server: LiveServer) -> str:
    operator_id = _unique("ADM")
    add_operator(live_server.app, operator_id, role=Role.SYSTEM_ADMIN)
    return operator_id


def _enrol_by_manager(terminal: Terminal, live_server: LiveServer, operator_id: str) -> None:
    """The manager logs in at the operator's terminal and enrols the operator's fingerprint."""
    page = terminal.page
    _password_login(page, _admin(live_server), OPERATOR_PASSWORD)
    page.wait_for_url(re.compile(r"/top$"))
    page.click("text=生体情報管理")
    page.click(f"tr:has-text('{operator_id}') >> text=登録・削除")
    page.fill("#nickname", "窓口端末1")
    page.click("#bio-register")
    page.wait_for_selector("#credentials")
    assert "生体情報を登録しました" in page.content()
    assert len(terminal.credentials()) == 1
    _logout(page)


def _bio_login(page: Any, operator_id: str) -> None:
    page.goto("/bio/login")
    page.fill("#operator_id", operator_id)
    page.click("#bio-login")


def _grant(live_server: LiveServer, operator_id: str, *business_pks: int) -> None:
    with live_server.app.app_context():
        session = db.get_session()
        from operators.models import Operator

        operator = session.scalar(select(Operator).where(Operator.operator_id == operator_id))
        tenant = session.scalar(select(Tenant).where(Tenant.code == "system"))
        assert operator is not None and tenant is not None
        for pk in business_pks:
            session.execute(insert(operator_business_system).values(operator_id=operator.id, business_system_id=pk))
            if session.get(JointUse, (tenant.id, pk)) is None:
                session.add(JointUse(tenant_id=tenant.id, business_system_id=pk))
        session.commit()


def test_manager_enrols_and_the_operator_logs_in_to_the_top_screen(terminal: Terminal,
                                                                   live_server: LiveServer) -> None:
    operator_id = _unique("BIO")
    register_biometric(live_server.app, operator_id)
    usable = add_business_system(live_server.app, f"{next(_ids) % 90 + 10}", "カードAPダウンロード")
    _grant(live_server, operator_id, usable)
    _enrol_by_manager(terminal, live_server, operator_id)
    page = terminal.page
    _bio_login(page, operator_id)
    page.wait_for_url(re.compile(r"/top$"))
    assert "操作者用トップ画面" in page.content()
    link = page.locator("#business-systems a")
    assert link.count() == 1 and "カードAPダウンロード" in link.inner_text()
    assert link.get_attribute("href", timeout=1000).startswith("https://biz")
    assert page.locator("#business-systems img").evaluate("img => img.naturalWidth") > 0  # the image loads
    assert terminal.credentials()[0]["signCount"] >= 1


def test_login_refused_when_the_authenticator_does_not_verify_the_user(terminal: Terminal,
                                                                       live_server: LiveServer) -> None:
    operator_id = _unique("BIO")
    register_biometric(live_server.app, operator_id)
    _enrol_by_manager(terminal, live_server, operator_id)
    terminal.set_user_verified(False)
    page = terminal.page
    _bio_login(page, operator_id)
    page.wait_for_selector("#webauthn-status.error")
    assert page.url.endswith("/bio/login")
    # The browser itself refuses UV=required without verification; a page that asks for
    # "discouraged" gets an assertion without the UV flag, and the server refuses it.
    status = page.evaluate("""async (operatorId) => {
        const root = document.getElementById('webauthn');
        const headers = {'Content-Type': 'application/json', 'X-CSRFToken': root.dataset.csrf};
        const options = await (await fetch('/bio/login/options', {method: 'POST', headers,
            body: JSON.stringify({tenant: 'system', operator_id: operatorId})})).json();
        options.userVerification = 'discouraged';
        const credential = await navigator.credentials.get(
            {publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options)});
        const response = await fetch('/bio/login/verify', {method: 'POST', headers,
            body: JSON.stringify({credential: credential.toJSON()})});
        return response.status;
    }""", operator_id)
    assert status == 401
    assert "/login" in page.goto("/top").url


def _assertion(page: Any, operator_id: str) -> dict[str, Any]:
    """Options and an assertion from the authenticator, not yet sent to the server."""
    page.goto("/bio/login")
    result: dict[str, Any] = page.evaluate("""async (operatorId) => {
        const root = document.getElementById('webauthn');
        const headers = {'Content-Type': 'application/json', 'X-CSRFToken': root.dataset.csrf};
        const options = await (await fetch('/bio/login/options', {method: 'POST', headers,
            body: JSON.stringify({tenant: 'system', operator_id: operatorId})})).json();
        const credential = await navigator.credentials.get(
            {publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options)});
        return credential.toJSON();
    }""", operator_id)
    return result


def _post_verify(page: Any, assertion: dict[str, Any], *, fresh_options_for: str | None = None) -> int:
    status: int = page.evaluate("""async ([assertion, operatorId]) => {
        const root = document.getElementById('webauthn');
        const headers = {'Content-Type': 'application/json', 'X-CSRFToken': root.dataset.csrf};
        if (operatorId) {
            await fetch('/bio/login/options', {method: 'POST', headers,
                body: JSON.stringify({tenant: 'system', operator_id: operatorId})});
        }
        const response = await fetch('/bio/login/verify', {method: 'POST', headers,
            body: JSON.stringify({credential: assertion})});
        return response.status;
    }""", [assertion, fresh_options_for])
    return status


def test_replayed_assertion_is_refused(terminal: Terminal, live_server: LiveServer) -> None:
    operator_id = _unique("BIO")
    register_biometric(live_server.app, operator_id)
    _enrol_by_manager(terminal, live_server, operator_id)
    page = terminal.page
    assertion = _assertion(page, operator_id)
    assert _post_verify(page, assertion) == 200
    _logout_via_request(page)
    page.goto("/bio/login")
    assert _post_verify(page, json.loads(json.dumps(assertion)), fresh_options_for=operator_id) == 401
    assert "/login" in page.goto("/top").url


def _logout_via_request(page: Any) -> None:
    page.goto("/top")
    _logout(page)


def test_deleted_credential_is_refused(terminal: Terminal, second_tab: Any, live_server: LiveServer) -> None:
    operator_id = _unique("BIO")
    register_biometric(live_server.app, operator_id)
    _enrol_by_manager(terminal, live_server, operator_id)
    page = terminal.page
    pending = _assertion(page, operator_id)  # the operator's ceremony is in flight...
    admin = second_tab  # ...while a manager deletes the credential at their own desk
    _password_login(admin, _admin(live_server), OPERATOR_PASSWORD)
    admin.wait_for_url(re.compile(r"/top$"))
    admin.goto(f"/bio/manage/system/{operator_id}")
    admin.click(".delete-credential")
    admin.wait_for_selector("#consequence")  # the confirmation page: nothing deleted yet
    admin.click("#confirm-delete")
    admin.wait_for_selector("#no-credentials")
    assert _post_verify(page, pending) == 401
    _bio_login(page, operator_id)  # the authenticator still holds the key; the server no longer knows it
    page.wait_for_selector("#webauthn-status.error")
    assert "/login" in page.goto("/top").url


def test_password_login_and_the_top_screen(terminal: Terminal, live_server: LiveServer) -> None:
    operator_id = _unique("OP")
    add_operator(live_server.app, operator_id)
    shown = add_business_system(live_server.app, f"{next(_ids) % 90 + 10}", "図書館システム")
    hidden = add_business_system(live_server.app, f"{next(_ids) % 90 + 10}", "停止中業務", enabled=False)
    _grant(live_server, operator_id, shown, hidden)
    page = terminal.page
    _password_login(page, operator_id, OPERATOR_PASSWORD)
    page.wait_for_url(re.compile(r"/top$"))
    names = page.locator("#business-systems .business-name").all_inner_texts()
    assert names == ["図書館システム"]
    assert page.locator("#admin-menu").count() == 0


def test_lockout_after_repeated_failures(terminal: Terminal, live_server: LiveServer) -> None:
    operator_id = _unique("OP")
    add_operator(live_server.app, operator_id)
    page = terminal.page
    for _ in range(live_server.app.config["LOGIN_MAX_FAILURES"]):
        _password_login(page, operator_id, "wrong-password-123")
        page.wait_for_selector("p.error")
    _password_login(page, operator_id, OPERATOR_PASSWORD)
    page.wait_for_selector("p.error")
    assert page.url.endswith("/login") and "現在ログインできません" in page.content()


def test_first_login_forces_a_password_change(terminal: Terminal, live_server: LiveServer) -> None:
    operator_id = _unique("OP")
    add_operator(live_server.app, operator_id, must_change=True)
    page = terminal.page
    _password_login(page, operator_id, OPERATOR_PASSWORD)
    page.wait_for_url(re.compile(r"/password$"))
    assert page.goto("/top").url.endswith("/password")  # nothing else until the password is changed
    page.fill("#current_password", OPERATOR_PASSWORD)
    page.fill("#new_password", OPERATOR_PASSWORD)  # reuse is refused
    page.fill("#confirm_password", OPERATOR_PASSWORD)
    page.click("#change")
    page.wait_for_selector("p.error")
    page.fill("#current_password", OPERATOR_PASSWORD)
    page.fill("#new_password", "Hinoki-Kaede-7731")
    page.fill("#confirm_password", "Hinoki-Kaede-7731")
    page.click("#change")
    page.wait_for_url(re.compile(r"/top$"))
    _logout(page)
    _password_login(page, operator_id, "Hinoki-Kaede-7731")
    page.wait_for_url(re.compile(r"/top$"))


def test_english_can_be_selected(terminal: Terminal) -> None:
    page = terminal.page
    page.goto("/login")
    page.click("text=English")
    assert page.locator("#login").inner_text() == "Log in"
    page.goto("/login")  # remembered in a cookie
    assert page.locator("html").get_attribute("lang") == "en"
    page.click("text=日本語")
    assert page.locator("#login").inner_text() == "ログイン"
