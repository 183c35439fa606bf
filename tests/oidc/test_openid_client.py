"""An independent relying party, panva's openid-client (Node), against gunicorn over real TLS.

It discovers the provider, sends the operator's browser to the authorization endpoint (code + PKCE S256),
exchanges the code at the token endpoint presenting the business system's SSL通信証明書
(RFC 8705 tls_client_auth, through an undici 7 Agent), validates the ID token and calls userinfo
over the same certificate. The browser is a plain cookie-keeping HTTPS client.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers import BUSINESS, make_csr
from tests.oidc.browser import FormBrowser
from tests.servers import flask_cli, free_port, gunicorn, instance_env

RP_DIR = Path(__file__).resolve().parent / "rp"
REDIRECT = "https://www1.city.itozaki.nagano.jp/BizSys/oidc/callback"
NEW_PASSWORD = "Operator-Secret-2026"


def _node_ready() -> str | None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are required (scripts/system-deps.sh installs them)"
    if not (RP_DIR / "node_modules" / "openid-client").exists():
        result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=RP_DIR, capture_output=True,
                                text=True, timeout=300)
        if result.returncode != 0:
            return f"npm ci failed: {result.stderr[-500:]}"
    return None


@dataclass(frozen=True)
class Provider:
    base: str
    ca: Path
    cert: Path
    key: Path
    one_time_password: str


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    problem = _node_ready()
    if problem:
        pytest.fail(problem)
    tmp = tmp_path_factory.mktemp("oidc-rp")
    port = free_port()
    base = f"https://localhost:{port}"
    env = instance_env(tmp / "instance", OPAUTH_PUBLIC_BASE_URL=base, OPAUTH_ARGON2_TIME_COST="1",
                       OPAUTH_ARGON2_MEMORY_KIB="8192", OPAUTH_ARGON2_PARALLELISM="1")
    assert flask_cli(env, "init").returncode == 0
    csr = tmp / "server.csr"
    csr.write_bytes(make_csr())
    args: list[str | Path] = ["cert", "issue-business-server", "--csr", csr, "--out", tmp / "server.pem"]
    for name, value in BUSINESS.items():
        args += [f"--{name.replace('_', '-')}", value]
    for command in (args, ["tenant", "create", "--code", "minamiedo", "--name", "南江戸市"],
                    ["tenant", "joint-use", "05", "minamiedo"],
                    ["oidc", "client", "set", "05", "--enable", "--redirect-uri", REDIRECT]):
        result = flask_cli(env, *command)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    registered = flask_cli(env, "operator", "register", "--tenant", "minamiedo", "--operator-id", "OP0601",
                           "--name", "山田 太郎", "--business-ids", "05", "--csr", csr)
    assert registered.returncode == 0, registered.stderr
    password = registered.stdout.split("shown once): ")[-1].strip()
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "client.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (tmp / "client.csr").write_bytes(make_csr(key))
    issued = flask_cli(env, "ssl", "issue", "--tenant", "system", "--business-id", "05", "--host",
                       "www1.city.itozaki.nagano.jp", "--csr", tmp / "client.csr", "--out", tmp / "client.pem")
    assert issued.returncode == 0, issued.stderr
    with gunicorn(env, port):
        yield Provider(base=base, ca=tmp / "instance" / "tls" / "ca-bundle.pem", cert=tmp / "client.pem",
                       key=tmp / "client.key", one_time_password=password)


def _rp(*args: str | Path) -> dict[str, object]:
    result = subprocess.run(["node", "rp.mjs", *map(str, args)], cwd=RP_DIR, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_openid_client_completes_code_pkce_and_tls_client_auth(provider: Provider) -> None:
    issuer = provider.base + "/oidc"
    started = _rp("start", issuer, "biz-05", REDIRECT, provider.ca)
    browser = FormBrowser(provider.ca)
    status, location, _ = browser.go(str(started["url"]))
    assert status == 302 and location.endswith("/login")
    status, location, _ = browser.post_form(provider.base + "/login", {
        "tenant": "minamiedo", "operator_id": "OP0601", "password": provider.one_time_password})
    assert status == 302 and location.endswith("/password")
    status, location, _ = browser.post_form(provider.base + "/password", {
        "current_password": provider.one_time_password, "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD})
    assert status == 302
    status, location, _ = browser.go(urllib.parse.urljoin(provider.base, location))  # the top screen
    assert status == 302 and location.startswith("/oidc/authorize?")
    status, callback, _ = browser.go(provider.base + location)
    assert status == 302 and callback.startswith(REDIRECT + "?"), callback
    finished = _rp("finish", issuer, "biz-05", callback, provider.ca, provider.cert, provider.key,
                   str(started["verifier"]), str(started["state"]), str(started["nonce"]))
    claims = finished["id_token_claims"]
    assert isinstance(claims, dict) and isinstance(finished["userinfo"], dict)
    assert claims["iss"] == issuer and claims["aud"] == ["biz-05"] and claims["amr"] == ["pwd"]
    assert finished["userinfo"]["sub"] == claims["sub"] and len(str(claims["sub"])) == 43
    assert finished["userinfo"]["https://opauth/tenant"]["code"] == "minamiedo"


def test_openid_client_without_its_certificate_cannot_get_tokens(provider: Provider) -> None:
    issuer = provider.base + "/oidc"
    result = subprocess.run(["node", "rp.mjs", "finish", issuer, "biz-05", REDIRECT + "?code=x&state=s&iss=" +
                             urllib.parse.quote(issuer), str(provider.ca), "", "", "v" * 43, "s", "n"],
                            cwd=RP_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "invalid_client" in result.stderr
