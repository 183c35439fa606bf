"""The emulated card's behaviour, driven in-process through the reference adapter (no pcscd needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apdl.card import commands
from apdl.card.adapter import CardStatusError, GlobalPlatformCardSession
from apdl.card.apdu import StatusWord
from apdl.card.commands import Area
from apdl.emulator.card import DEFAULT_AP_SIZE, CardState, EmulatedCard
from apdl.errors import CardError
from tests.apdl.helpers import KEY, PIN, aid, type_a, type_c


class InProcess:
    """Hands APDUs straight to the emulator: the same bytes pcscd would carry."""

    def __init__(self, card: EmulatedCard) -> None:
        self.transmit = card.process


@pytest.fixture
def card() -> EmulatedCard:
    return EmulatedCard()


@pytest.fixture
def session(card: EmulatedCard) -> GlobalPlatformCardSession:
    return GlobalPlatformCardSession(InProcess(card))


def test_a_new_card_has_only_the_extended_area(session: GlobalPlatformCardSession) -> None:
    assert [e.aid for e in session.list_apps()] == [commands.EXTENDED_AREA_AID]
    with pytest.raises(CardStatusError) as excinfo:
        session.select(commands.REGIONAL_AREA_AID)
    assert excinfo.value.status is StatusWord.NOT_FOUND


def test_regional_area_setting_creates_the_area_once(session: GlobalPlatformCardSession, card: EmulatedCard) -> None:
    session.create_regional_area()
    assert card.snapshot()["regional_created"] is True
    assert commands.REGIONAL_AREA_AID in [e.aid for e in session.list_apps()]
    with pytest.raises(CardStatusError) as excinfo:
        session.create_regional_area()
    assert excinfo.value.status is StatusWord.ALREADY_EXISTS


@pytest.mark.parametrize(("area", "capacity"), [(Area.REGIONAL, 10), (Area.EXTENDED, 20)])
def test_area_quota_holds_about_10_and_20_aps(session: GlobalPlatformCardSession, card: EmulatedCard,
                                              area: Area, capacity: int) -> None:
    session.create_regional_area()
    for n in range(capacity):
        session.install(type_c(n), area=area)
    assert session.free_space(area).free_bytes == 0
    with pytest.raises(CardStatusError) as excinfo:
        session.install(type_c(99), area=area)
    assert excinfo.value.status is StatusWord.NOT_ENOUGH_MEMORY
    assert card.installed(area) == {aid(n).hex().upper() for n in range(capacity)}
    session.delete(aid(0))
    assert session.free_space(area).free_bytes == DEFAULT_AP_SIZE


def test_get_status_pages_through_many_aps(session: GlobalPlatformCardSession) -> None:
    session.create_regional_area()
    for n in range(10):
        session.install(type_c(n), area=Area.REGIONAL)
    for n in range(10, 30):
        session.install(type_c(n), area=Area.EXTENDED)
    entries = session.list_apps()  # 32 entries do not fit one response: 6310 then P2 03
    apps = [e for e in entries if e.aid.hex().upper().startswith("D392F00002")]
    assert [e.aid for e in apps] == [aid(n) for n in range(30)]
    assert {e.security_domain for e in apps[:10]} == {commands.REGIONAL_AREA_AID}
    assert {e.life_cycle for e in apps} == {0x07}


def test_duplicate_aid_is_refused(session: GlobalPlatformCardSession) -> None:
    session.install(type_c(1), area=Area.EXTENDED)
    with pytest.raises(CardStatusError) as excinfo:
        session.install(type_a(1), area=Area.EXTENDED)
    assert excinfo.value.status is StatusWord.ALREADY_EXISTS


def test_deleting_an_unknown_aid_is_referenced_data_not_found(session: GlobalPlatformCardSession) -> None:
    with pytest.raises(CardStatusError) as excinfo:
        session.delete(aid(7))
    assert excinfo.value.status is StatusWord.REFERENCED_DATA_NOT_FOUND


def test_regional_area_can_only_be_removed_when_empty(session: GlobalPlatformCardSession) -> None:
    session.create_regional_area()
    session.install(type_c(1), area=Area.REGIONAL)
    with pytest.raises(CardStatusError) as excinfo:
        session.delete(commands.REGIONAL_AREA_AID)
    assert excinfo.value.status is StatusWord.CONDITIONS_NOT_SATISFIED
    session.delete(aid(1))
    session.delete(commands.REGIONAL_AREA_AID)
    assert [e.aid for e in session.list_apps()] == [commands.EXTENDED_AREA_AID]


def test_type_c_is_readable_without_authentication(session: GlobalPlatformCardSession) -> None:
    session.install(type_c(3), area=Area.EXTENDED)
    session.select(aid(3))
    assert session.read_user_id(record=False) == b"USER-C-0003"


def test_type_a_needs_mutual_authentication_and_pin(session: GlobalPlatformCardSession) -> None:
    session.install(type_a(4), area=Area.EXTENDED)
    session.select(aid(4))
    with pytest.raises(CardStatusError) as excinfo:
        session.read_user_id(record=True)
    assert excinfo.value.status is StatusWord.SECURITY_STATUS_NOT_SATISFIED
    session.verify_pin(PIN)
    with pytest.raises(CardStatusError) as excinfo:
        session.read_user_id(record=True)  # PIN alone is not enough
    assert excinfo.value.status is StatusWord.SECURITY_STATUS_NOT_SATISFIED
    session.mutual_auth(KEY)
    assert session.read_user_id(record=True) == b"USER-A-0004"


def test_a_wrong_key_fails_internal_authenticate(session: GlobalPlatformCardSession) -> None:
    session.install(type_a(5), area=Area.EXTENDED)
    session.select(aid(5))
    with pytest.raises(CardError, match="INTERNAL AUTHENTICATE"):
        session.mutual_auth(bytes(16))


def test_external_authenticate_with_a_wrong_cryptogram_is_6300(session: GlobalPlatformCardSession,
                                                                card: EmulatedCard) -> None:
    session.install(type_a(5), area=Area.EXTENDED)
    session.select(aid(5))
    assert len(card.process(commands.get_challenge().to_bytes())) == 10
    assert card.process(commands.external_authenticate(bytes(16)).to_bytes()) == bytes.fromhex("6300")
    # a challenge answers once: a second try needs a new GET CHALLENGE
    assert card.process(commands.external_authenticate(bytes(16)).to_bytes()) == bytes.fromhex("6985")


def test_pin_counts_down_then_blocks(session: GlobalPlatformCardSession, card: EmulatedCard) -> None:
    session.install(type_a(6), area=Area.EXTENDED)
    session.select(aid(6))
    assert session.pin_retries() == 3
    left = []
    for _ in range(3):
        with pytest.raises(CardStatusError) as excinfo:
            session.verify_pin(b"0000")
        left.append(excinfo.value.retries_left)
    assert left == [2, 1, 0]
    with pytest.raises(CardStatusError) as excinfo:
        session.verify_pin(PIN)  # even the right PIN: blocked
    assert excinfo.value.status is StatusWord.PIN_BLOCKED
    assert card.snapshot()["apps"][aid(6).hex().upper()]["pin_tries_left"] == 0


def test_a_right_pin_resets_the_counter(session: GlobalPlatformCardSession) -> None:
    session.install(type_a(6), area=Area.EXTENDED)
    session.select(aid(6))
    with pytest.raises(CardStatusError):
        session.verify_pin(b"0000")
    session.verify_pin(PIN)
    session.select(aid(6))
    assert session.pin_retries() == 3


def test_pin_change_needs_the_current_pin(session: GlobalPlatformCardSession) -> None:
    session.install(type_a(6), area=Area.EXTENDED)
    session.select(aid(6))
    with pytest.raises(CardStatusError) as excinfo:
        session.change_pin(b"0000", b"567890")
    assert excinfo.value.retries_left == 2
    session.change_pin(PIN, b"567890")
    session.select(aid(6))
    assert session.pin_retries() == 3
    with pytest.raises(CardStatusError):
        session.verify_pin(PIN)
    session.verify_pin(b"567890")


def test_a_blocked_pin_is_reset_only_after_mutual_authentication(session: GlobalPlatformCardSession) -> None:
    session.install(type_a(6, tries=1), area=Area.EXTENDED)
    session.select(aid(6))
    with pytest.raises(CardStatusError):
        session.verify_pin(b"0000")
    with pytest.raises(CardStatusError) as excinfo:
        session.reset_retry_counter(b"2468")
    assert excinfo.value.status is StatusWord.SECURITY_STATUS_NOT_SATISFIED
    session.mutual_auth(KEY)
    session.reset_retry_counter(b"2468")
    session.verify_pin(b"2468")
    assert session.read_user_id(record=True) == b"USER-A-0006"


def test_power_cycle_forgets_authentication(session: GlobalPlatformCardSession, card: EmulatedCard) -> None:
    session.install(type_a(8), area=Area.EXTENDED)
    session.select(aid(8))
    session.verify_pin(PIN)
    session.mutual_auth(KEY)
    card.power_cycle()
    with pytest.raises(CardStatusError) as excinfo:
        session.read_user_id(record=True)
    assert excinfo.value.status is StatusWord.CONDITIONS_NOT_SATISFIED  # nothing selected any more


def test_custom_load_file_is_loaded_installed_and_deleted(session: GlobalPlatformCardSession,
                                                          card: EmulatedCard) -> None:
    elf = aid(500)
    session.load(elf, bytes(1000), area=Area.EXTENDED)
    assert card.snapshot()["load_files"][elf.hex().upper()]["size"] == 1000
    ap = commands.ApSpec(aid=aid(501), ap_type=commands.ApType.C, size_bytes=512, load_file_aid=elf)
    session.install(ap, area=Area.EXTENDED)
    assert session.free_space(Area.EXTENDED).free_bytes == 20 * DEFAULT_AP_SIZE - 1512
    with pytest.raises(CardStatusError) as excinfo:
        session.delete(elf)  # an instance still uses it
    assert excinfo.value.status is StatusWord.CONDITIONS_NOT_SATISFIED
    session.delete(aid(501))
    session.delete(elf)
    assert card.snapshot()["load_files"] == {}


def test_a_load_file_larger_than_the_area_is_6a84(session: GlobalPlatformCardSession) -> None:
    session.create_regional_area()
    with pytest.raises(CardStatusError) as excinfo:
        session.load(aid(600), bytes(10 * DEFAULT_AP_SIZE + 1), area=Area.REGIONAL)
    assert excinfo.value.status is StatusWord.NOT_ENOUGH_MEMORY


def test_install_from_an_unknown_load_file_is_refused(session: GlobalPlatformCardSession) -> None:
    ap = commands.ApSpec(aid=aid(1), ap_type=commands.ApType.C, size_bytes=10, load_file_aid=aid(999))
    with pytest.raises(CardStatusError) as excinfo:
        session.install(ap, area=Area.EXTENDED)
    assert excinfo.value.status is StatusWord.REFERENCED_DATA_NOT_FOUND


def test_card_management_commands_are_not_understood_by_an_ap(session: GlobalPlatformCardSession,
                                                              card: EmulatedCard) -> None:
    session.install(type_c(1), area=Area.EXTENDED)
    session.select(aid(1))
    response = card.process(commands.get_data(commands.TAG_EXTENDED_CARD_RESOURCES).to_bytes())
    assert response == bytes.fromhex("6D00")
    assert card.process(bytes.fromhex("00FE000000")) == bytes.fromhex("6D00")
    assert card.process(bytes.fromhex("40A4040000")) == bytes.fromhex("6E00")


def test_card_info_gives_identifier_and_residence_code(session: GlobalPlatformCardSession) -> None:
    info = session.card_info()
    assert (info.card_identifier, info.residence_code) == ("1234567890123", "131016")


def test_forced_status_words_fail_the_next_commands(session: GlobalPlatformCardSession, card: EmulatedCard) -> None:
    card.force_status(0x6A84, ins=commands.INS_INSTALL)
    with pytest.raises(CardStatusError) as excinfo:
        session.install(type_c(1), area=Area.EXTENDED)
    assert excinfo.value.status is StatusWord.NOT_ENOUGH_MEMORY
    assert card.installed() == set()
    session.install(type_c(1), area=Area.EXTENDED)  # only once
    assert card.installed() == {aid(1).hex().upper()}


def test_state_survives_in_the_json_file(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    first = EmulatedCard(CardState(card_identifier="9999999999999"), state_path=path)
    GlobalPlatformCardSession(InProcess(first)).install(type_a(2), area=Area.EXTENDED)
    saved = json.loads(path.read_text())
    assert list(saved["apps"]) == [aid(2).hex().upper()]
    second = EmulatedCard(state_path=path)
    assert second.snapshot() == first.snapshot()
    assert second.state.card_identifier == "9999999999999"
