"""Command and response APDUs (ISO/IEC 7816-4, short length encoding) and their status words."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from apdl.errors import CardError


class StatusWord(enum.IntEnum):
    """Status words (SW1 SW2) the card path knows, each with a Japanese and an English explanation.

    ``63Cx`` (x tries left) is a family: :func:`status_of` maps every ``63Cx`` to
    ``PIN_RETRIES_LEFT`` and :meth:`ResponseApdu.retries_left` gives x.
    """

    def __new__(cls, value: int, ja: str, en: str) -> StatusWord:
        member = int.__new__(cls, value)
        member._value_ = value
        member.ja = ja
        member.en = en
        return member

    ja: str
    en: str

    OK = 0x9000, "正常終了", "Command completed"
    MORE_DATA = 0x6310, "続きのデータがあります", "More data available"
    VERIFICATION_FAILED = 0x6300, "認証に失敗しました", "Authentication failed"
    PIN_RETRIES_LEFT = 0x63C0, "暗証番号が違います(残り回数あり)", "Wrong PIN (retries left)"
    WRONG_LENGTH = 0x6700, "データ長が不正です", "Wrong length"
    SECURITY_STATUS_NOT_SATISFIED = (
        0x6982, "セキュリティステータスが満たされていません(認証・暗証番号照合が必要です)",
        "Security status not satisfied (authentication or PIN verification required)")
    PIN_BLOCKED = 0x6983, "暗証番号がロックされています", "PIN blocked (authentication method blocked)"
    CONDITIONS_NOT_SATISFIED = 0x6985, "使用条件が満たされていません", "Conditions of use not satisfied"
    INCORRECT_DATA = 0x6A80, "データフィールドの値が不正です", "Incorrect parameters in the data field"
    FUNCTION_NOT_SUPPORTED = 0x6A81, "この機能はサポートされていません", "Function not supported"
    NOT_FOUND = 0x6A82, "カードAPが見つかりません", "Application or file not found"
    RECORD_NOT_FOUND = 0x6A83, "レコードが見つかりません", "Record not found"
    NOT_ENOUGH_MEMORY = 0x6A84, "カードの空き容量が足りません", "Not enough memory space"
    INCORRECT_P1P2 = 0x6A86, "パラメータ(P1-P2)が不正です", "Incorrect parameters P1-P2"
    REFERENCED_DATA_NOT_FOUND = 0x6A88, "指定されたデータが見つかりません", "Referenced data not found"
    ALREADY_EXISTS = 0x6A89, "同じAIDのカードAPが既にあります", "Application or file already exists"
    INS_NOT_SUPPORTED = 0x6D00, "この命令はサポートされていません", "Instruction not supported"
    CLA_NOT_SUPPORTED = 0x6E00, "このクラスはサポートされていません", "Class not supported"
    NO_PRECISE_DIAGNOSIS = 0x6F00, "カード内部でエラーが発生しました", "No precise diagnosis"


_BY_VALUE = {int(s): s for s in StatusWord}


def status_of(sw: int) -> StatusWord | None:
    """The known status word for ``sw`` (every ``63Cx`` maps to PIN_RETRIES_LEFT), or None."""
    if sw & 0xFFF0 == 0x63C0:
        return StatusWord.PIN_RETRIES_LEFT
    return _BY_VALUE.get(sw)


def explain(sw: int, *, lang: str = "ja") -> str:
    """A one-line explanation of ``sw`` in Japanese (default) or English, with the hex code."""
    status = status_of(sw)
    if status is None:
        text = "不明なステータスワード" if lang == "ja" else "Unknown status word"
    elif status is StatusWord.PIN_RETRIES_LEFT:
        left = sw & 0x0F
        text = f"暗証番号が違います(残り{left}回)" if lang == "ja" else f"Wrong PIN ({left} tries left)"
    else:
        text = status.ja if lang == "ja" else status.en
    return f"{sw:04X}: {text}"


@dataclass(frozen=True)
class CommandApdu:
    """A command APDU: header, optional data and optional Le (1..256; 256 is sent as 00)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"{name} must be one byte")
        if len(self.data) > 255:
            raise ValueError("short APDUs carry at most 255 data bytes")
        if self.le is not None and not 1 <= self.le <= 256:
            raise ValueError("Le must be 1..256")

    def to_bytes(self) -> bytes:
        """Short encoding: CLA INS P1 P2 [Lc data] [Le] (Le 256 is written as 00)."""
        out = bytes((self.cla, self.ins, self.p1, self.p2))
        if self.data:
            out += bytes((len(self.data),)) + self.data
        if self.le is not None:
            out += bytes((self.le % 256,))
        return out

    @classmethod
    def parse(cls, raw: bytes) -> CommandApdu:
        """Decode a short command APDU (cases 1-4); raises ValueError when the lengths do not add up."""
        if len(raw) < 4:
            raise ValueError("an APDU has at least four header bytes")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, le=body[0] or 256)
        lc = body[0]
        if lc == 0 or len(body) not in (1 + lc, 2 + lc):
            raise ValueError("Lc does not match the data length")
        data = body[1:1 + lc]
        le = (body[1 + lc] or 256) if len(body) == 2 + lc else None
        return cls(cla, ins, p1, p2, data, le)

    def __str__(self) -> str:
        return self.to_bytes().hex(" ").upper()


@dataclass(frozen=True)
class ResponseApdu:
    """A response APDU: data and the status word."""

    data: bytes
    sw: int

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        """Split the trailing SW1 SW2 from the data."""
        if len(raw) < 2:
            raise CardError(f"response too short: {raw.hex()}")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))

    def to_bytes(self) -> bytes:
        """Data followed by SW1 SW2."""
        return self.data + self.sw.to_bytes(2, "big")

    @property
    def ok(self) -> bool:
        """True for 9000."""
        return self.sw == StatusWord.OK

    @property
    def status(self) -> StatusWord | None:
        """The known status word, or None for one the card path does not know."""
        return status_of(self.sw)

    @property
    def retries_left(self) -> int | None:
        """Tries left after a failed VERIFY (x of 63Cx; 0 when the PIN is blocked), else None."""
        if self.sw & 0xFFF0 == 0x63C0:
            return self.sw & 0x0F
        if self.sw == StatusWord.PIN_BLOCKED:
            return 0
        return None
