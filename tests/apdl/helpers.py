"""Card APs for the apdl card tests."""

from __future__ import annotations

from apdl.card.commands import ApSpec, ApType

PIN = b"1234"
KEY = bytes(range(16))
RID = "D392F00002"  # a provider's RID: AIDs below are RID + PIX


def aid(n: int) -> bytes:
    """A distinct 7-byte AID."""
    return bytes.fromhex(RID) + n.to_bytes(2, "big")


def type_c(n: int, *, size: int = 2048) -> ApSpec:
    """共通カードAP: its 利用者ID readable without authentication."""
    return ApSpec(aid=aid(n), ap_type=ApType.C, size_bytes=size, user_id=f"USER-C-{n:04d}".encode())


def type_a(n: int, *, size: int = 2048, tries: int = 3) -> ApSpec:
    """業務タイプA: its record behind mutual authentication and a PIN."""
    return ApSpec(aid=aid(n), ap_type=ApType.A, size_bytes=size, user_id=f"USER-A-{n:04d}".encode(),
                  pin=PIN, pin_max_tries=tries, auth_key=KEY)
