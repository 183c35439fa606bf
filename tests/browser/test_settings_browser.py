"""環境基本設定 in a real Chromium against gunicorn; the change reaches certificates issued by other processes."""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

import db
from tests.browser.terminal import first_password_login
from tests.conftest import ADMIN_PASSWORD, initialise, make_app
from tests.helpers import BUSINESS, business_payload, make_csr
from tests.servers import flask_cli, free_port, gunicorn, instance_env

OLD_PKI = "http://pki.old.example.jp"
NEW_PKI = "http://pki.new.example.jp"
PASSPHRASE = "browser-settings-passphrase"


def pki_urls(cert: x509.Certificate) -> list[str]:
    cdp = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    aia = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    return [str(n.value) for p in cdp for n in (p.full_name or [])] + [str(d.access_location.value) for d in aia]


def api_issue(base: str) -> x509.Certificate:
    """Issue a business server certificate through gunicorn's API (HTTP Basic)."""
    token = base64.b64encode(f"admin@system:{ADMIN_PASSWORD}".encode()).decode()
    payload = dict(business_payload(make_csr()), business_id="06")
    request = urllib.request.Request(f"{base}/api/v1/business-server-certificates", method="POST",
                                     data=json.dumps(payload).encode(),
                                     headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        serial = json.loads(response.read())["serial"]
    request = urllib.request.Request(f"{base}/api/v1/certificates/{serial}/pem",
                                     headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return x509.load_pem_x509_certificate(response.read())


def test_administrator_changes_settings_and_the_next_certificates_carry_the_new_url(browser: Any,
                                                                                    tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    port = free_port()
    base = f"http://localhost:{port}"
    # `init` with the PKI URL in its environment, as `make run` with OPAUTH_PKI_BASE_URL would.
    instance.mkdir()
    db.upgrade(f"sqlite:///{instance / 'opauth.db'}")
    app = make_app(instance, f"sqlite:///{instance / 'opauth.db'}", PUBLIC_BASE_URL=base, PKI_BASE_URL=OLD_PKI,
                   KEY_PASSPHRASE=PASSPHRASE, ARGON2_MEMORY_KIB=8192, ARGON2_TIME_COST=2, ARGON2_PARALLELISM=1)
    one_time_password = initialise(app)
    app.extensions["opauth.engine"].dispose()
    # gunicorn and later CLI commands are started without OPAUTH_PKI_BASE_URL: they read the instance's.
    env = instance_env(instance, OPAUTH_KEY_PASSPHRASE=PASSPHRASE, OPAUTH_SERVE_TLS="false",
                       OPAUTH_SESSION_COOKIE_SECURE="false")
    with gunicorn(env, port):
        context = browser.new_context(base_url=base)
        context.set_default_timeout(20000)
        page = context.new_page()
        first_password_login(page, "", "system", "admin", one_time_password, ADMIN_PASSWORD)
        page.goto("/top")
        page.click("text=運用環境設定")
        page.wait_for_url(re.compile(r"/admin/settings$"))
        assert page.input_value("#setting-PKI_BASE_URL") == OLD_PKI
        assert page.input_value("#setting-CERT_EXPIRY_WARNING_DAYS") == "30"

        # A refused value comes back with its reason and nothing changes.
        page.fill("#setting-CERT_EXPIRY_WARNING_DAYS", "0")
        page.click("button:has-text('確認')")
        assert "1 以上 365 以下で入力してください。" in page.inner_text("#error-CERT_EXPIRY_WARNING_DAYS")

        page.fill("#setting-CERT_EXPIRY_WARNING_DAYS", "45")
        page.fill("#setting-PKI_BASE_URL", NEW_PKI + "/")
        page.click("button:has-text('確認')")
        page.wait_for_url(re.compile(r"/admin/settings/confirm$"))
        changes = page.inner_text("#changes")
        assert OLD_PKI in changes and NEW_PKI in changes and "45" in changes
        assert "PASSWORD_MIN_LENGTH" not in changes
        page.click("button:has-text('登録')")
        page.wait_for_url(re.compile(r"/admin/settings$"))
        assert "有効期限警告（日前） を変更しました。" in page.content()
        assert page.input_value("#setting-CERT_EXPIRY_WARNING_DAYS") == "45"
        assert page.input_value("#setting-PKI_BASE_URL") == NEW_PKI
        context.close()

        # Through the API of the running server ...
        assert all(u.startswith(NEW_PKI + "/pki/") for u in pki_urls(api_issue(base)))
    # ... and through the CLI, a process of its own.
    csr = tmp_path / "server.csr"
    csr.write_bytes(make_csr())
    out = tmp_path / "server.pem"
    fields = [f"--{key.replace('_', '-')}={value}" for key, value in BUSINESS.items()]
    result = flask_cli(env, "cert", "issue-business-server", *fields, "--csr", csr, "--out", out)
    assert result.returncode == 0, result.stderr
    assert all(u.startswith(NEW_PKI + "/pki/") for u in pki_urls(x509.load_pem_x509_certificate(out.read_bytes())))
    listed = json.loads(flask_cli(env, "settings", "list", "--json").stdout)
    assert {i["key"]: i["value"] for i in listed}["CERT_EXPIRY_WARNING_DAYS"] == 45
