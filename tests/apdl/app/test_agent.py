"""The terminal card agent: the full download runs through it (agent process → the module's gunicorn over
mutual TLS → pyscard → pcscd → vpcd → the emulated card), with SCP03 on. The test reads everything the
agent received and proves that no static or session key, PIN or AP key was in it; a browser paired with
another terminal cannot drive this one; a revoked terminal certificate stops the agent at its next poll.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from sqlalchemy import select

from apdl import cardops, db, oplog
from apdl.card import scp03
from apdl.card.apdu import CommandApdu
from apdl.emulator.stack import PcscStack
from apdl.models import OperationLog
from tests.apdl.app.conftest import ROOT, Opauth, _key, login, served_apdl, submit
from tests.apdl.app.test_card_journey import _card_aps, _installations
from tests.apdl.app.world import APS, build_registry, register_resident
from tests.helpers import make_csr
from tests.servers import flask_cli

pytestmark = pytest.mark.pcsc


@dataclass
class TerminalCert:
    cert: Path
    key: Path
    serial: str


def _terminal_cert(opauth: Opauth, tmp: Path, name: str, tenant: str = "minamiedo") -> TerminalCert:
    """An SSL通信証明書 bound to a terminal (端末名) of ``tenant``, issued by opauth's own CLI from our CSR."""
    key_path = tmp / f"{name}.key"
    key: ec.EllipticCurvePrivateKey = _key(key_path)
    (tmp / f"{name}.csr").write_bytes(make_csr(key))
    result = flask_cli(opauth.env, "ssl", "issue", "--tenant", tenant, "--terminal", name, "--host",
                       f"{name}.city.example.jp", "--csr", tmp / f"{name}.csr", "--out", tmp / f"{name}.pem")
    assert result.returncode == 0, result.stderr
    return TerminalCert(tmp / f"{name}.pem", key_path, result.stderr.split("issued serial ")[1].split()[0])


def register_terminal(app: Flask, cert: TerminalCert, tenant: str = "minamiedo", *options: str) -> str:
    """端末管理 through the module's CLI: the terminal of ``cert`` (its subject) registered to ``tenant``."""
    result = app.test_cli_runner().invoke(args=["apdl", "terminal", "register", "--tenant", tenant,
                                                "--cert", str(cert.cert), *options])
    assert result.exit_code == 0, result.output
    return result.output


def registered_cert(opauth: Opauth, app: Flask, tmp: Path, name: str, tenant: str = "minamiedo") -> TerminalCert:
    """A terminal certificate of ``tenant``, its terminal registered to that tenant."""
    cert = _terminal_cert(opauth, tmp, name, tenant)
    register_terminal(app, cert, tenant)
    return cert


