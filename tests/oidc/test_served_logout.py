"""`make run`'s path sends back-channel logouts by itself: scripts/serve.py runs the sender beside gunicorn.

Everything through the product: the instance is set up with the CLI, the operator logs in through nginx
with a cookie-keeping client, the business system (an HTTPS receiver on 127.0.0.1 whose server
certificate opauth issued) exchanges its code over mutual TLS with its SSL通信証明書, and the operator
logs out at opauth. Nobody runs `deliver-logouts`: the logout token arrives from the served deployment.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.helpers import make_csr
from tests.oidc.browser import FormBrowser
from tests.servers import flask_cli, free_port, serve, serve_env

NEW_PASSWORD = "Operator-Secret-2026"


def _key_file(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key


def test_make_run_delivers_the_back_channel_logout_without_cron(tmp_path: Path) -> None:
    port, tokens = free_port(), []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            tokens.append(urllib.parse.parse_qs(body)["logout_token"][0])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    env = serve_env(tmp_path / "instance", OPAUTH_ARGON2_TIME_COST="1", OPAUTH_ARGON2_MEMORY_KIB="8192",
                    OPAUTH_ARGON2_PARALLELISM="1")
    assert flask_cli(env, "init").returncode == 0
    rp = f"https://127.0.0.1:{port}"
    _key_file(tmp_path / "rp.key")
    rp_key = serialization.load_pem_private_key((tmp_path / "rp.key").read_bytes(), None)
    (tmp_path / "rp.csr").write_bytes(make_csr(rp_key, subject=x509.Name([x509.NameAttribute(
        NameOID.COUNTRY_NAME, "JP")])))
    operator_csr = tmp_path / "operator.csr"
    operator_csr.write_bytes(make_csr())
    client_key = _key_file(tmp_path / "client.key")
    (tmp_path / "client.csr").write_bytes(make_csr(client_key))
    for command in (
            ["cert", "issue-business-server", "--business-id", "09", "--name", "テスト業務", "--admin-org", "test",
             "--top-url", f"{rp}/top", "--operator-admin-url", f"{rp}/admin", "--personalize-url", f"{rp}/perso",
             "--csr", tmp_path / "rp.csr", "--format", "chain.pem", "--out", tmp_path / "rp.pem"],
            ["tenant", "create", "--code", "minamiedo", "--name", "南江戸市"],
            ["tenant", "joint-use", "09", "minamiedo"],
            ["oidc", "client", "set", "09", "--enable", "--redirect-uri", f"{rp}/cb",
             "--backchannel-logout-uri", f"{rp}/bcl"],
            ["ssl", "issue", "--tenant", "system", "--business-id", "09", "--host", "127.0.0.1",
             "--csr", tmp_path / "client.csr", "--out", tmp_path / "client.pem"]):
        result = flask_cli(env, *command)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    registered = flask_cli(env, "operator", "register", "--tenant", "minamiedo", "--operator-id", "OP0601",
                           "--name", "山田 太郎", "--business-ids", "09", "--csr", operator_csr)
    assert registered.returncode == 0, registered.stderr
    one_time = registered.stdout.split("shown once): ")[-1].strip()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "rp.pem", tmp_path / "rp.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ca = tmp_path / "instance" / "tls" / "ca-bundle.pem"
    try:
        with serve(env, tmp_path / "serve.log") as served:
            base = served.https
            browser = FormBrowser(ca)
            status, location, _ = browser.post_form(base + "/login", {
                "tenant": "minamiedo", "operator_id": "OP0601", "password": one_time})
            assert status == 302 and location.endswith("/password"), location
            status, _, _ = browser.post_form(base + "/password", {
                "current_password": one_time, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
            assert status == 302
            verifier = secrets.token_urlsafe(48)
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            query = urllib.parse.urlencode({
                "response_type": "code", "client_id": "biz-09", "redirect_uri": f"{rp}/cb", "scope": "openid",
                "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
                "code_challenge_method": "S256"})
            status, callback, _ = browser.go(f"{base}/oidc/authorize?{query}")
            assert status == 302 and callback.startswith(f"{rp}/cb?"), callback
            code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))["code"]

            tls = ssl.create_default_context(cafile=str(ca))
            tls.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
            conn = http.client.HTTPSConnection(urllib.parse.urlsplit(base).netloc, context=tls, timeout=60)
            conn.request("POST", "/oidc/token", headers={"Content-Type": "application/x-www-form-urlencoded"},
                         body=urllib.parse.urlencode({"grant_type": "authorization_code", "code": code,
                                                      "redirect_uri": f"{rp}/cb", "client_id": "biz-09",
                                                      "code_verifier": verifier}))
            response = conn.getresponse()
            body = json.loads(response.read())
            conn.close()
            assert response.status == 200, body
            keys = KeySet.import_key_set(json.loads(browser.go(base + "/oidc/jwks.json")[2]))
            sid = jwt.decode(body["id_token"], keys, algorithms=["ES256"]).claims["sid"]

            page = browser.go(base + "/top")[2]
            token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            status, _, _ = browser.go(base + "/logout", {"csrf_token": token})
            assert status == 302
            deadline = time.monotonic() + 90  # the sender's round comes every 10 seconds
            while not tokens and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len(tokens) == 1, served.log.read_text()[-3000:]
            assert jwt.decode(tokens[0], keys, algorithms=["ES256"]).claims["sid"] == sid
    finally:
        server.shutdown()
        server.server_close()
