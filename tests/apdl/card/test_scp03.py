"""GlobalPlatform SCP03: the data derivation scheme and the KDF3 key diversification against published
vectors and an independent KDF, and the server's end against the emulated card's end (cryptograms, C-MAC,
C-DECRYPTION, R-MAC, R-ENCRYPTION, per-card keys)."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.ciphers.modes import CBC, ECB
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode

from apdl.card import commands, scp03
from apdl.card.adapter import CardStatusError, GlobalPlatformCardSession
from apdl.card.apdu import CommandApdu, ResponseApdu, StatusWord
from apdl.card.commands import Area
from apdl.card.diversification import MasterKeys, kdf3
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
        self.tamper_response_at = 0  # which byte of the answer to flip: 0 the first data byte, -3 the last R-MAC byte

    def transmit(self, apdu: bytes) -> bytes:
        if self.tamper_next_command and apdu[0] & 0x04 and apdu[1] != scp03.INS_EXTERNAL_AUTHENTICATE:
            self.tamper_next_command = False
            # flip a bit of the C-MAC of the next protected command (Le follows it)
            apdu = apdu[:-2] + bytes((apdu[-2] ^ 0x01,)) + apdu[-1:]
        response = self.card.process(apdu)
        if self.tamper_next_response:
            self.tamper_next_response = False
            flipped = bytearray(response)
            flipped[self.tamper_response_at] ^= 0x01
            response = bytes(flipped)
        self.seen.append((apdu, response))
        return response

    @property
    def wire(self) -> bytes:
        return b"".join(c + r for c, r in self.seen)


def test_kdf_matches_the_external_scp03_vector_globalplatformpro_tests() -> None:
    # GlobalPlatformPro TestPlaintextKeys.testDiversification_KDF3_ExternalVector (AES-256, two PRF blocks)
    master = bytes.fromhex("8C72C72CF908411653018807950D82FBAD947562F0828A0B10B8B9606ABF3BCD")
    derived = kdf3(master, 0x01, bytes.fromhex("D9B1DE5D0362DEDCE4FB"))
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
    # GlobalPlatformPro's fromMasterKey: one master key for all three roles, diversified per key type
    card = MasterKeys(scp03.StaticKeys(master, master, master)).for_card(kdd)
    assert card.check_values() == "/".join(expected)


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


# --- R-ENCRYPTION -------------------------------------------------------------------------------------------

def _aes_ecb(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(AES(key), ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def _session_on_the_wire(wire: Recorder, keys: scp03.StaticKeys) -> scp03.SessionKeys:
    """The last session's keys, from the challenges that crossed the wire (the test holds the static keys)."""
    command, answer = next((c, r) for c, r in reversed(wire.seen) if c[1] == scp03.INS_INITIALIZE_UPDATE)
    return scp03.SessionKeys.derive(keys, CommandApdu.parse(command).data + answer[13:21])


def _open_on_extended_area(card: EmulatedCard, keys: scp03.KeySource,
                           level: scp03.SecurityLevel = scp03.DEFAULT_LEVEL) -> tuple[Recorder, scp03.HostChannel]:
    wire = Recorder(card)
    wire.transmit(commands.select(Area.EXTENDED.aid).to_bytes())
    channel = scp03.HostChannel(wire, keys, level=level)
    channel.open()
    return wire, channel


def test_the_default_level_is_the_highest_the_card_supports() -> None:
    assert scp03.DEFAULT_LEVEL == 0x33 == max(scp03.SUPPORTED_LEVELS)
    assert scp03.I_PARAMETER & 0x60 == 0x60  # the emulated card announces R-MAC and R-ENCRYPTION (Table 5-1)


