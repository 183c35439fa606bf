"""カード障害切り分け through the real card path (pyscard → pcscd → vsmartcard-vpcd → the emulator): every
step on a healthy card, every status word and card failure the emulator is told to give explained in Japanese
and English, the history per card and terminal, the tenancy of runs and of the recent operations, permissions."""

from __future__ import annotations

import contextlib
import html
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from apdl import cardops, db
from apdl.app import create_app
from apdl.card import commands
from apdl.card.adapter import CardStatusError, GlobalPlatformCardSession
from apdl.card.apdu import StatusWord
from apdl.card.pcsc import PcscTransport
from apdl.diagnosis import STATUS_FEED_HOOK, SW_MESSAGES
from apdl.emulator import faults
from apdl.emulator.faults import StatusRule
from apdl.emulator.stack import SECOND_READER_NAME, PcscStack, StackUnavailable
from apdl.models import Diagnosis, OperationLog
from tests.apdl.app.conftest import Opauth, apdl_config, issued_card, login, submit
from tests.apdl.app.status_feed import csv_feed, import_status
from tests.apdl.app.world import APS, CARD, build_registry, register_resident

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parents[3]

# Japanese and English of the five status words the issue names (a part of each, as shown on screen).
NAMED = {
    0x6A82: ("カードAPが見つかりません", "card AP was not found"),
    0x6A84: ("空き容量が足りません", "not have enough free memory"),
    0x6982: ("セキュリティ条件を満たしていません", "Security conditions are not satisfied"),
    0x6983: ("暗証番号がロックされています", "PIN is blocked"),
    0x6D00: ("この命令に対応していません", "does not support this instruction"),
}


def _diagnose(client: FlaskClient) -> tuple[int, str]:
    response = submit(client, "/diagnosis", "/diagnosis", {})
    assert response.status_code == 302, response.get_data(as_text=True)[-500:]
    run_id = int(response.headers["Location"].rsplit("/", 1)[1])
    return run_id, html.unescape(client.get(f"/diagnosis/{run_id}?lang=ja").get_data(as_text=True))


def _english(client: FlaskClient, run_id: int) -> str:
    page = html.unescape(client.get(f"/diagnosis/{run_id}?lang=en").get_data(as_text=True))
    client.get("/?lang=ja")  # back to Japanese for the next page
    return page


# The outcomes in words on the Japanese screen (the row's class keeps the code).
OUTCOMES = {"ok": "正常", "info": "情報", "warning": "注意", "fault": "異常", "skipped": "未実施"}


def _step(page: str, key: str) -> list[str]:
    """The rows of one step: outcome in words (checked against the row's class), SW and message."""
    rows = re.findall(rf'<tr class="step-{key} outcome-(\w+)">.*?<td class="outcome">(.*?)</td>\s*<td>(\w*)</td>\s*'
                      r'<td class="message">(.*?)</td></tr>', page, re.S)
    assert all(OUTCOMES[outcome] == shown for outcome, shown, _sw, _message in rows), rows
    return [f"{shown} {sw} {re.sub(r'<[^>]+>', ' ', message).strip()}" for _outcome, shown, sw, message in rows]


def _run(app: Flask, run_id: int) -> Diagnosis:
    with app.app_context():
        return db.get_session().get(Diagnosis, run_id)  # type: ignore[return-value]


def _load(client: FlaskClient, resident: int, registry: Any, labels: list[str]) -> None:
    page = f"/residents/{resident}"
    response = submit(client, page, f"{page}/card/download",
                      {"ap_ids": [str(registry.ids[label]) for label in labels], "pin": "2580"})
    assert response.status_code == 302, response.get_data(as_text=True)[-500:]


