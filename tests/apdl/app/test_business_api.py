"""The business-system API through the module's own gunicorn over mutual TLS (Python ssl, no test client):
two business systems, 01 (the module itself, its SSL通信証明書 from the session) and 05 (registered and given
its SSL通信証明書 here with opauth's CLI), each with its own AP loaded on its own 利用者's card through
pyscard → pcscd → vpcd → the emulated card. Each sees only its own 利用者, cards and status changes; its
即時停止 is refused on the other's card and logged with the business system as actor; no certificate, a
certificate of another CA, a terminal's certificate and a revoked certificate are refused; bad input is a
400 JSON answer.
"""

from __future__ import annotations

import datetime
import json
import re
import ssl
import statistics
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import Flask
from sqlalchemy import select

from apdl import db
from apdl.emulator.stack import PcscStack
from apdl.models import Installation
from tests.apdl.app.conftest import CHIYODA, Opauth, _key, issued_card, login, served_apdl, submit
from tests.apdl.app.status_feed import csv_feed, import_status, log_entries
from tests.apdl.app.world import APS, CARD, build_registry, register_resident
from tests.helpers import SUBJECT, make_csr
from tests.servers import flask_cli

pytestmark = pytest.mark.pcsc

OTHER_CARD = "2222222222222"  # the card of 01's 利用者
HOST05 = "biz05.example.jp"
X1 = ("D392F000040001", "職員証", "extended", "C")  # business system 01's AP


@dataclass
class ClientCert:
    cert: Path
    key: Path
    serial: str = ""


def _issue(opauth: Opauth, tmp: Path, name: str, *args: str) -> ClientCert:
    """An SSL通信証明書 from opauth's own CLI (``ssl issue``) for our CSR."""
    key = _key(tmp / f"{name}.key")
    (tmp / f"{name}.csr").write_bytes(make_csr(key))
    result = flask_cli(opauth.env, "ssl", "issue", *args, "--csr", tmp / f"{name}.csr", "--out", tmp / f"{name}.pem")
    assert result.returncode == 0, result.stderr
    return ClientCert(tmp / f"{name}.pem", tmp / f"{name}.key", result.stderr.split("issued serial ")[1].split()[0])


@pytest.fixture(scope="module")
def system05(opauth: Opauth, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClientCert, ClientCert]]:
    """Business system 05 registered at opauth, and two SSL通信証明書 of it (the second is revoked in a test)."""
    tmp = tmp_path_factory.mktemp("biz05")
    subject = x509.Name([*list(SUBJECT)[:-1], x509.NameAttribute(NameOID.COMMON_NAME, HOST05)])
    (tmp / "server.csr").write_bytes(make_csr(_key(tmp / "server.key"), subject))
    opauth.cli("cert", "issue-business-server", "--csr", tmp / "server.csr", "--out", tmp / "server.pem",
               "--business-id", "05", "--name", "図書館システム", "--admin-org", "南江戸市",
               "--top-url", f"https://{HOST05}/", "--operator-admin-url", f"https://{HOST05}/admin",
               "--personalize-url", f"https://{HOST05}/p", "--phone", "03-1111-2222", "--email", "lib@example.jp")
    opauth.cli("tenant", "joint-use", "05", "minamiedo")  # a business system's certificate names a tenant using it
    args = ("--tenant", "minamiedo", "--business-id", "05", "--host", HOST05)
    yield _issue(opauth, tmp, "biz05", *args), _issue(opauth, tmp, "biz05-second", *args)


def _call(opauth: Opauth, cert: ClientCert | None, path: str, body: Any = None,
          raw: bytes | None = None, language: str = "") -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(opauth.ca))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(opauth.apdl_base + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json",
                                              **({"Accept-Language": language} if language else {})})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            assert answer.headers["Content-Type"] == "application/json"
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers["Content-Type"] == "application/json", exc.read()[:300]
        return exc.code, json.loads(exc.read())


