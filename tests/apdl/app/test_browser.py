"""The whole path in Chromium: an operator logs in at the module through opauth's login (password, or
biometric with the operator certificate over mutual TLS), registers a 利用者, sets up the regional area,
loads three APs onto the emulated card (module under its own gunicorn, card through pcscd + vpcd), sees
them on 再読み込み and deletes one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from apdl import db
from apdl.emulator.stack import PcscStack
from apdl.models import OperationLog
from tests.apdl.app.conftest import NEW_PASSWORD, Opauth, served_apdl
from tests.apdl.app.test_card_journey import _card_aps
from tests.apdl.app.world import APS, Registry, build_registry
from tests.browser.terminal import CHROMIUM, enrol_fingerprint, first_password_login, launch_chromium, terminal

MANAGER_PASSWORD = "Kawasemi-Hotaru-Chosen-2026"

pytestmark = pytest.mark.pcsc
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is required (scripts/system-deps.sh installs it)")
    with launch_chromium() as browser:
        yield browser


def _journey(page: Any, opauth: Opauth, registry: Registry, card_stack: PcscStack) -> None:
    """利用者登録, 地域住民向け領域設定, three APs loaded, 再読み込み lists them, one deleted with confirmation."""
    page.goto(opauth.apdl_base + "/residents")
    form = "#register-resident"
    for name, value in {"card_identifier": "1234567890123", "kana_family": "ヤマダ", "kana_given": "ハナコ",
                        "kanji_family": "山田", "kanji_given": "花子", "birth_date": "3610602",
                        "postal_code": "100-0001", "address1": "東京都千代田区千代田１－１"}.items():
        page.fill(f"{form} [name={name}]", value)
    page.select_option(f"{form} [name=gender]", "female")
    page.check(f"{form} [name=holder_request]")
    page.click(f"{form} button[type=submit]")
    page.wait_for_url("**/residents/*")
    page.click("#regional-area")
    page.wait_for_url("**/residents/*")
    for label in ("R1", "E1", "E2"):
        page.check(f"#offered input[value='{registry.ids[label]}']")
    page.fill("#download [name=pin]", "2580")
    page.click("#download button[type=submit]")
    page.wait_for_url("**/residents/*")
    page.click("#reload")
    page.wait_for_selector("#card-aids")
    listed = set(page.locator("#card-aids li").all_text_contents())
    assert {APS[label][0] for label in ("R1", "E1", "E2")} <= listed
    assert _card_aps(card_stack) == {APS[label][0] for label in ("R1", "E1", "E2")}

    row = page.locator("#installed tr", has_text=APS["E1"][0])
    row.locator("button[type=submit]").click()
    page.wait_for_selector("#confirm-yes")  # the confirmation names the AP; nothing deleted yet
    assert APS["E1"][1] in page.text_content("#confirm-what")
    assert APS["E1"][0] in _card_aps(card_stack)
    page.click("#confirm-yes")
    page.wait_for_selector("#installed")
    assert APS["E1"][0] not in page.text_content("#installed")
    assert f"カードAP「{APS['E1'][1]}」を削除しました。" in page.text_content("#flashes")


def test_operator_loads_three_aps_in_chromium(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack,
                                              chromium: Any) -> None:
    registry = build_registry(opauth, apdl_app)
    with served_apdl(opauth, apdl_app):
        context = chromium.new_context(ignore_https_errors=True)
        context.set_default_timeout(20000)
        page = context.new_page()
        page.goto(opauth.apdl_base + "/")
        page.click("#login")
        page.wait_for_url(opauth.base + "/login?lang=ja")  # the module asked with ui_locales=ja
        page.select_option("#tenant", "minamiedo")
        page.fill("#operator_id", "OP0604")
        page.fill("#password", opauth.passwords["chromium"])
        page.click("#login")
        page.wait_for_url("**/password")
        page.fill("#current_password", opauth.passwords["chromium"])
        page.fill("#new_password", NEW_PASSWORD)
        page.fill("#confirm_password", NEW_PASSWORD)
        page.click("#change")
        page.wait_for_url(opauth.apdl_base + "/")
        assert page.text_content("#tenant") == "南江戸市 (minamiedo)"
        assert page.text_content("#permissions") == "ap.delete ap.download user.register"

        _journey(page, opauth, registry, card_stack)
        context.close()
    assert _card_aps(card_stack) == {APS["R1"][0], APS["E2"][0]}


def _enrol_fingerprint(page: Any, opauth: Opauth) -> None:
    """The tenant manager, at the operator's terminal, logs in by password and enrols BIO0606's fingerprint."""
    first_password_login(page, opauth.base, "minamiedo", "mgr01", opauth.manager_password, MANAGER_PASSWORD)
    enrol_fingerprint(page, opauth.base, "minamiedo", "BIO0606")


def test_biometric_operator_with_certificate_loads_three_aps_in_chromium(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack, chromium: Any) -> None:
    registry = build_registry(opauth, apdl_app)
    assert opauth.biometric_p12 is not None
    with served_apdl(opauth, apdl_app), terminal(chromium, certificate=(opauth.base, opauth.biometric_p12,
                                         opauth.biometric_p12_password)) as page:
        _enrol_fingerprint(page, opauth)
        page.goto(opauth.apdl_base + "/")
        page.click("#login")
        page.wait_for_url(opauth.base + "/login?lang=ja")  # no session: waits (in ui_locales=ja)
        page.goto(opauth.base + "/bio/login")
        page.select_option("#tenant", "minamiedo")
        page.fill("#operator_id", "BIO0606")
        page.click("#bio-login")
        page.wait_for_url(opauth.apdl_base + "/")
        assert page.text_content("#name") == "生体 花子"
        assert page.text_content("#permissions") == "ap.delete ap.download user.register"
        _journey(page, opauth, registry, card_stack)
    assert _card_aps(card_stack) == {APS["R1"][0], APS["E2"][0]}
    with apdl_app.app_context():
        logins = [e.detail for e in db.get_session().scalars(select(OperationLog)) if e.action == "login"]
    assert logins and logins[-1]["acr"] == "urn:opauth:acr:biometric"