def test_a_healthy_card_passes_every_step(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack,
                                          tmp_path: Path) -> None:
    registry = build_registry(opauth, apdl_app)
    imported = import_status(apdl_app, tmp_path, csv_feed(f"{CARD},active,,2026-11-29"), "--batch-id", "daily-1")
    assert imported.returncode == 0, imported.stderr
    client = login(opauth, apdl_app, "minami")
    _load(client, register_resident(client), registry, ["E1", "E2"])
    run_id, page = _diagnose(client)
    run = _run(apdl_app, run_id)
    assert run.outcome == "ok" and run.summary == "ok" and run.card_identifier == CARD
    assert run.terminal == "Virtual PCD 00 00"
    assert "カードリーダー「Virtual PCD 00 00」を検出しました" in _step(page, "reader")[0]
    assert _step(page, "atr")[0].startswith("正常  ATR 3B 8A 80 01") and "プロトコル T=" in page
    assert "カードFID 1234567890123、住所地コード 131016" in page
    assert f"カードAP 2件（{APS['E1'][0]}, {APS['E2'][0]}）" in page
    assert [s.split()[0] for s in _step(page, "ap")] == ["正常", "正常"]
    assert _step(page, "pin") == [f"正常  窓口予約 ({APS['E2'][0]}) の暗証番号: 残り3回"]
    assert _step(page, "free") == ["情報  地域住民向け領域 はまだ設定されていません。",
                                   "正常  拡張利用領域: 空き 36864 バイト、カードAP 2件"]
    assert _step(page, "status_feed") == ["正常  カードステータス: 運用中（2026-11-29 時点）"]  # from today's feed
    assert "この利用機関の操作" in page and page.count("<td>カードAPの搭載</td>") == 2
    jst = r"\d{4}-\d\d-\d\d \d\d:\d\d JST"  # Japan time, like every other screen (not UTC, not ISO)
    assert re.search(rf'<span id="started-at">{jst}</span>', page) and " UTC" not in page
    recent = re.findall(r'<td class="at">(.*?)</td>', page)
    assert recent and all(re.fullmatch(jst, at) for at in recent), recent
    history = html.unescape(client.get("/diagnosis").get_data(as_text=True))
    assert '<td class="outcome-ok">正常</td><td class="summary">正常</td>' in history
    assert re.search(rf'href="/diagnosis/{run_id}">{jst}</a>', history)
    english = _english(client, run_id)
    assert "Extended area: 36864 bytes free, 2 card APs" in english and "tries left" in english
    with apdl_app.app_context():
        logged = db.get_session().scalars(select(OperationLog).where(OperationLog.action == "card_diagnosed")).one()
    assert logged.target == f"card:{CARD}" and logged.detail["diagnosis"] == run_id


def test_the_status_feed_slot_shows_what_a_registered_feed_says(opauth: Opauth, apdl_app: Flask,
                                                                 card_stack: PcscStack) -> None:
    seen: list[str] = []

    def feed(_scope: Any, card: str) -> dict[str, Any]:
        seen.append(card)
        return {"status": "lost", "as_of": "2026-11-30", "stale": False}

    apdl_app.extensions[STATUS_FEED_HOOK] = feed
    client = login(opauth, apdl_app, "minami")
    run_id, page = _diagnose(client)
    assert seen == [CARD]
    assert _step(page, "status_feed") == ["注意  カードステータス: 紛失（2026-11-30 時点）"]
    assert _run(apdl_app, run_id).outcome == "warning"

    def stopped(_scope: Any, _card: str) -> dict[str, Any]:
        return {"status": "stopped", "as_of": "2026-11-29", "stale": True}

    apdl_app.extensions[STATUS_FEED_HOOK] = stopped  # a live 即時停止 while the feed is stale: stopped, then the note
    stop_id, stop_page = _diagnose(client)
    assert _step(stop_page, "status_feed") == [
        "注意  このカードは即時停止中です。なお、カードステータスの取込が古くなっています。"]
    assert "This card has been stopped immediately. Note:" in _english(client, stop_id)
    history = html.unescape(client.get("/diagnosis").get_data(as_text=True))
    summaries = re.findall(r'<td class="outcome-(\w+)">(.*?)</td><td class="summary">(.*?)</td>', history)
    assert summaries == [("warning", "注意", "即時停止中"), ("warning", "注意", "カードステータスが運用中ではない")]


