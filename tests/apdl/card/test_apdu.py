"""APDU encoding, status words and BER-TLV."""

from __future__ import annotations

import pytest

from apdl.card import commands, tlv
from apdl.card.apdu import CommandApdu, ResponseApdu, StatusWord, explain, status_of


@pytest.mark.parametrize("raw", [
    "80CAFF21",  # case 1
    "80CAFF2100",  # case 2, Le 256
    "002000810431323334",  # case 3
    "00A4040008A00000015100000000",  # case 4
])
def test_command_apdus_round_trip(raw: str) -> None:
    assert CommandApdu.parse(bytes.fromhex(raw)).to_bytes().hex().upper() == raw


def test_select_is_encoded_as_in_iso_7816_4() -> None:
    assert str(commands.select(commands.CARD_MANAGER_AID)) == "00 A4 04 00 08 A0 00 00 01 51 00 00 00 00"


def test_get_status_matches_globalplatform() -> None:
    assert str(commands.get_status(commands.STATUS_APPS_AND_SDS)) == "80 F2 40 02 02 4F 00 00"


def test_inconsistent_lengths_are_rejected() -> None:
    with pytest.raises(ValueError):
        CommandApdu.parse(bytes.fromhex("00A4040008A000"))


def test_status_words_have_japanese_and_english_explanations() -> None:
    for status in StatusWord:
        assert status.ja and status.en
    assert explain(0x6A84) == "6A84: カードの空き容量が足りません"
    assert explain(0x6A82, lang="en") == "6A82: Application or file not found"
    assert explain(0x6983, lang="en").startswith("6983: PIN blocked")


def test_63cx_gives_the_tries_left() -> None:
    response = ResponseApdu.parse(bytes.fromhex("63C2"))
    assert response.status is StatusWord.PIN_RETRIES_LEFT
    assert response.retries_left == 2
    assert explain(0x63C2) == "63C2: 暗証番号が違います(残り2回)"
    assert ResponseApdu.parse(bytes.fromhex("6983")).retries_left == 0
    assert ResponseApdu.parse(bytes.fromhex("9000")).retries_left is None


def test_unknown_status_words_are_reported_as_unknown() -> None:
    assert status_of(0x6FFF) is None
    assert explain(0x6FFF, lang="en") == "6FFF: Unknown status word"


def test_tlv_round_trip_with_long_lengths() -> None:
    value = bytes(300)
    encoded = tlv.encode(0xFF21, tlv.encode(0x81, b"\x01") + tlv.encode(0xC4, value))
    (tag, inner), = tlv.iterate(encoded)
    assert tag == 0xFF21
    assert tlv.as_dict(inner) == {0x81: b"\x01", 0xC4: value}


def test_truncated_tlv_is_an_error() -> None:
    with pytest.raises(ValueError):
        tlv.as_dict(bytes.fromhex("4F05A000"))


def test_load_blocks_are_numbered_and_the_last_is_marked() -> None:
    blocks = commands.load_blocks(bytes(600))
    assert [b.p2 for b in blocks] == [0, 1, 2]
    assert [b.p1 for b in blocks] == [0x00, 0x00, 0x80]
    assert b"".join(b.data for b in blocks) == tlv.encode(0xC4, bytes(600))


def test_ap_spec_refuses_bad_aids_and_incomplete_type_a() -> None:
    with pytest.raises(ValueError):
        commands.ApSpec(aid=bytes(4), ap_type=commands.ApType.C, size_bytes=10)
    with pytest.raises(ValueError):
        commands.ApSpec(aid=bytes(17), ap_type=commands.ApType.C, size_bytes=10)
    with pytest.raises(ValueError):
        commands.ApSpec(aid=bytes(5), ap_type=commands.ApType.A, size_bytes=10, pin=b"1234")
