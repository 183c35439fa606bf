"""The whole path in Chromium: an operator logs in at the module through opauth's login page, registers a
利用者, sets up the regional area, loads three APs onto the emulated card (module under its own gunicorn,
card through pcscd + vpcd), sees them on 再読み込み and deletes one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from apdl.emulator.stack import PcscStack
from tests.apdl.app.conftest import NEW_PASSWORD, Opauth, served_apdl
from tests.apdl.app.test_card_journey import _card_aps
from tests.apdl.app.world import APS, build_registry

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.pcsc
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is required (scripts/system-deps.sh installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


def test_operator_loads_three_aps_in_chromium(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack,
                                              chromium: Any) -> None:
    registry = build_registry(opauth, apdl_app)
    with served_apdl(opauth, apdl_app):
        context = chromium.new_context(ignore_https_errors=True)
        context.set_default_timeout(20000)
        page = context.new_page()
        page.goto(opauth.apdl_base + "/")
        page.click("#login")
        page.wait_for_url(opauth.base + "/login")
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
        row.locator("[name=confirm]").check()
        row.locator("button[type=submit]").click()
        page.wait_for_url("**/residents/*")
        assert APS["E1"][0] not in page.text_content("#installed")
        context.close()
    assert _card_aps(card_stack) == {APS["R1"][0], APS["E2"][0]}
