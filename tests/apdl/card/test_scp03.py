"""GlobalPlatform SCP03: the data derivation scheme against published vectors and an independent KDF,
and the server's end against the emulated card's end (cryptograms, C-MAC, C-DECRYPTION, R-MAC)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode

from apdl.card import commands, scp03
from apdl.card.adapter import CardStatusError, GlobalPlatformCardSession
from apdl.card.apdu import CommandApdu, ResponseApdu, StatusWord
from apdl.card.commands import Area
from apdl.emulator.card import CardState, EmulatedCard
from tests.apdl.helpers import KEY, PIN, aid, type_a, type_c

GP_TEST_KEY = bytes(range(0x40, 0x50))  # the GlobalPlatform test key 404142…4F


class Recorder:
    """Hands APDUs to the emulator and keeps every byte that passed, both ways (what a relay would see)."""

    def __init__(self, card: EmulatedCard) -> None:
        self.card = card
        self.seen: list[tuple[bytes, bytes]] = []
        self.tamper_next_command = False
        self.tamper_next_response = False

    def transmit(self, apdu: bytes) -> bytes:
        if self.tamper_next_command and apdu[0] & 0x04 and apdu[1] != scp03.INS_EXTERNAL_AUTHENTICATE:
            self.tamper_next_command = False
            # flip a bit of the C-MAC of the next protected command (Le follows it)
            apdu = apdu[:-2] + bytes((apdu[-2] ^ 0x01,)) + apdu[-1:]
        response = self.card.process(apdu)
        if self.tamper_next_response:
            self.tamper_next_response = False
            response = bytes((response[0] ^ 0x01,)) + response[1:]
        self.seen.append((apdu, response))
        return response

    @property
    def wire(self) -> bytes:
        return b"".join(c + r for c, r in self.seen)


def _kdf3(master: bytes, key_type: int, kdd: bytes) -> bytes:
    """GlobalPlatformPro's "kdf3" key diversification: the SCP03 KDF with context 000000 ‖ type ‖ 00 ‖ KDD."""
    return scp03.kdf_counter(master, prefix=b"", suffix=bytes(3) + bytes((key_type,)) + b"\x00" + kdd,
                             length=len(master))


def test_kdf_matches_the_external_scp03_vector_globalplatformpro_tests() -> None:
    # GlobalPlatformPro TestPlaintextKeys.testDiversification_KDF3_ExternalVector (AES-256, two PRF blocks)
    master = bytes.fromhex("8C72C72CF908411653018807950D82FBAD947562F0828A0B10B8B9606ABF3BCD")
    derived = _kdf3(master, 0x01, bytes.fromhex("D9B1DE5D0362DEDCE4FB"))
    assert derived == bytes.fromhex("9AAC5D0B3601F89438A0D9D0B6B256CFB47E6462DFA5228D3420C4AC7C224781")


@pytest.mark.parametrize(("length", "expected"), [
    (16, ("E79C05", "D1BD77", "3FDE8C")),
    (24, ("1DE8EA", "47C00C", "C04D76")),
    (32, ("2972D2", "036F94", "5D57B8")),
])
def test_kdf_and_kcv_match_globalplatformpro_diversification_vectors(length: int,
                                                                      expected: tuple[str, str, str]) -> None:
    # GlobalPlatformPro TestPlaintextKeys.testDiversification_KDF3_SCP03_AES128/192/256: master 4041…, KDD 00…09
    master = bytes(range(0x40, 0x40 + length))
    kdd = bytes(range(10))
    assert tuple(scp03.kcv(_kdf3(master, t, kdd)).hex().upper() for t in (1, 2, 3)) == expected


@pytest.mark.parametrize("bits", [64, 128, 192, 256])
def test_derivation_agrees_with_cryptographys_own_sp800_108_counter_kdf(bits: int) -> None:
    context = bytes(range(16))
    prefix = bytes(11) + bytes((scp03.S_MAC,)) + b"\x00" + bits.to_bytes(2, "big")
    reference = KBKDFCMAC(AES, Mode.CounterMode, bits // 8, 1, None, CounterLocation.MiddleFixed, None, None,
                          prefix + context, break_location=len(prefix)).derive(GP_TEST_KEY)
    assert scp03.derive(GP_TEST_KEY, scp03.S_MAC, context, bits) == reference


