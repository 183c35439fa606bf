"""`python -m bench.oidc`: business login (OIDC provider) throughput against real gunicorn over TLS.

Prints a Markdown table:

- discovery and JWKS GETs per second (keep-alive HTTPS clients);
- token exchanges per second: code + PKCE verifier, client authenticated by its SSL通信証明書
  (mutual TLS, ``tls_client_auth``), ES256 ID token and certificate-bound JWT access token; beside the
  rate, the server's CPU per exchange (gunicorn master and workers, from /proc), steadier than the rate
  on a shared machine;
- a scripted login with an existing opauth session (authorize → token → userinfo): p50 and p95.

Targets on 2 cores (issue): ≥ 500 req/s, ≥ 100 exchanges/s, p95 ≤ 150 ms. Everything runs in a
temporary directory; a benchmark prints figures and asserts nothing.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.cookiejar
import json
import multiprocessing
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.peers import _children, _cpu_ticks
from bench.run import wait_for_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLIENTS = 4
SECONDS = 10.0
CODES = 1000  # made, then exchanged, within the codes' 60-second lifetime (~10 s of exchanges on 2 cores)
LOGINS = 100
REDIRECT = "https://www1.city.itozaki.nagano.jp/BizSys/oidc/callback"
BUSINESS = {"business-id": "05", "name": "ベンチマーク", "admin-org": "bench",
            "top-url": "https://www1.city.itozaki.nagano.jp/BizSys/",
            "operator-admin-url": "https://www1.city.itozaki.nagano.jp/BizSys/",
            "personalize-url": "https://perso.city.itozaki.nagano.jp/BizSys/"}
PASSWORD = "Bench-Operator-2026!x"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "www1.city.itozaki.nagano.jp")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _flask(env: dict[str, str], *args: str | Path) -> str:
    result = subprocess.run([str(BIN / "flask"), "--app", "app", *map(str, args)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"flask {args[0]} failed: {result.stderr}")
    return result.stdout


def _prepare(tmp: Path, base: str) -> tuple[dict[str, str], str]:
    """An instance with business system 05, its client settings and certificate, and operator OP0601."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPAUTH_")}
    env.update(OPAUTH_INSTANCE_DIR=str(tmp / "instance"), OPAUTH_PUBLIC_BASE_URL=base,
               OPAUTH_KEY_PASSPHRASE="bench-passphrase", OPAUTH_PKI_BASE_URL="http://pki.opauth.example.jp",
               PYTHONDONTWRITEBYTECODE="1")
    _flask(env, "init")
    server_key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "server.csr").write_bytes(_csr(server_key))
    args: list[str | Path] = ["cert", "issue-business-server", "--csr", tmp / "server.csr", "--out", tmp / "s.pem"]
    for name, value in BUSINESS.items():
        args += [f"--{name}", value]
    _flask(env, *args)
    _flask(env, "tenant", "create", "--code", "minamiedo", "--name", "南江戸市")
    _flask(env, "tenant", "joint-use", "05", "minamiedo")
    _flask(env, "oidc", "client", "set", "05", "--enable", "--redirect-uri", REDIRECT)
    out = _flask(env, "operator", "register", "--tenant", "minamiedo", "--operator-id", "OP0601", "--name", "ベンチ",
                 "--business-ids", "05", "--csr", tmp / "server.csr")
    one_time = out.split("shown once): ")[-1].strip()
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "client.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (tmp / "client.csr").write_bytes(_csr(key))
    _flask(env, "ssl", "issue", "--tenant", "system", "--business-id", "05", "--host", "www1.city.itozaki.nagano.jp",
           "--csr", tmp / "client.csr", "--out", tmp / "client.pem")
    return env, one_time


class _Browser:
    """The operator's browser: cookies kept, redirects not followed."""

    def __init__(self, ca: Path) -> None:
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        context = ssl.create_default_context(cafile=str(ca))
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                                  urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                                                  NoRedirect())

    def go(self, url: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            response = self.opener.open(urllib.request.Request(url, data=data, headers={"Referer": url}), timeout=30)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Location", ""), exc.read().decode()
        return response.status, response.headers.get("Location", ""), response.read().decode()

    def post_form(self, url: str, fields: dict[str, str]) -> tuple[int, str, str]:
        page = self.go(url)[2]
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        if match is None:
            raise RuntimeError(f"no CSRF token on {url}")
        return self.go(url, {"csrf_token": match.group(1), **fields})


def _authorize_url(base: str) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": "biz-05", "redirect_uri": REDIRECT, "scope": "openid profile",
        "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
        "code_challenge_method": "S256"})
    return f"{base}/oidc/authorize?{query}", verifier


def _code(browser: _Browser, base: str) -> tuple[str, str]:
    url, verifier = _authorize_url(base)
    status, location, body = browser.go(url)
    if status != 302 or "code=" not in location:
        raise RuntimeError(f"authorize failed: {status} {location} {body[:200]}")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"], verifier


