"""The operator's terminal in Chromium, shared by opauth's and the AP download module's browser tests:
a browser context (optionally presenting the operator's PKCS#12 as TLS client certificate) whose page has
a CDP virtual authenticator standing in for the fingerprint reader, and the manager's enrolment at it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by scripts/system-deps.sh (never a downloaded browser)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

# CTAP2 platform authenticator with user verification that always succeeds: a fingerprint reader.
FINGERPRINT_READER = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                      "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True}


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """Headless Chromium driven by Playwright."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def add_fingerprint_reader(context: Any, page: Any) -> tuple[Any, str]:
    """Attach a virtual authenticator to the page; returns the CDP session and the authenticator's id."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    authenticator_id = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": FINGERPRINT_READER})
    return cdp, str(authenticator_id["authenticatorId"])


@contextmanager
def terminal(browser: Any, *, base_url: str | None = None, certificate: tuple[str, Path, str] | None = None,
             timeout_ms: int = 20000) -> Iterator[Any]:
    """A page at the operator's terminal. ``certificate`` is (origin, PKCS#12 path, passphrase)."""
    options: dict[str, Any] = {"ignore_https_errors": True}
    if base_url is not None:
        options["base_url"] = base_url
    if certificate is not None:
        origin, p12, passphrase = certificate
        options["client_certificates"] = [{"origin": origin, "pfxPath": str(p12), "passphrase": passphrase}]
    context = browser.new_context(**options)
    context.set_default_timeout(timeout_ms)
    try:
        page = context.new_page()
        add_fingerprint_reader(context, page)
        yield page
    finally:
        context.close()


def first_password_login(page: Any, base: str, tenant: str, operator_id: str, password: str,
                         new_password: str) -> None:
    """A first login with the one-time password, which opauth has changed at once (to the top screen)."""
    page.goto(base + "/login")
    page.select_option("#tenant", tenant)
    page.fill("#operator_id", operator_id)
    page.fill("#password", password)
    page.click("#login")
    page.wait_for_url(re.compile(r"/password$"))
    page.fill("#current_password", password)
    page.fill("#new_password", new_password)
    page.fill("#confirm_password", new_password)
    page.click("#change")
    page.wait_for_url(re.compile(r"/top$"))


def enrol_fingerprint(page: Any, base: str, tenant: str, operator_id: str, *, log_out: bool = True) -> None:
    """The manager, logged in at this terminal, enrols the operator's fingerprint (生体情報登録); then logs out."""
    page.goto(f"{base}/bio/manage/{tenant}/{operator_id}")
    page.fill("#nickname", "窓口端末")
    page.click("#bio-register")
    page.wait_for_selector("#credentials")
    if log_out:
        page.click("header form button[type=submit]")
        page.wait_for_url(re.compile(r"/login$"))
