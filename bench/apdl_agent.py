"""`make bench-apdl-agent`: milliseconds per APDU through the terminal card agent, beside the same APDUs sent
directly through the server's own reader.

The agent path is the real one: ``python -m apdl.agent`` as its own process, over mutual TLS to the module's
gunicorn (which checks the terminal certificate against opauth's CRL on every poll), relaying to pyscard →
pcscd → vsmartcard-vpcd → the emulated card. The server side is :class:`apdl.terminals.AgentTransport`, as a
card operation uses it. The world (opauth with its CLI-issued terminal certificate, the private pcscd stack,
the module's gunicorn) is built by the fixtures of tests/apdl, so this runs under pytest; it asserts only
that every APDU was answered. Needs root and pcscd + vsmartcard-vpcd (scripts/system-deps.sh).

``APDL_BENCH_AGENT_APDUS`` (default 300) APDUs: SELECT of the card manager, then GET STATUS, alternating.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
APDUS = int(os.environ.get("APDL_BENCH_AGENT_APDUS", "300"))


def _timed(transmit: Callable[[bytes], bytes], apdus: list[bytes]) -> list[float]:
    samples = []
    for apdu in apdus:
        start = time.perf_counter()
        answer = transmit(apdu)
        samples.append(time.perf_counter() - start)
        assert len(answer) >= 2, answer.hex()  # a status word came back
    return samples


def _row(label: str, samples: list[float]) -> str:
    median, mean = statistics.median(samples) * 1000, statistics.fmean(samples) * 1000
    p95 = statistics.quantiles(samples, n=20)[-1] * 1000
    return f"| {label} ({len(samples)} APDUs) | {median:.2f} ms | {mean:.2f} ms | {p95:.2f} ms |"


def test_ms_per_apdu(opauth: object, apdl_app: Flask, card_stack: object, tmp_path: Path) -> None:
    from apdl import db, terminals
    from apdl.card import commands
    from apdl.card.pcsc import PcscTransport
    from tests.apdl.app.conftest import served_apdl
    from tests.apdl.app.test_agent import Agent, _terminal_cert

    select = commands.select(commands.CARD_MANAGER_AID).to_bytes()
    status = bytes.fromhex("80F24002024F0000")  # GET STATUS of the applications
    apdus = [select if n % 2 == 0 else status for n in range(APDUS)]

    direct = PcscTransport(card_stack.reader)  # type: ignore[attr-defined]
    try:
        _timed(direct.transmit, apdus[:20])  # warm up
        direct_samples = _timed(direct.transmit, apdus)
    finally:
        direct.close()

    apdl_app.config.update(CARD_TRANSPORT="agent", AGENT_TIMEOUT=10)
    with served_apdl(opauth, apdl_app):  # type: ignore[arg-type]
        agent = Agent(opauth, card_stack, _terminal_cert(opauth, tmp_path, "bench01"),  # type: ignore[arg-type]
                      tmp_path / "agent.log")
        try:
            code = agent.code()
            with apdl_app.test_request_context():
                paired = terminals.pair(db.get_session(), code, session_id="bench", tenant_code="minamiedo",
                                        actor="bench")
                relay = apdl_app.extensions[db.SESSIONMAKER_KEY]()
                transport = terminals.AgentTransport(relay, paired.terminal_fingerprint, timeout=10)
                try:
                    _timed(transport.transmit, apdus[:20])  # warm up (the agent connects to the card)
                    agent_samples = _timed(transport.transmit, apdus)
                finally:
                    transport.close()
                    relay.close()
        finally:
            agent.stop()

    print()
    print(f"apdl agent relay benchmark, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print()
    print("| path | median per APDU | mean | p95 |")
    print("|---|---|---|---|")
    print(_row("server's own reader: pyscard → pcscd → vpcd → emulator", direct_samples))
    print(_row("through the card agent: module ⇄ agent over mutual TLS, CRL per poll", agent_samples))


def main() -> int:
    """Run the measurement under pytest with the fixtures of tests/apdl (opauth, pcscd stack, the module)."""
    return pytest.main([str(Path(__file__)), *sys.argv[1:], "-q", "-s", "--rootdir", str(ROOT),
                        "-p", "no:cacheprovider", "-p", "tests.conftest", "-p", "tests.apdl.conftest",
                        "-p", "tests.apdl.app.conftest", "-W", "ignore::pytest.PytestAssertRewriteWarning"])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
