"""A private pcscd + vsmartcard-vpcd + emulated card, shared by the session's PC/SC tests.

Under CI=true a missing pcscd, vpcd driver or privilege fails the run instead of skipping it
(`make test` installs them through scripts/system-deps.sh).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from apdl.card.adapter import GlobalPlatformCardSession
from apdl.card.pcsc import PcscTransport
from apdl.emulator import faults
from apdl.emulator.card import CardState
from apdl.emulator.stack import PcscStack, StackUnavailable, missing_parts, start_stack

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def pcsc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscStack]:
    missing = missing_parts()
    if missing:
        message = "PC/SC stack unavailable, missing: " + ", ".join(missing)
        if IN_CI:
            pytest.fail(message + " (required under CI=true; run scripts/system-deps.sh)")
        pytest.skip(message)
    try:
        stack = start_stack(tmp_path_factory.mktemp("pcsc"))
    except StackUnavailable as exc:
        pytest.fail(str(exc))  # everything is installed, so a failure to start is a real defect
    yield stack
    stack.stop()


@pytest.fixture
def card_stack(pcsc_stack: PcscStack) -> PcscStack:
    """The shared stack with a fresh, empty card in the reader."""
    link = pcsc_stack.link
    assert link is not None
    faults.clear(pcsc_stack.fault_path)  # a test that made the card fail leaves it working for the next
    link.apply_faults()
    if link.mute or not link.wait_connected(0):  # a test that failed half-way left no card or a mute one
        if link.wait_connected(0):
            pcsc_stack.remove_card()
        pcsc_stack.insert_card()
    pcsc_stack.card.load_state(CardState())
    return pcsc_stack


@pytest.fixture
def pcsc_session(card_stack: PcscStack) -> Iterator[GlobalPlatformCardSession]:
    """The reference adapter talking to the emulated card through pyscard and pcscd."""
    transport = PcscTransport(card_stack.reader)
    yield GlobalPlatformCardSession(transport)
    transport.close()


@pytest.fixture(scope="session")
def scriptor() -> str:
    """Path of pcsc-tools' scriptor, the second PC/SC client."""
    path = shutil.which("scriptor")
    if path is None:
        if IN_CI:
            pytest.fail("scriptor (pcsc-tools) is required under CI=true; run scripts/system-deps.sh")
        pytest.skip("scriptor not installed (apt-get install pcsc-tools)")
    return path