def _foreign_cert(tmp: Path) -> ClientCert:
    """A client certificate that claims business system 05 but comes from a CA of our own."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not opauth")])
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "05 図書館システム"),
                         x509.NameAttribute(NameOID.COMMON_NAME, HOST05)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp / "foreign.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "foreign.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return ClientCert(tmp / "foreign.pem", tmp / "foreign.key")


def _register_x1(opauth: Opauth, app: Flask) -> int:
    """Business system 01's own AP, available to 南江戸市 (through the admin's forms)."""
    admin = login(opauth, app, "admin")
    aid, name, area, ap_type = X1
    response = submit(admin, "/aps", "/aps", {
        "aid": aid, "name": name, "description": "職員証AP", "provider_name": "カードAPセンター", "area": area,
        "ap_type": ap_type, "size_bytes": "1024", "pin_max_tries": "3", "business_id": "01",
        "personalize_url": "https://perso.example.jp/x"})
    assert response.status_code == 302, response.get_data(as_text=True)[-600:]
    found = re.search(rf'href="/aps/(\d+)">{aid}<', admin.get("/aps").get_data(as_text=True))
    assert found
    ap_id = int(found.group(1))
    assert submit(admin, "/tenants/minamiedo", "/tenants/minamiedo/availability",
                  {"action": "add", "add_ids": [str(ap_id)]}).status_code == 302
    return ap_id


def _user_ids(app: Flask) -> dict[str, str]:
    """利用者ID per card and AP id, as the module numbered them."""
    with app.app_context():
        rows = db.get_session().scalars(select(Installation).where(Installation.state == "installed"))
        return {f"{r.card_identifier}:{r.card_ap_id}": r.user_id_in_ap for r in rows}


def test_each_business_system_sees_and_stops_only_its_own_and_refusals_hold(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack, system05: tuple[ClientCert, ClientCert],
        tmp_path: Path) -> None:
    app = apdl_app
    cert05, second05 = system05
    cert01 = ClientCert(opauth.client_cert, opauth.client_key)  # the module's own SSL通信証明書 (業務ID 01)
    registry = build_registry(opauth, app)  # R1, E1, E2, E3: business system 05's APs
    x1 = _register_x1(opauth, app)
    minami = login(opauth, app, "minami")
    assert submit(minami, "/residents/fields", "/residents/fields",
                  {"label": "図書館番号", "max_length": "20"}).status_code == 302
    field_id = int(re.findall(r'name="custom_(\d+)"', minami.get("/residents").get_data(as_text=True))[0])
    holder05 = register_resident(minami, **{f"custom_{field_id}": "L-0042"})  # 山田 花子, card CARD
    page = f"/residents/{holder05}"
    loaded = submit(minami, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"]),
                                                                        str(registry.ids["E3"])]})
    assert loaded.status_code == 302, loaded.get_data(as_text=True)[-400:]
    card_stack.card.load_state(issued_card(app, card_identifier=OTHER_CARD))
    holder01 = register_resident(minami, card=OTHER_CARD, kanji_family="別府", kana_family="ベップ",
                                 email="beppu@example.jp")
    other_page = f"/residents/{holder01}"
    loaded = submit(minami, other_page, f"{other_page}/card/download", {"ap_ids": [str(x1)]})
    assert loaded.status_code == 302, loaded.get_data(as_text=True)[-400:]
    assert card_stack.card.installed() == {X1[0]}
    ids = _user_ids(app)
    e1_user, e3_user = ids[f"{CARD}:{registry.ids['E1']}"], ids[f"{CARD}:{registry.ids['E3']}"]
    x1_user = ids[f"{OTHER_CARD}:{x1}"]
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=2)

    with served_apdl(opauth, app):
        # 利用者情報連携: each system its own 利用者, only through its own APs
        status, seen05 = _call(opauth, cert05, "/api/v1/users")
        assert status == 200 and seen05["next_cursor"] is None
        assert [(u["user_id"], u["ap"]["aid"]) for u in seen05["users"]] == [(e1_user, APS["E1"][0]),
                                                                            (e3_user, APS["E3"][0])]
        first = seen05["users"][0]
        assert (first["kanji_family"], first["card_identifier"], first["tenant"]) == ("山田", CARD, "minamiedo")
        assert first["custom"] == {"図書館番号": "L-0042"} and first["standard_id"] is None
        assert first["installed_at"].endswith("+00:00")  # every time in the API carries its offset
        assert seen05["users"][1]["standard_id"].startswith(CHIYODA)  # E3 numbers a 標準ID
        assert "別府" not in json.dumps(seen05, ensure_ascii=False) and x1_user not in json.dumps(seen05)
        status, seen01 = _call(opauth, cert01, "/api/v1/users")
        assert status == 200 and [(u["user_id"], u["kanji_family"], u["ap"]["aid"]) for u in seen01["users"]] == [
            (x1_user, "別府", X1[0])]
        assert "山田" not in json.dumps(seen01, ensure_ascii=False)
        assert not {"my_number", "individual_number", "resident_code"} & set(seen01["users"][0])
        # paginated
        status, page1 = _call(opauth, cert05, "/api/v1/users?limit=1")
        assert status == 200 and [u["user_id"] for u in page1["users"]] == [e1_user] and page1["next_cursor"]
        status, page2 = _call(opauth, cert05, f"/api/v1/users?limit=1&cursor={page1['next_cursor']}")
        assert [u["user_id"] for u in page2["users"]] == [e3_user] and page2["next_cursor"] is None
        # one 利用者 by 利用者ID: another system's is as missing as none
        assert _call(opauth, cert05, f"/api/v1/users/{e1_user}")[1]["user_id"] == e1_user
        assert _call(opauth, cert05, f"/api/v1/users/{x1_user}") == _call(opauth, cert05, "/api/v1/users/00FF")
        assert _call(opauth, cert05, f"/api/v1/users/{x1_user}")[0] == 404
        assert _call(opauth, cert01, f"/api/v1/users/{x1_user}")[0] == 200

        timings = []
        for _ in range(10):
            begun = time.perf_counter()
            assert _call(opauth, cert05, f"/api/v1/cards/{CARD}/status")[0] == 200
            timings.append(time.perf_counter() - begun)
        print(f"business API: one card's status in {statistics.median(timings) * 1000:.0f} ms (median of 10; "
              "a new TLS connection each, the CRL fetched from opauth each time)")
        # one card's status: 404 for a card holding none of the caller's APs, the same as no card
        status, card05 = _call(opauth, cert05, f"/api/v1/cards/{CARD}/status")
        assert status == 200 and card05["stopped"] is False and card05["usable"] is True
        missing = _call(opauth, cert05, "/api/v1/cards/9999999999999/status")
        assert missing[0] == 404 and _call(opauth, cert05, f"/api/v1/cards/{OTHER_CARD}/status") == missing
        assert _call(opauth, cert01, f"/api/v1/cards/{CARD}/status") == missing

        # 即時停止: not on the other system's card; on its own, logged with the system as actor
        assert _call(opauth, cert01, f"/api/v1/cards/{CARD}/stop", {"reason": "x"})[0] == 404
        status, stopped = _call(opauth, cert05, f"/api/v1/cards/{CARD}/stop", {"reason": "図書館で紛失の届出"})
        assert status == 200 and stopped["stopped"] is True and stopped["stop_reason"] == "図書館で紛失の届出"
        assert _call(opauth, cert05, f"/api/v1/cards/{CARD}/stop", {"reason": "again"})[0] == 409
        refused = submit(minami, page, f"{page}/card/read", {})  # effective on the very next operation
        assert refused.status_code == 403 and "即時停止されています" in refused.get_data(as_text=True)
        # the operation log names the business system that stopped it (not "-")
        logged = minami.get("/oplog?action=card_stopped").get_data(as_text=True)
        assert "業務システム 05（" in logged, logged[-1500:]
        assert "business system 05 (" in minami.get("/oplog?action=card_stopped&lang=en").get_data(as_text=True)
        minami.get("/?lang=ja")
        # the feed: one card of each system changes
        result = import_status(app, tmp_path, csv_feed(f"{OTHER_CARD},lost,,2026-11-30",
                                                       "3333333333333,stolen,,2026-11-30"), "--batch-id", "20261130")
        assert result.returncode == 0, result.stderr
        since = urllib.parse.quote(started.isoformat())
        status, changes05 = _call(opauth, cert05, f"/api/v1/card-status?since={since}")
        assert status == 200 and [(c["card_identifier"], c["kind"]) for c in changes05["changes"]] == [
            (CARD, "stopped")]
        status, changes01 = _call(opauth, cert01, f"/api/v1/card-status?since={since}")
        assert status == 200 and [(c["card_identifier"], c["kind"], c["status"]) for c in changes01["changes"]] == [
            (OTHER_CARD, "feed", "lost")]
        # cancel: not by the other system; by the system that stopped it, logged
        assert _call(opauth, cert01, f"/api/v1/cards/{CARD}/stop/cancel", {"reason": "発見"})[0] == 404
        status, lifted = _call(opauth, cert05, f"/api/v1/cards/{CARD}/stop/cancel", {"reason": "カード発見"})
        assert status == 200 and lifted["stopped"] is False
        kinds = [c["kind"] for c in _call(opauth, cert05, f"/api/v1/card-status?since={since}")[1]["changes"]]
        assert kinds == ["stopped", "stop_cancelled"]
        # another 利用機関 that registered the same card stops it: the system sees that, never why
        kita = login(opauth, app, "kitamgr")
        kita_page = f"/residents/{register_resident(kita)}"
        assert submit(kita, kita_page, f"{kita_page}/card/stop",
                      {"reason": "北江戸市の相談記録", "confirm": "yes"}).status_code == 302
        status, foreign = _call(opauth, cert05, f"/api/v1/cards/{CARD}/status")
        assert status == 200 and foreign["stopped"] is True and foreign["usable"] is False
        assert foreign["stop_reason"] is None and "北江戸" not in json.dumps(foreign, ensure_ascii=False)
        assert _call(opauth, cert05, f"/api/v1/cards/{CARD}/stop/cancel", {"reason": "x"})[0] == 409
        assert submit(kita, kita_page, f"{kita_page}/card/stop/cancel",
                      {"reason": "解除", "confirm": "yes"}).status_code == 302

        # bad input: 400 JSON, never a 500
        for path in ("/api/v1/card-status", "/api/v1/card-status?since=yesterday",
                     "/api/v1/card-status?since=2026-11-30T00:00:00", "/api/v1/card-status?since=%00",
                     f"/api/v1/card-status?since={since}&limit=100000000000000000000", "/api/v1/users?limit=0",
                     "/api/v1/users?limit=1000000", "/api/v1/users?limit=ten", "/api/v1/users?cursor=-1",
                     "/api/v1/users?cursor=%00", "/api/v1/users?cursor=99999999999999999999"):
            status, answer = _call(opauth, cert05, path)
            assert status == 400 and answer["error"], (path, status, answer)
        for raw in (b"not json", b"[]", b'{"reason": 5}', b'{"reason": "a\\u0000b"}', b'{"reason": ""}',
                    json.dumps({"reason": "x" * 201}).encode(), b"\x00\xff"):
            status, answer = _call(opauth, cert05, f"/api/v1/cards/{CARD}/stop", raw=raw)
            assert status == 400 and answer["error"], (raw, status, answer)
        assert _call(opauth, cert05, "/api/v1/cards/12%0034/status")[0] == 404

        # refusals: no certificate, another CA, a terminal's certificate, a revoked certificate
        status, answer = _call(opauth, None, "/api/v1/users")
        assert status == 403 and "SSL通信証明書が必要です" in answer["error"]
        english = _call(opauth, None, "/api/v1/users", language="en-GB,en;q=0.9,ja;q=0.5")
        assert english[0] == 403 and english[1]["error"].isascii() and "certificate" in english[1]["error"]
        status, answer = _call(opauth, cert05, f"/api/v1/cards/{CARD}/stop", raw=b"[]", language="en")
        assert status == 400 and answer["error"].isascii() and "reason" in answer["error"], answer
        assert _call(opauth, cert05, "/api/v1/users/00FF", language="en")[1]["error"].isascii()
        try:
            status, answer = _call(opauth, _foreign_cert(tmp_path), "/api/v1/users")
        except (ssl.SSLError, urllib.error.URLError, ConnectionError):
            pass  # refused in the TLS handshake
        else:
            assert status == 403, answer
        terminal = _issue(opauth, tmp_path, "terminal09", "--tenant", "minamiedo", "--terminal", "terminal09",
                          "--host", "terminal09.city.example.jp")
        status, answer = _call(opauth, terminal, "/api/v1/users")
        assert status == 403 and "業務システムのSSL通信証明書ではありません" in answer["error"]
        status, answer = _call(opauth, cert05, "/agent/pair", {})  # nor is a business system a terminal
        assert status == 403 and "端末のSSL通信証明書ではありません" in answer["error"]
        assert _call(opauth, terminal, "/agent/pair", {})[0] == 403  # a terminal must be registered (端末管理)
        registered = app.test_cli_runner().invoke(args=["apdl", "terminal", "register", "--tenant", "minamiedo",
                                                        "--cert", str(terminal.cert)])
        assert registered.exit_code == 0, registered.output
        assert _call(opauth, terminal, "/agent/pair", {})[0] == 200
        # the README's curl example
        port = opauth.apdl_base.rsplit(":", 1)[1]
        curl = subprocess.run(["curl", "-sS", "--cacert", str(opauth.ca), "--cert", str(cert05.cert), "--key",
                               str(cert05.key), f"https://127.0.0.1:{port}/api/v1/cards/{CARD}/status"],
                              capture_output=True, text=True, timeout=60)
        assert curl.returncode == 0 and json.loads(curl.stdout)["card_identifier"] == CARD, curl.stderr
        assert _call(opauth, second05, "/api/v1/users")[0] == 200
        opauth.cli("ssl", "delete", second05.serial)  # 削除: revoked at opauth
        status, answer = _call(opauth, second05, "/api/v1/users")
        assert status == 403 and "失効" in answer["error"]
        assert _call(opauth, cert05, "/api/v1/users")[0] == 200  # the system's other certificate still works

    entries = log_entries(app)  # the chain is intact
    stops = [(a, t, d["reason"]) for a, t, d in entries if a in ("card_stopped", "card_stop_cancelled")]
    assert stops == [("card_stopped", f"card:{CARD}", "図書館で紛失の届出"),
                     ("card_stop_cancelled", f"card:{CARD}", "カード発見"),
                     ("card_stopped", f"card:{CARD}", "北江戸市の相談記録"),  # 北江戸市's operator, its own log
                     ("card_stop_cancelled", f"card:{CARD}", "解除")]
    with app.app_context():
        from apdl.models import OperationLog

        actors = [e.actor for e in db.get_session().scalars(select(OperationLog).where(
            OperationLog.action.in_(["card_stopped", "card_stop_cancelled"])))]
    assert actors[:2] == ["business:05 (図書館システム)"] * 2 and actors[2].startswith("U-OP0702@kitaedo")
    refusals = [d for a, _, d in entries if a == "business_api_refused"]
    assert len(refusals) >= 3 and refusals[0]["certificate"] == {}  # the first: no certificate at all
    revoked = [d["certificate"] for d in refusals if "失効" in d["reason"]]  # names the certificate refused
    assert revoked and int(revoked[0]["serial"], 16) == int(second05.serial, 16)
    assert "OU=05 " in revoked[0]["subject"] and len(revoked[0]["sha256"]) == 64