def test_static_keys_parse_write_and_hide_themselves() -> None:
    keys = scp03.StaticKeys.generate()
    assert scp03.StaticKeys.from_hex(keys.to_hex()) == keys
    assert keys.enc.hex() not in repr(keys) and keys.enc.hex().upper() not in keys.check_values()
    with pytest.raises(ValueError):
        scp03.StaticKeys(bytes(16), bytes(16), bytes(24))
    with pytest.raises(ValueError):
        scp03.StaticKeys.from_hex("30:00:11")


@pytest.fixture
def keys() -> scp03.StaticKeys:
    return scp03.StaticKeys.generate()


@pytest.fixture
def card(keys: scp03.StaticKeys) -> EmulatedCard:
    return EmulatedCard(CardState(scp03_keys=keys.to_hex()))


def test_host_and_card_agree_and_manage_the_card_under_scp03(card: EmulatedCard, keys: scp03.StaticKeys) -> None:
    wire = Recorder(card)
    session = GlobalPlatformCardSession(wire, keys=keys)
    session.create_regional_area()
    session.install(type_a(1), area=Area.EXTENDED)
    session.install(type_c(2), area=Area.REGIONAL)
    session.load(aid(9), bytes(600), area=Area.EXTENDED)
    assert {e.aid for e in session.list_apps()} >= {aid(1), aid(2)}
    assert session.free_space(Area.EXTENDED).installed_apps == 1
    session.delete(aid(2))
    assert card.installed() == {aid(1).hex().upper()}
    management = [CommandApdu.parse(c) for c, _ in wire.seen if c[1] in (0xE6, 0xE8, 0xE4, 0xF2, 0xCA)]
    assert management and all(c.cla == 0x84 for c in management)  # every management command carried a C-MAC
    # C-DECRYPTION: the PIN and the AP's authentication key inside INSTALL never crossed the wire in clear
    assert PIN not in wire.wire and KEY not in wire.wire
    assert keys.enc not in wire.wire and keys.mac not in wire.wire and keys.dek not in wire.wire


def test_every_security_level_works(card: EmulatedCard, keys: scp03.StaticKeys) -> None:
    for n, level in enumerate(sorted(scp03.SUPPORTED_LEVELS)):
        session = GlobalPlatformCardSession(Recorder(card), keys=keys, level=level)
        session.install(type_c(10 + n), area=Area.EXTENDED)
        assert aid(10 + n) in {e.aid for e in session.list_apps()}


def test_a_keyed_card_refuses_management_without_a_secure_channel(card: EmulatedCard) -> None:
    plain = GlobalPlatformCardSession(Recorder(card))
    with pytest.raises(CardStatusError) as refused:
        plain.install(type_c(1), area=Area.EXTENDED)
    assert refused.value.sw == StatusWord.SECURITY_STATUS_NOT_SATISFIED
    with pytest.raises(CardStatusError) as refused:
        plain.list_apps()
    assert refused.value.sw == StatusWord.SECURITY_STATUS_NOT_SATISFIED
    assert plain.card_info().card_identifier == "1234567890123"  # GET DATA stays open
    assert card.installed() == set()


def test_wrong_static_keys_fail_on_the_card_cryptogram(card: EmulatedCard) -> None:
    session = GlobalPlatformCardSession(Recorder(card), keys=scp03.StaticKeys.generate())
    with pytest.raises(scp03.SecureChannelError, match="card cryptogram"):
        session.install(type_c(1), area=Area.EXTENDED)
    assert card.installed() == set()


