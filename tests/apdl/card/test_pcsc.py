"""The reference adapter through real pyscard → pcscd → vsmartcard-vpcd → the emulated card."""

from __future__ import annotations

import pytest

from apdl.card import commands
from apdl.card.adapter import CardStatusError, GlobalPlatformCardSession
from apdl.card.apdu import StatusWord
from apdl.card.commands import Area
from apdl.card.pcsc import PcscTransport, reader_names
from apdl.emulator.card import ATR
from apdl.emulator.stack import PcscStack
from apdl.errors import CardUnavailable
from tests.apdl.helpers import KEY, PIN, aid, type_a, type_c

pytestmark = pytest.mark.pcsc


def _aids(session: GlobalPlatformCardSession) -> set[bytes]:
    return {e.aid for e in session.list_apps()} - {commands.REGIONAL_AREA_AID, commands.EXTENDED_AREA_AID}


def test_pcscd_lists_the_virtual_reader_and_the_card_answers_its_atr(card_stack: PcscStack) -> None:
    assert card_stack.reader in reader_names()
    transport = PcscTransport(card_stack.reader)
    try:
        assert transport.atr == ATR
    finally:
        transport.close()


def test_select_finds_the_card_manager_and_not_an_unknown_aid(pcsc_session: GlobalPlatformCardSession) -> None:
    fci = pcsc_session.select(commands.CARD_MANAGER_AID)
    assert commands.CARD_MANAGER_AID in fci
    with pytest.raises(CardStatusError) as excinfo:
        pcsc_session.select(aid(42))
    assert excinfo.value.status is StatusWord.NOT_FOUND


def test_install_list_and_delete_round_trip(pcsc_session: GlobalPlatformCardSession, card_stack: PcscStack) -> None:
    pcsc_session.create_regional_area()
    pcsc_session.install(type_a(1), area=Area.REGIONAL)
    pcsc_session.install(type_c(2), area=Area.REGIONAL)
    pcsc_session.install(type_c(3), area=Area.EXTENDED)
    assert _aids(pcsc_session) == {aid(1), aid(2), aid(3)}
    assert pcsc_session.free_space(Area.REGIONAL).installed_apps == 2
    assert card_stack.card.installed(Area.REGIONAL) == {aid(1).hex().upper(), aid(2).hex().upper()}
    pcsc_session.delete(aid(2))
    assert _aids(pcsc_session) == {aid(1), aid(3)}
    assert card_stack.card.installed() == {aid(1).hex().upper(), aid(3).hex().upper()}


def test_load_then_install_from_the_loaded_file(pcsc_session: GlobalPlatformCardSession,
                                                card_stack: PcscStack) -> None:
    elf = aid(300)
    pcsc_session.load(elf, bytes(range(256)) * 4, area=Area.EXTENDED)  # five LOAD blocks
    ap = commands.ApSpec(aid=aid(301), ap_type=commands.ApType.C, size_bytes=256, user_id=b"X", load_file_aid=elf)
    pcsc_session.install(ap, area=Area.EXTENDED)
    assert _aids(pcsc_session) == {aid(301)}
    assert card_stack.card.snapshot()["load_files"][elf.hex().upper()]["size"] == 1024
    pcsc_session.delete(aid(301))
    pcsc_session.delete(elf)
    assert card_stack.card.snapshot()["load_files"] == {}


def test_a_full_area_answers_6a84_and_nothing_is_installed(pcsc_session: GlobalPlatformCardSession,
                                                           card_stack: PcscStack) -> None:
    for n in range(20):
        pcsc_session.install(type_c(n), area=Area.EXTENDED)
    with pytest.raises(CardStatusError) as excinfo:
        pcsc_session.install(type_c(20), area=Area.EXTENDED)
    assert excinfo.value.sw == 0x6A84
    assert len(card_stack.card.installed(Area.EXTENDED)) == 20
    assert aid(20) not in _aids(pcsc_session)


def test_three_wrong_pins_block_the_ap_with_6983(pcsc_session: GlobalPlatformCardSession) -> None:
    pcsc_session.install(type_a(7), area=Area.EXTENDED)
    pcsc_session.select(aid(7))
    seen = []
    for _ in range(3):
        with pytest.raises(CardStatusError) as excinfo:
            pcsc_session.verify_pin(b"9999")
        seen.append(excinfo.value.sw)
    assert seen == [0x63C2, 0x63C1, 0x63C0]
    with pytest.raises(CardStatusError) as excinfo:
        pcsc_session.verify_pin(PIN)
    assert excinfo.value.sw == 0x6983


def test_type_a_refuses_reading_without_authentication_with_6982(pcsc_session: GlobalPlatformCardSession) -> None:
    pcsc_session.install(type_a(8), area=Area.EXTENDED)
    pcsc_session.select(aid(8))
    with pytest.raises(CardStatusError) as excinfo:
        pcsc_session.read_user_id(record=True)
    assert excinfo.value.sw == 0x6982
    pcsc_session.mutual_auth(KEY)
    pcsc_session.verify_pin(PIN)
    assert pcsc_session.read_user_id(record=True) == b"USER-A-0008"


def test_type_c_is_read_without_authentication(pcsc_session: GlobalPlatformCardSession) -> None:
    pcsc_session.install(type_c(9), area=Area.EXTENDED)
    pcsc_session.select(aid(9))
    assert pcsc_session.read_user_id(record=False) == b"USER-C-0009"


def test_a_forced_status_word_reaches_the_client(pcsc_session: GlobalPlatformCardSession,
                                                 card_stack: PcscStack) -> None:
    card_stack.card.force_status(0x6A82, ins=commands.INS_SELECT)
    with pytest.raises(CardStatusError) as excinfo:
        pcsc_session.select(commands.CARD_MANAGER_AID)
    assert excinfo.value.status is StatusWord.NOT_FOUND
    pcsc_session.select(commands.CARD_MANAGER_AID)


def test_no_card_in_the_reader_is_card_unavailable(card_stack: PcscStack) -> None:
    card_stack.remove_card()
    try:
        with pytest.raises(CardUnavailable):
            PcscTransport(card_stack.reader)
    finally:
        card_stack.insert_card()
    transport = PcscTransport(card_stack.reader)
    try:
        assert GlobalPlatformCardSession(transport).card_info().card_identifier == "1234567890123"
    finally:
        transport.close()


def test_a_mute_card_is_present_but_unavailable(card_stack: PcscStack) -> None:
    card_stack.insert_mute_card()
    try:
        with pytest.raises(CardUnavailable):
            PcscTransport(card_stack.reader)
    finally:
        card_stack.remove_card()
        card_stack.insert_card()
    transport = PcscTransport(card_stack.reader)
    try:
        assert transport.atr == ATR
    finally:
        transport.close()