def test_r_encryption_round_trip_matches_amendment_d_6_2_7(card: EmulatedCard, keys: scp03.StaticKeys) -> None:
    get_data = commands.get_data(commands.TAG_EXTENDED_CARD_RESOURCES).to_bytes()
    _, plain_channel = _open_on_extended_area(card, keys, level=scp03.SecurityLevel(0x13))
    clear = ResponseApdu.parse(plain_channel.transmit(get_data))
    assert clear.ok and len(clear.data) > 0

    wire, channel = _open_on_extended_area(card, keys)
    assert ResponseApdu.parse(channel.transmit(get_data)) == clear  # the host deciphers to the same answer
    answer = wire.seen[-1][1]
    ciphered, r_mac, sw = answer[:-10], answer[-10:-2], answer[-2:]
    assert sw == b"\x90\x00" and clear.data not in answer and len(ciphered) % 16 == 0
    # independently of apdl's code: ICV = AES(S-ENC, '80' ‖ counter 1 on 15 bytes), AES-CBC, ISO 9797-1 M2 padding
    session = _session_on_the_wire(wire, keys)
    icv = _aes_ecb(session.enc, b"\x80" + (1).to_bytes(15, "big"))
    decryptor = Cipher(AES(session.enc), CBC(icv)).decryptor()
    padded = decryptor.update(ciphered) + decryptor.finalize()
    assert padded == clear.data + b"\x80" + bytes(len(padded) - len(clear.data) - 1)
    # the R-MAC covers the ciphered data: chaining value (the command's full C-MAC) ‖ ciphered data ‖ SW
    assert r_mac == scp03.cmac(session.rmac, _command_chaining(wire, session) + ciphered + sw)[:8]


def _command_chaining(wire: Recorder, session: scp03.SessionKeys) -> bytes:
    """The MAC chaining value after the last command: its full C-MAC, recomputed from the wire."""
    chaining = bytes(16)
    start = max(i for i, (c, _) in enumerate(wire.seen) if c[1] == scp03.INS_INITIALIZE_UPDATE)
    for command, _ in wire.seen[start + 1:]:
        parsed = CommandApdu.parse(command)
        data = parsed.data[:-8]
        chaining = scp03.cmac(session.mac, chaining + bytes((parsed.cla, parsed.ins, parsed.p1, parsed.p2,
                                                             len(parsed.data))) + data)
    return chaining


@pytest.mark.parametrize(("where", "offset"), [("ciphered data", 0), ("R-MAC", -3)])
def test_an_altered_enciphered_answer_is_refused(card: EmulatedCard, keys: scp03.StaticKeys, where: str,
                                                  offset: int) -> None:
    wire, channel = _open_on_extended_area(card, keys)
    wire.tamper_next_response, wire.tamper_response_at = True, offset
    with pytest.raises(scp03.SecureChannelError, match="wrong R-MAC"):
        channel.transmit(commands.get_data(commands.TAG_EXTENDED_CARD_RESOURCES).to_bytes())
    assert not channel.is_open  # nothing more is sent, or trusted, in this session


class BadlyPaddingCard(Recorder):
    """A card whose answer carries a good R-MAC over ciphered data that does not decipher to padded data
    (a faulty card, or one whose S-ENC differs): the host must refuse it although the R-MAC verifies."""

    def transmit(self, apdu: bytes) -> bytes:
        response = super().transmit(apdu)
        secure = self.card._channel.secure
        if apdu[1] != commands.INS_GET_DATA or secure is None or secure._session is None:
            return response
        session = secure._session
        ciphered = scp03._aes_cbc(session.keys.enc, scp03._icv(session.keys.enc, session.counter, response=True),
                                  bytes(16), decrypt=False)  # sixteen '00': no '80' marker
        sw = response[-2:]
        return ciphered + scp03.cmac(session.keys.rmac, session.chaining + ciphered + sw)[:8] + sw


def test_an_answer_with_a_good_r_mac_but_bad_padding_is_refused(card: EmulatedCard, keys: scp03.StaticKeys) -> None:
    wire = BadlyPaddingCard(card)
    wire.transmit(commands.select(Area.EXTENDED.aid).to_bytes())
    channel = scp03.HostChannel(wire, keys)
    channel.open()
    with pytest.raises(scp03.SecureChannelError, match="padded"):
        channel.transmit(commands.get_data(commands.TAG_EXTENDED_CARD_RESOURCES).to_bytes())
    assert not channel.is_open


def test_a_card_without_r_encryption_support_is_refused_the_full_level(card: EmulatedCard,
                                                                       keys: scp03.StaticKeys) -> None:
    class OldCard(Recorder):
        def transmit(self, apdu: bytes) -> bytes:
            response = super().transmit(apdu)
            if apdu[1] == scp03.INS_INITIALIZE_UPDATE:
                response = response[:12] + bytes((0x20,)) + response[13:]  # "i" = 20: R-MAC only
            return response
    with pytest.raises(scp03.SecureChannelError, match="R-ENCRYPTION"):
        GlobalPlatformCardSession(OldCard(card), keys=keys).list_apps()


