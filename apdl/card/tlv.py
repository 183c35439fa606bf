"""BER-TLV as used in ISO/IEC 7816-4 and GlobalPlatform data fields (one- and two-byte tags)."""

from __future__ import annotations

from collections.abc import Iterator


def encode(tag: int, value: bytes) -> bytes:
    """One TLV: tag (one or two bytes), definite length (short or 81/82 form), value."""
    tag_bytes = tag.to_bytes(2, "big") if tag > 0xFF else bytes((tag,))
    n = len(value)
    if n < 0x80:
        length = bytes((n,))
    elif n <= 0xFF:
        length = bytes((0x81, n))
    else:
        length = bytes((0x82,)) + n.to_bytes(2, "big")
    return tag_bytes + length + value


def iterate(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (tag, value) for each TLV in ``data``; raises ValueError on truncated input."""
    i = 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            if i >= len(data):
                raise ValueError("truncated tag")
            tag = (tag << 8) | data[i]
            i += 1
        if i >= len(data):
            raise ValueError("truncated length")
        n = data[i]
        i += 1
        if n & 0x80:
            width = n & 0x7F
            if width not in (1, 2) or i + width > len(data):
                raise ValueError("unsupported length")
            n = int.from_bytes(data[i:i + width], "big")
            i += width
        if i + n > len(data):
            raise ValueError("truncated value")
        yield tag, data[i:i + n]
        i += n


def as_dict(data: bytes) -> dict[int, bytes]:
    """The TLVs of ``data`` by tag (the last one wins when a tag repeats)."""
    return dict(iterate(data))