def test_an_ap_recorded_on_the_card_that_the_card_does_not_find_is_6a82(opauth: Opauth, apdl_app: Flask,
                                                                         card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    _load(client, register_resident(client), registry, ["E1"])
    e1 = APS["E1"][0]
    faults.write(card_stack.fault_path, status=[StatusRule(0x6A82, ins=commands.INS_SELECT, data=bytes.fromhex(e1))])
    run_id, page = _diagnose(client)
    assert _step(page, "ap") == [f"異常 6A82 健康ポイント ({e1}) は搭載済みと記録されていますが、"
                                 "カードにありません（6A82）。カードAPが見つかりません。"]
    run = _run(apdl_app, run_id)
    assert run.outcome == "fault" and run.summary == "sw:6A82"
    assert NAMED[0x6A82][1] in _english(client, run_id)


def test_a_blocked_pin_is_6983(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    _load(client, register_resident(client), registry, ["E2"])
    transport = PcscTransport(card_stack.reader)  # the holder types a wrong PIN three times at a terminal
    try:
        session = GlobalPlatformCardSession(transport)
        session.select(bytes.fromhex(APS["E2"][0]))
        for _ in range(3):
            with pytest.raises(CardStatusError):
                session.verify_pin(b"0000")
    finally:
        transport.close()
    run_id, page = _diagnose(client)
    (pin,) = _step(page, "pin")
    assert pin == f"異常 6983 窓口予約 ({APS['E2'][0]}) の暗証番号: 6983: {SW_MESSAGES[0x6983]}"
    assert _run(apdl_app, run_id).summary == "sw:6983"
    assert NAMED[0x6983][1] in _english(client, run_id)


def test_a_full_area_is_6a84_and_a_refused_install_shows_in_the_recent_operations(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    resident = register_resident(client)
    faults.write(card_stack.fault_path, status=[StatusRule(0x6A84, ins=commands.INS_INSTALL, times=1)])
    page = f"/residents/{resident}"
    refused = submit(client, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"])]})
    assert refused.status_code == 403
    card_stack.card.load_state(issued_card(apdl_app, extended_quota=1000))  # a card whose extended area is nearly full
    run_id, shown = _diagnose(client)
    assert _step(shown, "free")[-1].startswith(
        "注意 6A84 拡張利用領域: 空き 1000 バイト。搭載できるカードAPがありません")
    assert "カードAP搭載の失敗" in shown and f"6A84: {SW_MESSAGES[0x6A84]}" in shown
    assert "ap_install_failed" not in shown  # the operation in words, not the log's code
    assert _run(apdl_app, run_id).summary == "sw:6A84"
    history = html.unescape(client.get("/diagnosis").get_data(as_text=True))
    assert f'<td class="outcome-warning">注意</td><td class="summary">6A84: {SW_MESSAGES[0x6A84]}</td>' in history
    english = _english(client, run_id)
    assert NAMED[0x6A84][1] in english and "Card AP load failed" in english


@pytest.mark.parametrize(("sw", "ins", "step"), [(0x6982, commands.INS_GET_STATUS, "apps"),
                                                 (0x6D00, commands.INS_GET_DATA, "card_info")])
def test_security_status_and_unsupported_instructions(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack,
                                                      sw: int, ins: int, step: str) -> None:
    client = login(opauth, apdl_app, "minami")
    faults.write(card_stack.fault_path, status=[StatusRule(sw, ins=ins)])
    run_id, page = _diagnose(client)
    (row,) = _step(page, step)
    assert row.startswith(f"異常 {sw:04X} ") and NAMED[sw][0] in row
    assert _run(apdl_app, run_id).summary == f"sw:{sw:04X}"
    assert NAMED[sw][1] in _english(client, run_id)


def test_every_status_word_the_emulator_answers_is_explained_and_others_fall_back(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    client = login(opauth, apdl_app, "minami")
    known = [int(s) for s in StatusWord if s not in (StatusWord.OK, StatusWord.MORE_DATA, StatusWord.PIN_RETRIES_LEFT)]
    assert set(known) <= set(SW_MESSAGES)
    for sw in [*known, 0x63C1, 0x6FFF, 0x6400]:
        faults.write(card_stack.fault_path, status=[StatusRule(sw, ins=commands.INS_SELECT,
                                                               data=commands.CARD_MANAGER_AID, times=1)])
        run_id, page = _diagnose(client)
        (row,) = _step(page, "manager")
        english = _english(client, run_id)
        if sw in SW_MESSAGES:
            assert f"SELECT: {sw:04X}: {SW_MESSAGES[sw]}" in row, row
            assert re.search(rf"SELECT: {sw:04X}: [A-Z][a-z ]+", english), (sw, english[-2000:])
            assert str(SW_MESSAGES[sw]) not in english  # translated, not the Japanese
        elif sw == 0x63C1:
            assert "残り1回" in row and "1 try left" in english
        else:
            assert f"カードがエラーを返しました（SW {sw:04X}）" in row
            assert f"The card returned an error (SW {sw:04X})" in english


@pytest.mark.parametrize(("mode", "expected_ja", "expected_en"), [
    ("absent", "カードが挿入されていません", "No card is inserted"),
    ("no_atr", "応答（ATR）がありません", "no answer to reset"),
    ("mute", "カードが応答しません（タイムアウト）", "The card does not answer (timeout)"),
])
def test_no_card_no_atr_and_a_mute_card(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack, mode: str,
                                        expected_ja: str, expected_en: str) -> None:
    client = login(opauth, apdl_app, "minami")
    faults.write(card_stack.fault_path, card=mode, mute_seconds=0.5)
    assert card_stack.link is not None
    card_stack.link.apply_faults()
    card_stack.wait_card(present=mode != "absent", timeout=5)
    run_id, page = _diagnose(client)
    run = _run(apdl_app, run_id)
    assert run.outcome == "fault" and run.card_identifier == "" and run.summary in {"no_card", "no_atr", "mute"}
    assert expected_ja in page and expected_en in _english(client, run_id)
    assert "skipped" in [s["outcome"] for s in run.steps]


def test_a_missing_reader(opauth: Opauth, tmp_path: Path, card_stack: PcscStack) -> None:
    app = create_app(apdl_config(opauth, tmp_path / "apdl", reader="No Such Reader 00 00"))
    db.upgrade(app.config["DATABASE_URL"])
    try:
        client = login(opauth, app, "minami")
        run_id, page = _diagnose(client)
        assert "カードリーダー「No Such Reader 00 00」が見つかりません" in page
        assert _run(app, run_id).summary == "reader_missing"
    finally:
        app.extensions[db.ENGINE_KEY].dispose()


def test_a_separate_emulator_process_told_to_fail_by_the_faults_command(opauth: Opauth, tmp_path: Path,
                                                                        pcsc_stack: PcscStack) -> None:
    app = create_app(apdl_config(opauth, tmp_path / "apdl", reader=SECOND_READER_NAME))
    db.upgrade(app.config["DATABASE_URL"])
    fault_file = tmp_path / "faults.json"
    cardops.card_keys(app.config)  # the module's SCP03 keys; the card is issued with them
    process = subprocess.Popen([sys.executable, "-m", "apdl.emulator", "--port", str(pcsc_stack.port + 1),
                                "--faults", str(fault_file), "--card-identifier", "9876543210987",
                                "--keys-file", str(tmp_path / "apdl" / cardops.CARD_KEYS_FILE)], cwd=ROOT)
    try:
        pcsc_stack.wait_card(present=True, reader=SECOND_READER_NAME)
        command = [sys.executable, "-m", "apdl.emulator.faults", str(fault_file), "--sw", "6D00", "--ins", "F2"]
        assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=60).returncode == 0
        client = login(opauth, app, "minami")
        run_id, page = _diagnose(client)
        assert _run(app, run_id).card_identifier == "9876543210987"
        (row,) = _step(page, "apps")
        assert row.startswith("異常 6D00 GET STATUS: 6D00: ") and NAMED[0x6D00][0] in row
        assert _run(app, run_id).terminal == SECOND_READER_NAME
    finally:
        process.terminate()
        process.wait(timeout=10)
        with contextlib.suppress(StackUnavailable):
            pcsc_stack.wait_card(present=False, reader=SECOND_READER_NAME)
        app.extensions[db.ENGINE_KEY].dispose()


def test_history_per_card_and_terminal_and_only_in_the_tenant(opauth: Opauth, apdl_app: Flask,
                                                               card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")
    _load(minami, register_resident(minami), registry, ["E1"])
    first, page = _diagnose(minami)
    assert "<td>カードAPの搭載</td>" in page and "この利用機関の操作 " in page
    second, _ = _diagnose(minami)
    kita = login(opauth, apdl_app, "kita")
    kita_run, kita_page = _diagnose(kita)  # the same card, in another 利用機関
    assert _run(apdl_app, kita_run).card_identifier == CARD
    assert "この利用機関の操作記録はありません" in kita_page
    assert "<td>カードAPの搭載</td>" not in kita_page  # minami's, not kita's
    card_stack.card.load_state(issued_card(apdl_app, card_identifier="5555555555555"))
    other, _ = _diagnose(minami)
    by_card = minami.get(f"/diagnosis?card={CARD}").get_data(as_text=True)
    assert re.findall(r'href="/diagnosis/(\d+)"', by_card) == [str(second), str(first)]
    by_terminal = minami.get("/diagnosis?terminal=Virtual PCD 00 00").get_data(as_text=True)
    assert re.findall(r'href="/diagnosis/(\d+)"', by_terminal) == [str(other), str(second), str(first)]
    assert "5555555555555" in by_terminal
    assert minami.get("/diagnosis?terminal=elsewhere").get_data(as_text=True).count('href="/diagnosis/') == 0
    kita_history = kita.get("/diagnosis").get_data(as_text=True)
    assert re.findall(r'href="/diagnosis/(\d+)"', kita_history) == [str(kita_run)]
    assert kita.get(f"/diagnosis/{first}").status_code == 404
    assert minami.get(f"/diagnosis/{kita_run}").status_code == 404
    assert minami.get("/diagnosis/99999999999").status_code == 404
    assert minami.get("/diagnosis?card=%00").status_code == 200


def test_an_operator_without_card_permissions_is_refused(opauth: Opauth, apdl_app: Flask,
                                                         card_stack: PcscStack) -> None:
    minami = login(opauth, apdl_app, "minami")
    run_id, _ = _diagnose(minami)
    reader = login(opauth, apdl_app, "reader")  # user.register only
    assert reader.get("/diagnosis").status_code == 403
    assert submit(reader, "/residents", "/diagnosis", {}).status_code == 403
    assert reader.get(f"/diagnosis/{run_id}").status_code == 403
    assert apdl_app.test_client().get("/diagnosis").status_code == 302  # not logged in: to the login
    with apdl_app.app_context():
        runs = db.get_session().scalars(select(Diagnosis)).all()
        refused = db.get_session().scalars(select(OperationLog).where(OperationLog.action == "refused")).all()
    assert len(runs) == 1 and any(r.target == "/diagnosis" for r in refused)
