"""The emulator fails on demand through its fault file, seen through real pcscd + vsmartcard-vpcd: no card,
no answer to reset, a mute card (no answer, then the reader's timeout) and forced status words, from this
process and from a separate emulator process driven by ``python -m apdl.emulator.faults``."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apdl.card import commands
from apdl.card.adapter import CardStatusError, GlobalPlatformCardSession
from apdl.card.pcsc import PcscTransport, reader_state
from apdl.emulator import faults
from apdl.emulator.card import ATR, EmulatedCard
from apdl.emulator.faults import Faults, StatusRule
from apdl.emulator.stack import SECOND_READER_NAME, PcscStack, StackUnavailable
from apdl.errors import CardUnavailable
from tests.apdl.helpers import aid, type_c

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("bad", [[], {"card": "gone"}, {"mute_seconds": 0}, {"mute_seconds": "1"},
                                 {"status": [{"sw": "6A8"}]}, {"status": [{"sw": "6A82", "ins": "A"}]},
                                 {"status": [{"sw": "6A82", "times": 0}]}, {"status": ["6A82"]},
                                 {"status": [{"sw": "6A82", "data": "XY"}]}])
def test_a_fault_file_of_the_wrong_shape_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        faults.parse(bad)


def test_an_unreadable_fault_file_means_no_faults_and_a_rewrite_restarts_the_counts(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    card = EmulatedCard(fault_path=path)
    session = GlobalPlatformCardSession(type("T", (), {"transmit": staticmethod(card.process)})())
    session.select(commands.CARD_MANAGER_AID)  # no file: no faults
    path.write_text("{not json")
    session.select(commands.CARD_MANAGER_AID)
    faults.write(path, status=[StatusRule(0x6A82, ins=commands.INS_SELECT, times=2)])
    for _ in range(2):
        with pytest.raises(CardStatusError) as excinfo:
            session.select(commands.CARD_MANAGER_AID)
        assert excinfo.value.sw == 0x6A82
    session.select(commands.CARD_MANAGER_AID)  # both times spent
    faults.write(path, status=[StatusRule(0x6A82, ins=commands.INS_SELECT, times=1)])
    with pytest.raises(CardStatusError):
        session.select(commands.CARD_MANAGER_AID)  # a new file: counted again


pcsc = pytest.mark.pcsc


@pcsc
def test_absent_takes_the_card_out_until_cleared(card_stack: PcscStack) -> None:
    faults.write(card_stack.fault_path, card="absent")
    card_stack.wait_card(present=False, timeout=5)
    assert not reader_state(card_stack.reader).present
    with pytest.raises(CardUnavailable):
        PcscTransport(card_stack.reader)
    faults.clear(card_stack.fault_path)
    card_stack.wait_card(present=True, timeout=5)
    transport = PcscTransport(card_stack.reader)
    try:
        assert transport.atr == ATR and transport.protocol in ("T=0", "T=1")
    finally:
        transport.close()


@pcsc
def test_no_atr_leaves_a_present_card_nobody_can_connect_to(card_stack: PcscStack) -> None:
    faults.write(card_stack.fault_path, card="no_atr")
    assert card_stack.link is not None
    card_stack.link.apply_faults()
    card_stack.wait_card(present=True, timeout=5)
    state = reader_state(card_stack.reader)
    assert state.present and state.atr != ATR
    with pytest.raises(CardUnavailable):
        PcscTransport(card_stack.reader)


@pcsc
def test_a_mute_card_answers_no_command_until_the_reader_gives_up(card_stack: PcscStack) -> None:
    faults.write(card_stack.fault_path, card="mute", mute_seconds=0.5)
    transport = PcscTransport(card_stack.reader)  # it answers reset
    started = time.monotonic()
    try:
        with pytest.raises(CardUnavailable, match="did not answer"):
            GlobalPlatformCardSession(transport).select(commands.CARD_MANAGER_AID)
    finally:
        transport.close()
    assert time.monotonic() - started >= 0.5
    faults.clear(card_stack.fault_path)
    card_stack.wait_card(present=True, timeout=5)
    transport = PcscTransport(card_stack.reader)
    try:
        assert commands.CARD_MANAGER_AID in GlobalPlatformCardSession(transport).select(commands.CARD_MANAGER_AID)
    finally:
        transport.close()


@pcsc
@pytest.mark.parametrize("sw", [0x6A82, 0x6A84, 0x6982, 0x6983, 0x6D00, 0x6FFF])
def test_a_forced_status_word_answers_only_the_matching_command(pcsc_session: GlobalPlatformCardSession,
                                                               card_stack: PcscStack, sw: int) -> None:
    pcsc_session.install(type_c(1), area=commands.Area.EXTENDED)
    faults.write(card_stack.fault_path, status=[StatusRule(sw, ins=commands.INS_SELECT, data=aid(1))])
    pcsc_session.select(commands.CARD_MANAGER_AID)  # other data: not matched
    for _ in range(2):  # no count: every time
        with pytest.raises(CardStatusError) as excinfo:
            pcsc_session.select(aid(1))
        assert excinfo.value.sw == sw
    faults.clear(card_stack.fault_path)
    pcsc_session.select(aid(1))


def _faults_cli(path: Path, *args: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-m", "apdl.emulator.faults", str(path), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_the_faults_command_refuses_bad_values(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "apdl.emulator.faults", str(tmp_path / "f.json"), "--sw", "XYZ"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "hex" in result.stderr and not (tmp_path / "f.json").exists()


@pcsc
def test_a_separate_emulator_process_obeys_the_faults_command(pcsc_stack: PcscStack, tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    process = subprocess.Popen([sys.executable, "-m", "apdl.emulator", "--port", str(pcsc_stack.port + 1),
                                "--faults", str(path)], cwd=ROOT)
    try:
        pcsc_stack.wait_card(present=True, reader=SECOND_READER_NAME)
        assert _faults_cli(path, "--sw", "6d00", "--ins", "ca", "--times", "1")["status"] == [
            {"sw": "6D00", "ins": "CA", "times": 1}]
        transport = PcscTransport(SECOND_READER_NAME)
        try:
            session = GlobalPlatformCardSession(transport)
            with pytest.raises(CardStatusError) as excinfo:
                session.card_info()
            assert excinfo.value.sw == 0x6D00
            assert session.card_info().card_identifier  # once only
        finally:
            transport.close()
        _faults_cli(path, "--absent")
        pcsc_stack.wait_card(present=False, reader=SECOND_READER_NAME)
        _faults_cli(path, "--clear")
        pcsc_stack.wait_card(present=True, reader=SECOND_READER_NAME)
    finally:
        process.terminate()
        process.wait(timeout=10)
        with contextlib.suppress(StackUnavailable):
            pcsc_stack.wait_card(present=False, reader=SECOND_READER_NAME)


def test_faults_round_trip_through_json() -> None:
    rule = StatusRule(0x6A82, ins=0xA4, data=b"\xd3\x92", times=3)
    assert faults.parse(Faults(card="mute", mute_seconds=2, status=[rule]).to_json()).status == [rule]
