"""A back-channel logout token opauth signed is accepted once and only while fresh: a replay of its ``jti``
and a token older than APDL_LOGOUT_TOKEN_MAX_AGE are refused (400) and written to the operation log.

The token is opauth's own: a small TLS server on the module's registered address (opauth's server
certificate for it) receives what ``flask oidc deliver-logouts`` sends, and the test then posts it to the
module itself, as a copy kept by an eavesdropper would be posted.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import select

from apdl import db, oplog
from apdl.models import OperationLog
from tests.apdl.app.conftest import Opauth, browser_for, login


@contextmanager
def _capture(opauth: Opauth) -> Iterator[list[str]]:
    """Listen where opauth delivers the module's logout tokens; collect them (answering 200)."""
    tokens: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            tokens.extend(urllib.parse.parse_qs(body).get("logout_token", []))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    port = int(opauth.apdl_base.rsplit(":", 1)[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(opauth.server_cert, opauth.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tokens
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _refusals(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        session = db.get_session()
        assert oplog.verify_chain(session) is None
        return [dict(e.detail, tenant=e.tenant_code, actor=e.actor) for e in session.scalars(
            select(OperationLog).where(OperationLog.action == "logout_token_refused").order_by(OperationLog.id))]


def _sid_of_last_login(app: Flask, actor: str) -> str:
    with app.app_context():
        entry = db.get_session().scalars(select(OperationLog).where(
            OperationLog.action == "login", OperationLog.actor == actor).order_by(OperationLog.id.desc())).first()
        assert entry is not None
        return str(entry.detail["sid"])


def test_an_opauth_logout_token_works_once_and_only_while_fresh(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "leaver")
    assert client.get("/residents").status_code == 200
    sid = _sid_of_last_login(apdl_app, "U-OP0603@minamiedo")
    browser = browser_for(opauth, "leaver")
    with _capture(opauth) as tokens:
        status, _, top = browser.go(opauth.base + "/top")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', top)
        assert status == 200 and csrf
        browser.go(opauth.base + "/logout", {"csrf_token": csrf.group(1)})
        delivered = opauth.cli("oidc", "deliver-logouts", "--timeout", "5")
    del opauth.browsers["leaver"]
    assert "0 failed" in delivered, delivered
    [token] = [t for t in tokens if _claims(t).get("sid") == sid]
    claims = _claims(token)
    assert claims["jti"] and claims["exp"] - claims["iat"] == 120  # still valid for opauth's two minutes
    poster = apdl_app.test_client()

    apdl_app.config["LOGOUT_TOKEN_MAX_AGE"] = 1  # the same token, kept for longer than the module allows
    time.sleep(2.2)
    stale = poster.post("/backchannel-logout", data={"logout_token": token})
    assert stale.status_code == 400 and stale.get_json() == {"error": "invalid_request"}
    assert client.get("/residents").status_code == 200  # a refused token ends nothing
    assert [(r["reason"], r["jti"], r["tenant"], r["actor"]) for r in _refusals(apdl_app)] == [
        ("too old", claims["jti"], "", "opauth")]

    apdl_app.config["LOGOUT_TOKEN_MAX_AGE"] = 120
    assert poster.post("/backchannel-logout", data={"logout_token": token}).status_code == 200
    assert client.get("/residents").headers["Location"] == "/login"

    again = login(opauth, apdl_app, "leaver")  # a new session (new sid): the replay must not matter to it either
    replayed = poster.post("/backchannel-logout", data={"logout_token": token})
    assert replayed.status_code == 400 and replayed.get_json() == {"error": "invalid_request"}
    assert [r["reason"] for r in _refusals(apdl_app)] == ["too old", "replayed jti"]
    assert _refusals(apdl_app)[-1]["sid"] == sid[:40]
    assert again.get("/residents").status_code == 200
    with apdl_app.app_context():
        ended = db.get_session().scalars(select(OperationLog).where(OperationLog.action == "backchannel_logout")).all()
        assert len(ended) == 1  # the replay ended nothing and logged no second logout
