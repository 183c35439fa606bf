"""A biometric operator's whole journey in a real Chromium against `make run`'s server (gunicorn, TLS).

Everything is created through the product's own paths: `flask init` and the CLI for the
installation (business systems from CSRs, tenants, joint use, each tenant's manager), then the web UI
as the managers use it — 操作者登録 with 認証方式=生体, CSV 一括登録, 操作者情報の移行 — the PKCS#12
download, 生体情報登録 at the operator's terminal (CDP virtual authenticator), and the operator's
biometric login with that PKCS#12 as the TLS client certificate. The operator must land on the top
screen listing exactly the business systems they are permitted.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.browser.terminal import terminal
from tests.helpers import SUBJECT, make_csr
from tests.servers import flask_cli, free_port, gunicorn, instance_env

sync_api = pytest.importorskip("playwright.sync_api")

CHEAP_ARGON2 = {"OPAUTH_ARGON2_MEMORY_KIB": "8192", "OPAUTH_ARGON2_TIME_COST": "1",
                "OPAUTH_ARGON2_PARALLELISM": "1"}
# 05 and 07 may be used by both tenants' operators as granted; 09 only by 南江戸市; 07 and 09 not by 南武蔵野市.
JOINT_USE = {"05": ("minamiedo", "musashino"), "07": ("minamiedo",), "09": ("minamiedo",)}
_ids = itertools.count(1)


@dataclass
class Site:
    """The running installation and the managers' current passwords."""

    url: str
    env: dict[str, str]
    tmp: Path
    passwords: dict[str, str] = field(default_factory=dict)  # "tenant/operator_id" -> password


