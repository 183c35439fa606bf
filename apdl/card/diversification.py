"""Per-card SCP03 static keys from a master key set ("KDF3" key diversification).

Each card answers INITIALIZE UPDATE with 10 bytes of key diversification data (KDD, Amendment D §7.1.1.1);
its Key-ENC, Key-MAC and Key-DEK are derived from the master key of the same role and that KDD, so the
keys taken out of one card open no other card, while the module keeps one master key set.

The method is GlobalPlatformPro's ``kdf3`` template (``PlaintextKeys.kdf_templates``), the AES one of its
diversifiers (``emv``, ``visa`` and ``visa2`` are the 3DES-era schemes of SCP01/SCP02): NIST SP 800-108
KDF in counter mode with AES-CMAC as PRF, an 8-bit counter first, then the fixed input
``00 00 00 ‖ key type ‖ 00 ‖ KDD`` with key type ``01`` (ENC), ``02`` (MAC), ``03`` (DEK); output as long as
the master key. It is the same PRF and counter construction as SCP03's own data derivation scheme.
Tests check it against GlobalPlatformPro's published vectors (``TestPlaintextKeys``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from apdl.card.scp03 import StaticKeys, kdf_counter

KDD_LENGTH = 10
KEY_TYPE_ENC = 0x01
KEY_TYPE_MAC = 0x02
KEY_TYPE_DEK = 0x03
METHOD = "kdf3"


def kdf3(master: bytes, key_type: int, kdd: bytes) -> bytes:
    """One card key from one master key: SP 800-108 counter KDF, AES-CMAC, input ``i ‖ 000000 ‖ type ‖ 00 ‖ KDD``."""
    if len(kdd) != KDD_LENGTH:
        raise ValueError("key diversification data is 10 bytes")
    return kdf_counter(master, prefix=b"", suffix=bytes(3) + bytes((key_type,)) + b"\x00" + kdd,
                       length=len(master))


def new_kdd() -> bytes:
    """Fresh diversification data for a card being issued (random: unique with overwhelming probability)."""
    return secrets.token_bytes(KDD_LENGTH)


@dataclass(frozen=True)
class MasterKeys:
    """The module's master key set: master ENC, MAC and DEK keys and the key version number the cards carry.

    Kept in the ``VV:ENC:MAC:DEK`` hex form of :class:`~apdl.card.scp03.StaticKeys` (the key file); the
    repr shows nothing of the keys. Satisfies :class:`~apdl.card.scp03.KeySource`.
    """

    master: StaticKeys

    @property
    def version(self) -> int:
        """The key version number of every card's diversified key set."""
        return self.master.version

    @classmethod
    def generate(cls, *, length: int = 16, version: int = 0x30) -> MasterKeys:
        """A fresh random master key set."""
        return cls(StaticKeys.generate(length=length, version=version))

    @classmethod
    def from_hex(cls, text: str) -> MasterKeys:
        """Parse the key file's ``VV:ENC:MAC:DEK`` (hex)."""
        return cls(StaticKeys.from_hex(text))

    def to_hex(self) -> str:
        """``VV:ENC:MAC:DEK`` in hex (for the key file only)."""
        return self.master.to_hex()

    def check_values(self) -> str:
        """The master keys' check values, safe to show."""
        return self.master.check_values()

    def for_card(self, kdd: bytes) -> StaticKeys:
        """The static keys of the card whose diversification data is ``kdd``."""
        m = self.master
        return StaticKeys(kdf3(m.enc, KEY_TYPE_ENC, kdd), kdf3(m.mac, KEY_TYPE_MAC, kdd),
                          kdf3(m.dek, KEY_TYPE_DEK, kdd), m.version)
