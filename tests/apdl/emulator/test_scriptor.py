"""A second, independent PC/SC client: pcsc-tools' scriptor runs an APDU script against the emulated card."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from apdl.card import commands
from apdl.card.commands import ApSpec, ApType
from apdl.card.pcsc import PcscTransport
from apdl.emulator.card import CardState
from apdl.emulator.stack import PcscStack
from tests.apdl.helpers import aid

pytestmark = pytest.mark.pcsc

AP = ApSpec(aid=aid(1), ap_type=ApType.C, size_bytes=2048, user_id=b"USER-0001")
SCRIPT = [
    (commands.select(commands.CARD_MANAGER_AID), 0x9000),
    (commands.get_data(commands.TAG_EXTENDED_CARD_RESOURCES), 0x9000),
    (commands.create_regional_area(), 0x9000),  # 地域住民向け領域設定
    (commands.select(commands.REGIONAL_AREA_AID), 0x9000),
    (commands.install_ap(AP), 0x9000),
    (commands.install_ap(AP), 0x6A89),  # same AID again
    (commands.select(commands.CARD_MANAGER_AID), 0x9000),
    (commands.get_status(commands.STATUS_APPS_AND_SDS), 0x9000),
    (commands.select(aid(1)), 0x9000),
    (commands.read_binary(), 0x9000),
    (commands.select(aid(2)), 0x6A82),
    (commands.select(commands.CARD_MANAGER_AID), 0x9000),
    (commands.delete(aid(1)), 0x9000),
    (commands.delete(aid(1)), 0x6A88),
]
# scriptor prints "< DATA SW1 SW2 : text", wrapping long data over several lines
RESPONSE = re.compile(r"^< ([0-9A-F \n]+?) :", re.MULTILINE)


def _run_scriptor(scriptor: str, stack: PcscStack, script: Path) -> list[bytes]:
    result = subprocess.run([scriptor, "-r", stack.reader, str(script)], env=stack.env,
                            capture_output=True, text=True, timeout=60, check=True)
    return [bytes.fromhex(m.replace("\n", " ")) for m in RESPONSE.findall(result.stdout)]


def test_scriptor_and_pyscard_get_the_same_answers(scriptor: str, card_stack: PcscStack, tmp_path: Path) -> None:
    script = tmp_path / "script.txt"
    script.write_text("# apdl emulator check\n" + "".join(f"{command}\n" for command, _ in SCRIPT))
    by_scriptor = _run_scriptor(scriptor, card_stack, script)
    state_after_scriptor = card_stack.card.snapshot()

    card_stack.card.load_state(CardState())
    transport = PcscTransport(card_stack.reader)
    try:
        by_pyscard = [transport.transmit(command.to_bytes()) for command, _ in SCRIPT]
    finally:
        transport.close()

    assert [int.from_bytes(r[-2:], "big") for r in by_scriptor] == [sw for _, sw in SCRIPT]
    assert by_scriptor == by_pyscard
    assert by_scriptor[9] == b"USER-0001\x90\x00"
    assert aid(1) in by_scriptor[7]  # GET STATUS listed the AP
    assert state_after_scriptor == card_stack.card.snapshot()
    assert state_after_scriptor["regional_created"] is True
