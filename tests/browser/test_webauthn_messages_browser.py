"""A failed WebAuthn call in Chromium tells the operator what to do, in the page's language.

The browser's own DOMException text (English, with a W3C link) is never shown. With no registered
credential on the virtual authenticator, ``navigator.credentials.get`` fails with NotAllowedError.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import Terminal


@pytest.mark.parametrize(("lang", "expected"), [
    ("ja", "もう一度ボタンを押して登録した指を置くか"),
    ("en", "place your registered finger on the reader"),
])
def test_not_allowed_error_is_explained_in_the_page_language(terminal: Terminal, lang: str, expected: str) -> None:
    page = terminal.page
    page.goto(f"/bio/login?lang={lang}")
    page.fill("#operator_id", "NOBODY01")
    page.click("#bio-login")
    page.wait_for_selector("#webauthn-status.error")
    status = page.locator("#webauthn-status").inner_text()
    assert expected in status, status
    assert "w3.org" not in status and "NotAllowedError" not in status and "The operation" not in status