def _cli(env: dict[str, str], *args: str | Path) -> str:
    result = flask_cli(env, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout + result.stderr


def _business_system(env: dict[str, str], tmp: Path, business_id: str) -> None:
    """業務サーバ証明書発行 from the business server's CSR (CN = the host of its 業務トップURL)."""
    host = f"biz{business_id}.city.example.jp"
    csr = tmp / f"biz{business_id}.csr"
    subject = x509.Name([*(a for a in SUBJECT if a.oid != x509.NameOID.COMMON_NAME),
                         x509.NameAttribute(x509.NameOID.COMMON_NAME, host)])
    csr.write_bytes(make_csr(subject=subject))
    _cli(env, "cert", "issue-business-server", "--business-id", business_id, "--name", f"業務{business_id}",
         "--admin-org", "BCS", "--top-url", f"https://{host}/top", "--operator-admin-url", f"https://{host}/op",
         "--personalize-url", f"https://{host}/perso", "--phone", "03-1234-5678", "--email", f"admin@{host}",
         "--csr", csr, "--out", tmp / f"biz{business_id}.pem")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("journeys")
    port = free_port()
    url = f"https://localhost:{port}"
    env = instance_env(tmp / "instance", OPAUTH_PUBLIC_BASE_URL=url, OPAUTH_BIOMETRIC_CLIENT_CERT_REQUIRED="true",
                       **CHEAP_ARGON2)
    _cli(env, "init")
    for business_id in JOINT_USE:
        _business_system(env, tmp, business_id)
    _cli(env, "tenant", "create", "--code", "minamiedo", "--name", "南江戸市")
    _cli(env, "tenant", "create", "--code", "musashino", "--name", "南武蔵野市")
    for business_id, tenants in JOINT_USE.items():
        _cli(env, "tenant", "joint-use", business_id, *tenants)
    passwords = {}
    for tenant, manager in (("minamiedo", "mgrA"), ("musashino", "mgrB")):
        out = _cli(env, "operator", "register", "--tenant", tenant, "--operator-id", manager,
                   "--name", f"{tenant} 運用管理", "--role", "tenant_manager", "--p12-out", tmp / f"{manager}.p12")
        match = re.search(r"one-time login password \(shown once\): (\S+)", out)
        assert match, out
        passwords[f"{tenant}/{manager}"] = match.group(1)
    with gunicorn(env, port):
        yield Site(url=url, env=env, tmp=tmp, passwords=passwords)


@dataclass(frozen=True)
class Pkcs12:
    """The PKCS#12 file the manager downloaded and the password shown beside it."""

    path: Path
    password: str


@contextmanager
def _desk(browser: Any, site: Site) -> Iterator[Any]:
    """A manager's own browser: no client certificate, no authenticator."""
    context = browser.new_context(base_url=site.url, ignore_https_errors=True, accept_downloads=True)
    context.set_default_timeout(20000)
    try:
        yield context.new_page()
    finally:
        context.close()


@contextmanager
def _terminal(browser: Any, site: Site, p12: Pkcs12) -> Iterator[Any]:
    """The operator's terminal: their PKCS#12 as TLS client certificate and a fingerprint reader."""
    with terminal(browser, base_url=site.url, certificate=(site.url, p12.path, p12.password)) as page:
        yield page


def _manager_login(page: Any, site: Site, tenant: str, manager: str) -> None:
    """Password login; at the very first one the manager chooses a new password, as the product demands."""
    key = f"{tenant}/{manager}"
    page.goto("/login")
    page.select_option("#tenant", tenant)
    page.fill("#operator_id", manager)
    page.fill("#password", site.passwords[key])
    page.click("#login")
    page.wait_for_url(re.compile(r"/(top|password)$"))
    if page.url.endswith("/password"):
        new = "Kawasemi-Hotaru-Chosen-2026"  # the policy: no operator ID inside
        page.fill("#current_password", site.passwords[key])
        page.fill("#new_password", new)
        page.fill("#confirm_password", new)
        page.click("#change")
        page.wait_for_url(re.compile(r"/top$"))
        site.passwords[key] = new


def _logout(page: Any) -> None:
    page.click("header form button[type=submit]")
    page.wait_for_url(re.compile(r"/login$"))


def _download_pkcs12(page: Any, site: Site, operator_id: str) -> Pkcs12:
    """From the issue result page: the operator's PKCS#12 file and its one-time password."""
    row = page.locator("tr", has=page.locator(f"td:text-is('{operator_id}')"))
    with page.expect_download() as download:
        row.locator("a[download]").click()
    path = site.tmp / f"{operator_id}.p12"
    download.value.save_as(path)
    return Pkcs12(path=path, password=row.locator("code.secret").inner_text().strip())


def _issue_pending(page: Any, site: Site, tenant: str, operator_id: str) -> Pkcs12:
    """証明書未発行の操作者: select the operator, issue, download."""
    page.goto(f"/admin/t/{tenant}/certificates/pending")
    page.check(f"input[name=operator_ids][value={operator_id}]")
    page.click("text=選択した操作者の証明書発行")
    page.wait_for_selector("text=オペレータ証明書の発行が完了しました")
    return _download_pkcs12(page, site, operator_id)


def _import_csv(page: Any, tenant: str, name: str, data: bytes, *, drop_unpermitted: bool = False) -> None:
    page.goto(f"/admin/t/{tenant}/import")
    page.set_input_files("input[name=file]", {"name": name, "mimeType": "text/csv", "buffer": data})
    if drop_unpermitted:
        page.check("input[name=drop_unpermitted]")
    page.click("button:text('インポート')")
    page.wait_for_selector("#done")


def _enrol_and_log_in(browser: Any, site: Site, p12: Pkcs12, tenant: str, manager: str,
                      operator_id: str) -> list[str]:
    """At the operator's terminal: the manager enrols the fingerprint (生体情報登録), then the operator logs
    in biometrically. Returns the 業務IDs on the top screen the operator lands on."""
    with _terminal(browser, site, p12) as page:
        _manager_login(page, site, tenant, manager)
        page.goto(f"/bio/manage/{tenant}/{operator_id}")
        page.fill("#nickname", "窓口端末")
        page.click("#bio-register")
        page.wait_for_selector("#credentials")
        _logout(page)
        page.goto("/bio/login")
        page.select_option("#tenant", tenant)
        page.fill("#operator_id", operator_id)
        page.click("#bio-login")
        page.wait_for_url(re.compile(r"/top$"))
        assert "操作者用トップ画面" in page.content()
        assert operator_id in page.locator("main").inner_text()
        assert page.goto("/top").url.endswith("/top")  # the session goes on: no password page, no loop
        listed: list[str] = page.locator("#business-systems li").evaluate_all(
            "items => items.map(li => li.dataset.businessId)")
        return listed


def test_operator_registered_in_the_web_form(browser: Any, site: Site) -> None:
    operator_id = f"BIOW{next(_ids):02d}"
    with _desk(browser, site) as page:
        _manager_login(page, site, "minamiedo", "mgrA")
        page.goto("/admin/t/minamiedo/register")
        page.fill("#operator_id", operator_id)
        page.click("button[value=generate]")  # 生成: the registration form asks for a password
        page.fill("#operator_id", operator_id)
        page.fill("#name", "生体 太郎")
        page.check("input[name=business_ids][value='05']")
        page.check("input[name=business_ids][value='07']")
        page.select_option("#auth_method", "biometric")
        page.click("button[value=stage]")
        page.wait_for_selector(f"text={operator_id}:生体 太郎")
        page.click("a.button:text-is('証明書発行')")
        page.click("button:text-is('証明書発行')")  # the confirmation screen
        page.wait_for_selector("text=オペレータ証明書の発行が完了しました")
        p12 = _download_pkcs12(page, site, operator_id)
    assert _enrol_and_log_in(browser, site, p12, "minamiedo", "mgrA", operator_id) == ["05", "07"]


def test_operator_imported_by_csv(browser: Any, site: Site) -> None:
    operator_id = f"BIOC{next(_ids):02d}"
    data = f"オペレータID,氏名・組織名,認証方式,許可業務\r\n{operator_id},一括 花子,生体認証,05;09\r\n"
    with _desk(browser, site) as page:
        _manager_login(page, site, "minamiedo", "mgrA")
        _import_csv(page, "minamiedo", "operators.csv", data.encode("cp932"))
        p12 = _issue_pending(page, site, "minamiedo", operator_id)
    assert _enrol_and_log_in(browser, site, p12, "minamiedo", "mgrA", operator_id) == ["05", "09"]


def test_operator_migrated_from_another_tenant(browser: Any, site: Site) -> None:
    operator_id = f"BIOM{next(_ids):02d}"
    data = f"オペレータID,氏名・組織名,認証方式,許可業務\r\n{operator_id},移行 次郎,生体認証,05;07;09\r\n"
    with _desk(browser, site) as page:  # 南江戸市's manager: the operator exists there, then is exported
        _manager_login(page, site, "minamiedo", "mgrA")
        _import_csv(page, "minamiedo", "operators.csv", data.encode())
        page.goto("/admin/t/minamiedo/export")
        page.fill("#operator_id", operator_id)
        with page.expect_download() as download:
            page.click("button:text('ファイル出力')")
        exported = site.tmp / f"{operator_id}-export.csv"
        download.value.save_as(exported)
    with _desk(browser, site) as page:  # 南武蔵野市's manager takes the operator over (05 only in joint use)
        _manager_login(page, site, "musashino", "mgrB")
        _import_csv(page, "musashino", exported.name, exported.read_bytes(), drop_unpermitted=True)
        p12 = _issue_pending(page, site, "musashino", operator_id)
    assert _enrol_and_log_in(browser, site, p12, "musashino", "mgrB", operator_id) == ["05"]
