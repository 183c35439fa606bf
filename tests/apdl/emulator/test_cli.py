"""`python -m apdl.emulator` serves a card to vpcd from its own process and keeps it in a JSON file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from apdl.card.adapter import CardStatusError, GlobalPlatformCardSession
from apdl.card.commands import Area
from apdl.card.diversification import MasterKeys
from apdl.card.pcsc import PcscTransport
from apdl.card.scp03 import StaticKeys
from apdl.emulator.stack import SECOND_READER_NAME, PcscStack
from tests.apdl.helpers import aid, type_c

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parents[3]


def _serve(stack: PcscStack, state: Path, *options: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "apdl.emulator", "--port", str(stack.port + 1),
                                "--state", str(state), "--card-identifier", "9876543210987", *options], cwd=ROOT)
    stack.wait_card(present=True, reader=SECOND_READER_NAME)
    return process


def _stop(stack: PcscStack, process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)
    stack.wait_card(present=False, reader=SECOND_READER_NAME)


def test_the_emulator_process_keeps_the_card_across_restarts(pcsc_stack: PcscStack, tmp_path: Path) -> None:
    state = tmp_path / "card.json"
    process = _serve(pcsc_stack, state)
    try:
        transport = PcscTransport(SECOND_READER_NAME)
        session = GlobalPlatformCardSession(transport)
        assert session.card_info().card_identifier == "9876543210987"
        session.install(type_c(1), area=Area.EXTENDED)
        transport.close()
    finally:
        _stop(pcsc_stack, process)
    assert list(json.loads(state.read_text())["apps"]) == [aid(1).hex().upper()]

    process = _serve(pcsc_stack, state)
    try:
        transport = PcscTransport(SECOND_READER_NAME)
        assert aid(1) in {e.aid for e in GlobalPlatformCardSession(transport).list_apps()}
        transport.close()
    finally:
        _stop(pcsc_stack, process)


def test_a_card_issued_with_the_modules_keys_is_managed_only_under_scp03(pcsc_stack: PcscStack,
                                                                        tmp_path: Path) -> None:
    master = MasterKeys.generate()
    kdd = bytes.fromhex("0102030405060708090A")
    (tmp_path / "card-keys").write_text(master.to_hex() + "\n")
    process = _serve(pcsc_stack, tmp_path / "card.json", "--keys-file", str(tmp_path / "card-keys"),
                     "--kdd", kdd.hex())
    try:
        transport = PcscTransport(SECOND_READER_NAME)
        with pytest.raises(CardStatusError) as refused:
            GlobalPlatformCardSession(transport).install(type_c(1), area=Area.EXTENDED)
        assert refused.value.sw == 0x6982
        GlobalPlatformCardSession(transport, keys=master).install(type_c(1), area=Area.EXTENDED)
        transport.close()
    finally:
        _stop(pcsc_stack, process)
    state = json.loads((tmp_path / "card.json").read_text())
    assert list(state["apps"]) == [aid(1).hex().upper()]
    # the card holds its own diversified keys and its diversification data, never the master
    assert state["kdd"] == kdd.hex().upper()
    assert StaticKeys.from_hex(state["scp03_keys"]) == master.for_card(kdd) != master.master