def test_a_wrong_host_cryptogram_is_6982_even_with_a_good_c_mac(card: EmulatedCard, keys: scp03.StaticKeys) -> None:
    card.process(commands.select(commands.CARD_MANAGER_AID).to_bytes())
    host_challenge = bytes(8)
    answer = ResponseApdu.parse(card.process(
        CommandApdu(0x80, scp03.INS_INITIALIZE_UPDATE, 0, 0, host_challenge, le=256).to_bytes()))
    assert answer.ok and answer.data[10:13] == bytes((keys.version, 0x03, scp03.I_PARAMETER))
    context = host_challenge + answer.data[13:21]
    session_keys = scp03.SessionKeys.derive(keys, context)
    assert answer.data[21:29] == session_keys.cryptogram(scp03.CARD_CRYPTOGRAM, context)
    wrong = session_keys.cryptogram(scp03.CARD_CRYPTOGRAM, context)  # the card's cryptogram, not the host's
    auth = CommandApdu(0x80, scp03.INS_EXTERNAL_AUTHENTICATE, 0x01, 0x00, wrong)
    wrapped = scp03.HostChannel._wrap(scp03._Session(session_keys, scp03.SecurityLevel.C_MAC), auth)
    assert ResponseApdu.parse(card.process(wrapped)).sw == StatusWord.SECURITY_STATUS_NOT_SATISFIED
    assert ResponseApdu.parse(card.process(commands.delete(aid(1)).to_bytes())).sw == 0x6982


def test_a_tampered_c_mac_is_6982_and_aborts_the_session(card: EmulatedCard, keys: scp03.StaticKeys) -> None:
    wire = Recorder(card)
    session = GlobalPlatformCardSession(wire, keys=keys)
    session.install(type_c(1), area=Area.EXTENDED)
    wire.tamper_next_command = True
    with pytest.raises(CardStatusError) as refused:
        session.delete(aid(1))
    assert refused.value.sw == StatusWord.SECURITY_STATUS_NOT_SATISFIED
    assert card.installed() == {aid(1).hex().upper()}  # nothing happened on the card
    # the card aborted the session: a further command, even correctly protected, is refused too
    sw = ResponseApdu.parse(card.process(commands.get_data(commands.TAG_EXTENDED_CARD_RESOURCES).to_bytes())).sw
    assert sw == StatusWord.SECURITY_STATUS_NOT_SATISFIED
    session.delete(aid(1))  # a new session (SELECT + INITIALIZE UPDATE) works again
    assert card.installed() == set()


def test_a_replayed_command_is_6982(card: EmulatedCard, keys: scp03.StaticKeys) -> None:
    wire = Recorder(card)
    session = GlobalPlatformCardSession(wire, keys=keys)
    session.install(type_c(1), area=Area.EXTENDED)
    install = next(c for c, _ in wire.seen if c[1] == commands.INS_INSTALL)
    session.delete(aid(1))
    # the MAC chaining value has moved on: the captured INSTALL does not verify again
    assert ResponseApdu.parse(card.process(install)).sw == StatusWord.SECURITY_STATUS_NOT_SATISFIED
    assert card.installed() == set()


def test_an_altered_answer_fails_its_r_mac(card: EmulatedCard, keys: scp03.StaticKeys) -> None:
    wire = Recorder(card)
    wire.transmit(commands.select(Area.EXTENDED.aid).to_bytes())
    channel = scp03.HostChannel(wire, keys)
    channel.open()
    assert ResponseApdu.parse(channel.transmit(commands.get_data(commands.TAG_EXTENDED_CARD_RESOURCES).to_bytes())).ok
    wire.tamper_next_response = True
    with pytest.raises(scp03.SecureChannelError, match="R-MAC"):
        channel.transmit(commands.get_data(commands.TAG_EXTENDED_CARD_RESOURCES).to_bytes())
    assert not channel.is_open


def test_an_unkeyed_card_stays_open_as_before() -> None:
    card = EmulatedCard()
    session = GlobalPlatformCardSession(Recorder(card))
    session.install(type_c(1), area=Area.EXTENDED)
    assert card.installed() == {aid(1).hex().upper()}
    with pytest.raises(scp03.SecureChannelError, match="6D00"):
        GlobalPlatformCardSession(Recorder(card), keys=scp03.StaticKeys.generate()).list_apps()