class Agent:
    """``python -m apdl.agent`` as its own process; its output is what it received and relayed."""

    def __init__(self, opauth: Opauth, stack: PcscStack, cert: TerminalCert, log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apdl.agent", "--url", opauth.apdl_base, "--cert", str(cert.cert),
             "--key", str(cert.key), "--ca", str(opauth.ca), "--reader", stack.reader, "--wait", "2",
             "--trace"],  # every APDU in full: what the tests inspect
            cwd=ROOT, env=stack.env, stdout=self._out, stderr=subprocess.STDOUT, text=True)

    def output(self) -> str:
        return self.log.read_text()

    def code(self, number: int = 1) -> str:
        """The ``number``-th pairing code the agent printed (waiting for it)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.findall(r"PAIRING CODE (\d{8})", self.output())
            if len(found) >= number:
                return found[number - 1]
            assert self.proc.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError(f"no pairing code #{number}: {self.output()}")

    def received(self) -> list[tuple[bytes, bytes]]:
        """Every (command, answer) the agent relayed."""
        return [(bytes.fromhex(c), bytes.fromhex(r)) for c, r in re.findall(r"APDU ([0-9A-F]+) -> ([0-9A-F]+)",
                                                                                 self.output())]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self._out.close()


@pytest.fixture
def agent_world(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack, tmp_path: Path) -> Iterator[Flask]:
    """The module served by its gunicorn (where agents connect), card operations through agents."""
    apdl_app.config.update(CARD_TRANSPORT="agent", AGENT_TIMEOUT=10)
    with served_apdl(opauth, apdl_app):
        yield apdl_app


def test_the_agent_shows_a_fresh_code_when_its_code_expires_or_is_used(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack, tmp_path: Path) -> None:
    lifetime = 6
    client = login(opauth, apdl_app, "minami")
    cert = registered_cert(opauth, apdl_app, tmp_path, "terminal05")
    with served_apdl(opauth, apdl_app, PAIRING_CODE_SECONDS=lifetime):
        agent = Agent(opauth, card_stack, cert, tmp_path / "agent.log")
        try:
            first = agent.code()
            started = time.monotonic()
            second = agent.code(2)  # printed without a restart once the first expired
            assert second != first and time.monotonic() - started >= lifetime - 1
            assert submit(client, "/terminal", "/terminal", {"code": first}).status_code == 400  # expired
            assert submit(client, "/terminal", "/terminal", {"code": second}).status_code == 302
            assert "terminal05" in client.get("/terminal").get_data(as_text=True)
            third = agent.code(3)  # the second was used: the next operator gets a fresh one at once
            assert time.monotonic() - started < 2 * lifetime
            assert third not in (first, second)
        finally:
            agent.stop()
    with apdl_app.app_context():
        issued = [e for e in db.get_session().scalars(select(OperationLog)) if e.action == oplog.Action.TERMINAL_CODE]
    assert len(issued) >= 3 and all(set(e.detail) == {"expires_at"} for e in issued)
    assert not any(code in json.dumps(e.detail) for e in issued for code in (first, second, third))


def _session_keys(received: list[tuple[bytes, bytes]], keys: scp03.KeySource) -> list[bytes]:
    """Rebuild every session's S-ENC, S-MAC and S-RMAC from the diversification data and challenges the agent
    saw (the test is the issuer: it holds the master keys)."""
    found = []
    for command, answer in received:
        if command[1] == scp03.INS_INITIALIZE_UPDATE and answer[-2:] == b"\x90\x00":
            host_challenge = CommandApdu.parse(command).data
            context = host_challenge + answer[13:21]
            session = scp03.SessionKeys.derive(keys.for_card(answer[:10]), context)
            assert answer[21:29] == session.cryptogram(scp03.CARD_CRYPTOGRAM, context)
            found += [session.enc, session.mac, session.rmac]
    return found


def test_the_download_runs_through_the_agent_and_no_key_reaches_it(
        opauth: Opauth, agent_world: Flask, card_stack: PcscStack, tmp_path: Path) -> None:
    app = agent_world
    registry = build_registry(opauth, app)
    agent = Agent(opauth, card_stack, registered_cert(opauth, app, tmp_path, "terminal01"), tmp_path / "agent.log")
    try:
        client = login(opauth, app, "minami")
        resident = register_resident(client)
        page = f"/residents/{resident}"
        unpaired = submit(client, page, f"{page}/card/read", {})
        assert unpaired.status_code == 403 and "組付け" in unpaired.get_data(as_text=True)
        wrong = submit(client, "/terminal", "/terminal", {"code": "00000000"})
        assert wrong.status_code == 400
        assert submit(client, "/terminal", "/terminal", {"code": agent.code()}).status_code == 302
        assert "端末「terminal01」と組付けました。" in client.get("/terminal").get_data(as_text=True)

        read = submit(client, page, f"{page}/card/read", {})
        assert read.status_code == 200 and 'id="regional">なし<' in read.get_data(as_text=True)
        assert submit(client, page, f"{page}/card/regional-area", {}).status_code == 302
        chosen = ["R1", "E1", "E2"]
        before, started = len(agent.received()), time.perf_counter()
        response = submit(client, page, f"{page}/card/download",
                          {"ap_ids": [str(registry.ids[label]) for label in chosen], "pin": "2580"})
        elapsed = time.perf_counter() - started
        assert response.status_code == 302, response.get_data(as_text=True)[-500:]
        relayed = len(agent.received()) - before
        print(f"\ndownload of 3 APs through the agent: {relayed} APDUs in {elapsed * 1000:.0f} ms "
              f"({elapsed * 1000 / relayed:.1f} ms per APDU)")
        assert _card_aps(card_stack) == {APS[label][0] for label in chosen} == card_stack.card.installed()
        assert [state for state, _ in _installations(app)] == ["installed"] * 3
    finally:
        agent.stop()

    received = agent.received()
    assert len(received) > 20
    wire = b"".join(c + r for c, r in received)
    master = cardops.card_keys(app.config)
    card = scp03.StaticKeys.from_hex(card_stack.card.state.scp03_keys)  # the card's own, diversified keys
    sessions = _session_keys(received, master)
    assert len(sessions) >= 3 * 4  # a session per SELECT of a security domain, each with three keys
    for secret in [master.master.enc, master.master.mac, master.master.dek, card.enc, card.mac, card.dek, *sessions]:
        assert secret not in wire and secret.hex().upper() not in agent.output()
    # R-ENCRYPTION: what the card answered (its identifier, the installed APs' AIDs) crossed the relay enciphered
    assert card_stack.card.state.card_identifier.encode() not in b"".join(r for _, r in received)
    assert not any(bytes.fromhex(a) in r for a in card_stack.card.installed() for _, r in received)
    assert b"2580" not in wire  # the PIN travels inside INSTALL, enciphered (C-DECRYPTION)
    installs = [CommandApdu.parse(c) for c, _ in received if c[1] == 0xE6]
    assert installs and all(c.cla == 0x84 for c in installs)  # each management command carried a C-MAC


def _post(opauth: Opauth, cert: TerminalCert, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    context = ssl.create_default_context(cafile=str(opauth.ca))
    context.load_cert_chain(str(cert.cert), str(cert.key))
    request = urllib.request.Request(opauth.apdl_base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_a_browser_paired_with_another_terminal_cannot_drive_this_one(
        opauth: Opauth, agent_world: Flask, card_stack: PcscStack, tmp_path: Path) -> None:
    app = agent_world
    app.config["AGENT_TIMEOUT"] = 2
    build_registry(opauth, app)
    agent = Agent(opauth, card_stack, registered_cert(opauth, app, tmp_path, "terminal02"), tmp_path / "agent.log")
    other = registered_cert(opauth, app, tmp_path, "terminal03", "kitaedo")  # no card reader attached here
    try:
        status, answer = _post(opauth, other, "/agent/pair", {})
        assert status == 200
        kita = login(opauth, app, "kita")
        assert submit(kita, "/terminal", "/terminal", {"code": str(answer["code"])}).status_code == 302
        page = f"/residents/{register_resident(kita)}"
        stalled = submit(kita, page, f"{page}/card/read", {})
        assert stalled.status_code == 503  # its own terminal's agent never answered
        assert agent.received() == []  # nothing of kita's session reached terminal02's agent
        minami = login(opauth, app, "minami")
        assert submit(minami, "/terminal", "/terminal", {"code": agent.code()}).status_code == 302
        # the pairing code is single-use: the other browser cannot take over terminal02 with it
        assert submit(kita, "/terminal", "/terminal", {"code": agent.code()}).status_code == 400
        minami_page = f"/residents/{register_resident(minami)}"
        assert submit(minami, minami_page, f"{minami_page}/card/read", {}).status_code == 200
        relayed = len(agent.received())
        assert relayed > 0
        assert submit(kita, page, f"{page}/card/read", {}).status_code == 503  # still only its own terminal
        assert len(agent.received()) == relayed
        assert _post(opauth, other, "/agent/poll", {"wait": 0})[0] == 204  # terminal03 sees none of it
        # bad input from an agent is a clear 400
        assert _post(opauth, other, "/agent/poll", {"wait": 100})[0] == 400
        assert _post(opauth, other, "/agent/poll", {"wait": "soon"})[0] == 400
        assert _post(opauth, other, "/agent/respond", {"exchange": "1", "response": "9000"})[0] == 400
        assert _post(opauth, other, "/agent/respond", {"exchange": 10**6, "response": "9000"})[0] == 400
    finally:
        agent.stop()


def test_no_certificate_is_refused_and_a_revoked_one_stops_the_agent(
        opauth: Opauth, agent_world: Flask, card_stack: PcscStack, tmp_path: Path) -> None:
    context = ssl.create_default_context(cafile=str(opauth.ca))
    request = urllib.request.Request(opauth.apdl_base + "/agent/poll", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30, context=context)
    assert refused.value.code == 403  # no client certificate
    cert = registered_cert(opauth, agent_world, tmp_path, "terminal04")
    agent = Agent(opauth, card_stack, cert, tmp_path / "agent.log")
    try:
        agent.code()
        opauth.cli("ssl", "delete", cert.serial)  # 削除: revoked at opauth
        assert agent.proc.wait(timeout=60) == 3, agent.output()
        assert "STOPPED" in agent.output()
        status, _ = _post(opauth, cert, "/agent/pair", {})
        assert status == 403
        # an answer that also asks for the next command is a poll: revocation is checked before anything else
        assert _post(opauth, cert, "/agent/respond", {"exchange": 1, "response": "9000", "wait": 0})[0] == 403
    finally:
        agent.stop()
