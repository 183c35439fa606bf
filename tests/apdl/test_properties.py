"""Properties of the card path over generated inputs: encodings round-trip, the emulator never crashes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from apdl.card import commands, tlv
from apdl.card.adapter import GlobalPlatformCardSession
from apdl.card.apdu import CommandApdu
from apdl.card.commands import Area
from apdl.emulator.card import EmulatedCard
from tests.apdl.helpers import type_a, type_c

byte = st.integers(0, 255)
one_byte_tag = byte.filter(lambda t: t & 0x1F != 0x1F)
two_byte_tag = st.builds(lambda hi, lo: ((hi | 0x1F) << 8) | lo, byte, st.integers(0, 0x7F))


@settings(deadline=None)  # a shared 2-core machine; properties, not timings
@given(byte, byte, byte, byte, st.binary(max_size=255), st.none() | st.integers(1, 256))
def test_command_apdus_round_trip(cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> None:
    command = CommandApdu(cla, ins, p1, p2, data, le)
    assert CommandApdu.parse(command.to_bytes()) == command


@settings(deadline=None)
@given(st.lists(st.tuples(one_byte_tag | two_byte_tag, st.binary(max_size=600)), max_size=5))
def test_tlv_round_trips(items: list[tuple[int, bytes]]) -> None:
    encoded = b"".join(tlv.encode(tag, value) for tag, value in items)
    assert list(tlv.iterate(encoded)) == items


def _card_with_aps() -> EmulatedCard:
    card = EmulatedCard()
    session = GlobalPlatformCardSession(type("InProcess", (), {"transmit": staticmethod(card.process)})())
    session.create_regional_area()
    session.install(type_a(1), area=Area.REGIONAL)
    session.install(type_c(2), area=Area.EXTENDED)
    return card


known_ins = st.sampled_from([commands.INS_SELECT, commands.INS_GET_STATUS, commands.INS_INSTALL, commands.INS_LOAD,
                             commands.INS_DELETE, commands.INS_GET_DATA, commands.INS_VERIFY,
                             commands.INS_CHANGE_REFERENCE_DATA, commands.INS_RESET_RETRY_COUNTER,
                             commands.INS_GET_CHALLENGE, commands.INS_EXTERNAL_AUTHENTICATE,
                             commands.INS_INTERNAL_AUTHENTICATE, commands.INS_READ_BINARY, commands.INS_READ_RECORD])
apdu = st.builds(lambda cla, ins, p1, p2, data: CommandApdu(cla, ins, p1, p2, data).to_bytes(),
                 st.sampled_from([0x00, 0x80]), known_ins, byte, byte, st.binary(max_size=60))


selects = st.sampled_from([commands.select(a).to_bytes() for a in (
    commands.CARD_MANAGER_AID, commands.REGIONAL_AREA_AID, commands.EXTENDED_AREA_AID, type_a(1).aid, type_c(2).aid)])


@settings(max_examples=300, deadline=None)
@given(st.lists(selects | apdu | st.binary(max_size=270), min_size=1, max_size=12))
def test_the_emulator_answers_every_command_with_a_status_word(sequence: list[bytes]) -> None:
    card = _card_with_aps()
    for raw in sequence:
        response = card.process(raw)
        assert len(response) >= 2
    card.power_cycle()
    assert card.process(commands.select(commands.CARD_MANAGER_AID).to_bytes())[-2:] == b"\x90\x00"