def _connection(port: int, ca: Path, cert: Path | None, key: Path | None) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return http.client.HTTPSConnection("localhost", port, context=context, timeout=30)


def _token_form(code: str, verifier: str) -> str:
    return urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                   "client_id": "biz-05", "code_verifier": verifier})


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _get_worker(args: tuple[int, str, str, float]) -> int:
    port, ca, path, seconds = args
    conn = _connection(port, Path(ca), None, None)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            count += 1
    conn.close()
    return count


def _exchange_worker(args: tuple[int, str, str, str, list[tuple[str, str]]]) -> int:
    port, ca, cert, key, codes = args
    conn = _connection(port, Path(ca), Path(cert), Path(key))
    ok = 0
    for code, verifier in codes:
        conn.request("POST", "/oidc/token", body=_token_form(code, verifier), headers=FORM)
        response = conn.getresponse()
        body = response.read()
        ok += response.status == 200 and b"id_token" in body
    conn.close()
    return ok


def _rate(pool: Any, port: int, ca: Path, path: str) -> float:
    counts = pool.map(_get_worker, [(port, str(ca), path, SECONDS)] * CLIENTS)
    return float(sum(counts)) / SECONDS


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="opauth-oidc-bench-"))
    port = _free_port()
    base = f"https://localhost:{port}"
    try:
        env, one_time = _prepare(tmp, base)
        ca = tmp / "instance" / "tls" / "ca-bundle.pem"
        server_env = dict(env, OPAUTH_BIND=f"127.0.0.1:{port}", OPAUTH_WORKERS="2")
        server = subprocess.Popen([str(BIN / "gunicorn"), "--config", "config/gunicorn.conf.py"], cwd=ROOT,
                                  env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, server)
            browser = _Browser(ca)
            browser.post_form(base + "/login", {"tenant": "minamiedo", "operator_id": "OP0601",
                                                "password": one_time})
            browser.post_form(base + "/password", {"current_password": one_time, "new_password": PASSWORD,
                                                   "confirm_password": PASSWORD})
            rows: list[tuple[str, str, str]] = []
            with multiprocessing.get_context("spawn").Pool(CLIENTS) as pool:
                discovery = _rate(pool, port, ca, "/oidc/.well-known/openid-configuration")
                rows.append(("discovery GET", f"{discovery:.0f} req/s", "≥ 500 req/s"))
                jwks = _rate(pool, port, ca, "/oidc/jwks.json")
                rows.append(("JWKS GET", f"{jwks:.0f} req/s", "≥ 500 req/s"))
                started = time.perf_counter()
                codes = [_code(browser, base) for _ in range(CODES)]
                authorize_rate = CODES / (time.perf_counter() - started)
                rows.append(("authorize with a session (one browser, sequential)", f"{authorize_rate:.0f} codes/s", ""))
                chunks = [codes[i::CLIENTS] for i in range(CLIENTS)]
                server_pids = [server.pid, *_children(server.pid)]
                ticks = sum(_cpu_ticks(pid) for pid in server_pids)
                started = time.perf_counter()
                ok = sum(pool.map(_exchange_worker, [(port, str(ca), str(tmp / "client.pem"), str(tmp / "client.key"),
                                                      chunk) for chunk in chunks]))
                exchanges = ok / (time.perf_counter() - started)
                cpu_ms = (sum(_cpu_ticks(pid) for pid in server_pids) - ticks) * 1000 / os.sysconf("SC_CLK_TCK")
                rows.append((f"token exchange, mTLS client auth ({ok}/{CODES} ok)",
                             f"{exchanges:.0f} exchanges/s, server CPU {cpu_ms / max(ok, 1):.1f} ms per exchange",
                             "≥ 100 exchanges/s"))
            conn = _connection(port, ca, tmp / "client.pem", tmp / "client.key")
            latencies = []
            for _ in range(LOGINS):
                begin = time.perf_counter()
                code, verifier = _code(browser, base)
                conn.request("POST", "/oidc/token", body=_token_form(code, verifier), headers=FORM)
                token = json.loads(conn.getresponse().read())["access_token"]
                conn.request("GET", "/oidc/userinfo", headers={"Authorization": f"Bearer {token}"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"userinfo answered {response.status}")
                latencies.append((time.perf_counter() - begin) * 1000)
            conn.close()
            latencies.sort()
            p50, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95) - 1]
            rows.append(("scripted login with a session (authorize → token → userinfo)",
                         f"p50 {p50:.0f} ms, p95 {p95:.0f} ms", "p95 ≤ 150 ms"))
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"OIDC provider on {os.cpu_count()} cores, gunicorn 2 workers over TLS, {CLIENTS} client processes\n")
        print("| operation | result | target |\n|---|---|---|")
        for name, value, target in rows:
            print(f"| {name} | {value} | {target} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