@pytest.mark.parametrize("longer", range(10))
def test_every_get_status_page_still_fits_a_short_answer_enciphered(keys: scp03.StaticKeys, longer: int) -> None:
    """Pages filled to every length near the limit (two long AIDs, ``longer`` bytes apart): enciphered, padded
    and MACed, each answer still fits 256 bytes + SW."""
    card = EmulatedCard(CardState(scp03_keys=keys.to_hex(), extended_quota=10**6))
    wire = Recorder(card)
    session = GlobalPlatformCardSession(wire, keys=keys)
    for n in range(12):
        extra = {0: 9, 1: longer}.get(n, 0)  # AIDs of 16, 7 + longer, then 7 bytes
        session.install(dataclasses.replace(type_c(30 + n, size=16), aid=aid(30 + n) + bytes(extra)),
                        area=Area.EXTENDED)
    assert len(session.list_apps()) >= 12
    assert max(len(r) for c, r in wire.seen if c[1] == commands.INS_GET_STATUS) <= 256 + 2


# --- per-card keys (KDF3 diversification) -------------------------------------------------------------------

KDD_A = bytes.fromhex("0000000000000000000A")
KDD_B = bytes.fromhex("0000000000000000000B")


@pytest.fixture
def master() -> MasterKeys:
    return MasterKeys.generate()


def test_cards_with_other_diversification_data_get_other_keys(master: MasterKeys) -> None:
    a, b = master.for_card(KDD_A), master.for_card(KDD_B)
    assert len({a.enc, a.mac, a.dek, b.enc, b.mac, b.dek, master.master.enc}) == 7
    assert master.for_card(KDD_A) == a  # and the same data gives the same keys again
    issued = CardState.issued(master, kdd=KDD_A)
    assert issued.kdd == KDD_A.hex().upper() and scp03.StaticKeys.from_hex(issued.scp03_keys) == a
    assert master.master.enc.hex().upper() not in issued.scp03_keys  # the card never holds the master
    assert master.master.enc.hex() not in repr(master)
    assert CardState.issued(master).kdd != CardState.issued(master).kdd  # fresh data per issued card


def test_the_master_keys_open_every_card_issued_from_them(master: MasterKeys) -> None:
    for n, kdd in enumerate((KDD_A, KDD_B)):
        card = EmulatedCard(CardState.issued(master, kdd=kdd))
        wire = Recorder(card)
        GlobalPlatformCardSession(wire, keys=master).install(type_c(n), area=Area.EXTENDED)
        assert card.installed() == {aid(n).hex().upper()}
        assert wire.seen[1][1][:10] == kdd  # INITIALIZE UPDATE gave the card's diversification data


def test_card_a_keys_do_not_open_card_b(master: MasterKeys) -> None:
    keys_a = master.for_card(KDD_A)
    card_b = EmulatedCard(CardState.issued(master, kdd=KDD_B))
    # the host with card A's keys sees card B's cryptogram fail and goes no further
    with pytest.raises(scp03.SecureChannelError, match="card cryptogram"):
        GlobalPlatformCardSession(Recorder(card_b), keys=keys_a).install(type_c(1), area=Area.EXTENDED)
    # one who pushes on with card A's keys anyway is answered 6982 by card B, and the session is aborted
    card_b.process(commands.select(commands.CARD_MANAGER_AID).to_bytes())
    host_challenge = bytes(range(8))
    answer = ResponseApdu.parse(card_b.process(
        CommandApdu(0x80, scp03.INS_INITIALIZE_UPDATE, 0, 0, host_challenge, le=256).to_bytes()))
    assert answer.ok and answer.data[:10] == KDD_B
    context = host_challenge + answer.data[13:21]
    with_a = scp03.SessionKeys.derive(keys_a, context)
    auth = CommandApdu(0x80, scp03.INS_EXTERNAL_AUTHENTICATE, int(scp03.DEFAULT_LEVEL), 0x00,
                       with_a.cryptogram(scp03.HOST_CRYPTOGRAM, context))
    wrapped = scp03.HostChannel._wrap(scp03._Session(with_a, scp03.SecurityLevel.C_MAC), auth)
    assert ResponseApdu.parse(card_b.process(wrapped)).sw == StatusWord.SECURITY_STATUS_NOT_SATISFIED
    assert ResponseApdu.parse(card_b.process(commands.delete(aid(1)).to_bytes())).sw == 0x6982
    assert card_b.installed() == set()
    # card A's keys still open card A
    card_a = EmulatedCard(CardState.issued(master, kdd=KDD_A))
    GlobalPlatformCardSession(Recorder(card_a), keys=keys_a).install(type_c(1), area=Area.EXTENDED)
    assert card_a.installed() == {aid(1).hex().upper()}
