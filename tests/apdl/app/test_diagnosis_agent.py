"""カード障害切り分け on a terminal's reader, through its card agent: the agent process (python -m apdl.agent)
over mutual TLS to the module's gunicorn, pyscard → pcscd → vpcd → the emulated card, which is told to fail
through its fault file. The agent tells no card, no answer to reset and a mute card apart and gives the ATR;
the history names the terminal; a browser paired with one terminal never reaches another.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from apdl import db, oplog
from apdl.card import commands
from apdl.emulator import faults
from apdl.emulator.faults import StatusRule
from apdl.emulator.stack import PcscStack
from apdl.models import Diagnosis, OperationLog
from tests.apdl.app import test_agent
from tests.apdl.app.conftest import Opauth, login, submit
from tests.apdl.app.test_agent import Agent, _post, registered_cert
from tests.apdl.app.world import CARD, register_resident

pytestmark = pytest.mark.pcsc
agent_world = test_agent.agent_world  # the module served by its gunicorn, card operations through agents
MUTE = "カードが応答しません（タイムアウト）。カードを挿し直してください。改善しない場合はカードの故障が考えられます。"


def _diagnose(client: FlaskClient) -> tuple[int, str]:
    response = submit(client, "/diagnosis", "/diagnosis", {})
    assert response.status_code == 302, response.get_data(as_text=True)[-500:]
    run_id = int(response.headers["Location"].rsplit("/", 1)[1])
    return run_id, html.unescape(client.get(f"/diagnosis/{run_id}?lang=ja").get_data(as_text=True))


def _english(client: FlaskClient, run_id: int) -> str:
    page = html.unescape(client.get(f"/diagnosis/{run_id}?lang=en").get_data(as_text=True))
    client.get("/?lang=ja")
    return page


def _step(page: str, key: str) -> list[str]:
    rows = re.findall(rf'<tr class="step-{key} outcome-(\w+)">.*?<td>(\w*)</td>\s*<td class="message">(.*?)</td></tr>',
                      page, re.S)
    return [f"{outcome} {sw} {re.sub(r'<[^>]+>', ' ', message).strip()}" for outcome, sw, message in rows]


def _run(app: Flask, run_id: int) -> Diagnosis:
    with app.app_context():
        return db.get_session().get(Diagnosis, run_id)  # type: ignore[return-value]


def _card_mode(stack: PcscStack, mode: str) -> None:
    faults.write(stack.fault_path, card=mode, mute_seconds=0.5)
    assert stack.link is not None
    stack.link.apply_faults()
    stack.wait_card(present=mode != "absent", timeout=5)


def test_the_diagnosis_runs_on_the_paired_terminal_through_its_agent(
        opauth: Opauth, agent_world: Flask, card_stack: PcscStack, tmp_path: Path) -> None:
    app = agent_world
    agent = Agent(opauth, card_stack, registered_cert(opauth, app, tmp_path, "terminal11"), tmp_path / "agent.log")
    try:
        client = login(opauth, app, "minami")
        assert submit(client, "/terminal", "/terminal", {"code": agent.code()}).status_code == 302
        assert "terminal11" in client.get("/diagnosis").get_data(as_text=True)  # where it will run

        healthy, page = _diagnose(client)
        run = _run(app, healthy)
        assert (run.card_identifier, run.terminal) == (CARD, "terminal11")
        assert run.outcome != "fault" and "fault" not in {s["outcome"] for s in run.steps}, run.steps
        assert _step(page, "reader") == ["ok  カードリーダー「Virtual PCD 00 00」を検出しました。"]  # the agent's
        assert _step(page, "atr")[0].startswith("ok  ATR 3B 8A 80 01") and "プロトコル T=" in page
        assert re.search(r"^ATR 3B8A8001", agent.output(), re.M)  # the agent was asked for the ATR
        relayed = len(agent.received())
        assert relayed > 3  # and the card steps' APDUs went through it

        faults.write(card_stack.fault_path, status=[StatusRule(0x6D00, ins=commands.INS_GET_DATA)])
        status_word, page = _diagnose(client)
        (row,) = _step(page, "card_info")
        assert row.startswith("fault 6D00 ") and "この命令に対応していません" in row
        assert _run(app, status_word).summary == "sw:6D00"
        assert "does not support this instruction" in _english(client, status_word)

        for mode, code, japanese, english in (
                ("absent", "no_card", "カードが挿入されていません", "No card is inserted"),
                ("no_atr", "no_atr", "応答（ATR）がありません", "no answer to reset"),
                ("mute", "mute", "カードが応答しません（タイムアウト）", "The card does not answer (timeout)")):
            _card_mode(card_stack, mode)
            run_id, page = _diagnose(client)
            run = _run(app, run_id)
            assert (run.outcome, run.summary, run.card_identifier) == ("fault", code, ""), (mode, run.steps)
            assert japanese in page and english in _english(client, run_id)
            assert run.terminal == "terminal11"
            if mode == "mute":  # the ATR came, the first command did not answer
                assert _step(page, "atr")[0].startswith("ok  ATR 3B")
                faulty = [s for s in _step(page, "atr") + _step(page, "manager") if s.startswith("fault")]
                assert faulty == [f"fault  {MUTE}"]
            else:
                assert _step(page, "card")[0].startswith("fault  ") and _step(page, "atr") == [
                    "skipped  前の段階で失敗したため実施していません。"]
        _card_mode(card_stack, "present")

        by_terminal = client.get("/diagnosis?terminal=terminal11").get_data(as_text=True)
        assert len(re.findall(r'href="/diagnosis/(\d+)"', by_terminal)) == 5
        assert client.get("/diagnosis?terminal=Virtual PCD 00 00").get_data(as_text=True).count(
            'href="/diagnosis/') == 0  # nothing ran on the module's own reader
    finally:
        agent.stop()


def test_a_browser_paired_with_another_terminal_cannot_diagnose_this_one(
        opauth: Opauth, agent_world: Flask, card_stack: PcscStack, tmp_path: Path) -> None:
    app = agent_world
    app.config["AGENT_TIMEOUT"] = 2
    agent = Agent(opauth, card_stack, registered_cert(opauth, app, tmp_path, "terminal12"), tmp_path / "agent.log")
    other = registered_cert(opauth, app, tmp_path, "terminal13", "kitaedo")  # kita's; its agent is not running
    try:
        status, answer = _post(opauth, other, "/agent/pair", {})
        assert status == 200
        kita = login(opauth, app, "kita")
        assert submit(kita, "/terminal", "/terminal", {"code": str(answer["code"])}).status_code == 302
        minami = login(opauth, app, "minami")
        assert submit(minami, "/terminal", "/terminal", {"code": agent.code()}).status_code == 302

        silent, page = _diagnose(kita)
        run = _run(app, silent)
        assert (run.terminal, run.summary) == ("terminal13", "agent_silent")
        assert "端末のカードエージェントが応答しません" in page
        assert "card agent does not answer" in _english(kita, silent)
        assert "ATR" not in agent.output() and agent.received() == []  # terminal12 saw nothing of it

        mine, _ = _diagnose(minami)
        assert (_run(app, mine).terminal, _run(app, mine).card_identifier) == ("terminal12", CARD)
        assert kita.get(f"/diagnosis/{mine}").status_code == 404  # another 利用機関's run
        # the answer's error kinds are checked: a clear 400
        assert _post(opauth, other, "/agent/respond", {"exchange": 1, "response": None, "error": "on fire"})[0] == 400
        assert _post(opauth, other, "/agent/respond", {"exchange": 1, "response": None, "error": 3})[0] == 400
        assert _post(opauth, other, "/agent/respond", {"exchange": 1, "response": None, "wait": 99})[0] == 400
    finally:
        agent.stop()


def test_an_unpaired_session_is_refused_and_never_reaches_the_module_reader(
        opauth: Opauth, agent_world: Flask, card_stack: PcscStack, tmp_path: Path) -> None:
    """APDL_CARD_TRANSPORT=agent: the module's own reader (which holds a card here) is not used for a session without
    a terminal; it is refused like a card operation, and logged. A stopped agent is named as the cause of a failed
    card read."""
    app = agent_world
    app.config["AGENT_TIMEOUT"] = 2
    agent = Agent(opauth, card_stack, registered_cert(opauth, app, tmp_path, "terminal14"), tmp_path / "agent.log")
    try:
        kita = login(opauth, app, "kita")
        refused = submit(kita, "/diagnosis", "/diagnosis", {})
        answer = html.unescape(refused.get_data(as_text=True))
        assert refused.status_code == 403 and "端末が組付けられていません" in answer
        assert CARD not in answer and "ATR" not in answer and "Virtual PCD" not in answer
        with app.app_context():
            session = db.get_session()
            assert session.scalar(select(func.count()).select_from(Diagnosis)) == 0
            (entry,) = [e for e in session.scalars(select(OperationLog)) if e.action == oplog.Action.REFUSED]
            assert (entry.tenant_code, entry.target) == ("kitaedo", "terminal")
        assert agent.received() == []

        minami = login(opauth, app, "minami")
        assert submit(minami, "/terminal", "/terminal", {"code": agent.code()}).status_code == 302
        mine, _ = _diagnose(minami)
        assert (_run(app, mine).terminal, _run(app, mine).card_identifier) == ("terminal14", CARD)
    finally:
        agent.stop()

    page = f"/residents/{register_resident(minami)}"  # terminal14's agent is stopped now
    silent = submit(minami, page, f"{page}/card/read", {})
    assert silent.status_code == 503 and "端末のカードエージェントが応答しません" in html.unescape(
        silent.get_data(as_text=True))
    minami.get("/?lang=en")
    silent = submit(minami, page, f"{page}/card/read", {})
    assert silent.status_code == 503 and "card agent does not answer" in html.unescape(silent.get_data(as_text=True))
