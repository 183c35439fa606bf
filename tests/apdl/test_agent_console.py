"""What the card agent prints on the terminal's console: without ``--trace``, never the card's data."""

from __future__ import annotations

from apdl.agent.__main__ import _shown

GET_DATA = bytes.fromhex("80CA9F7F00")
CPLC = bytes.fromhex("4790" + "11223344556677889900AABBCCDDEEFF" * 2) + b"\x90\x00"
SELECT = bytes.fromhex("00A4040007D392F000040001")


def test_the_console_shows_headers_lengths_and_status_words_only() -> None:
    shown = _shown(GET_DATA, CPLC, "", trace=False)
    assert shown == "APDU 80 CA 9F 7F (0 bytes) -> SW 9000, 34 bytes"
    assert "1122334455" not in shown
    assert _shown(SELECT, b"\x6a\x82", "", trace=False) == "APDU 00 A4 04 00 (7 bytes) -> SW 6A82, 0 bytes"
    assert "D392F0" not in _shown(SELECT, b"\x90\x00", "", trace=False)
    assert _shown(SELECT, None, "no_card", trace=False) == "APDU 00 A4 04 00 (7 bytes) -> no_card"


def test_trace_shows_everything_for_fault_finding() -> None:
    assert _shown(GET_DATA, CPLC, "", trace=True) == f"APDU 80CA9F7F00 -> {CPLC.hex().upper()}"
    assert _shown(SELECT, None, "mute", trace=True) == "APDU 00A4040007D392F000040001 -> mute"
