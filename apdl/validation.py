"""The one place form text is checked: required, characters allowed, length — each with its own message.

Refused in every text field: control characters (Unicode Cc; a multi-line field keeps line breaks),
format characters (Cf: bidi overrides such as U+202E, zero-width and other invisible controls),
surrogates (Cs) and private-use characters (Co). The order of the checks decides the message: an empty
value is "required", a value holding a refused character says so, only then is the length checked.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import unquote_to_bytes

from flask_babel import gettext as _

from apdl.errors import InvalidInput

REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co"})
LINE_BREAKS = frozenset("\n")
PHONE = re.compile(r"^\+?(?:[0-9]+|\([0-9]+\))(?:-?(?:[0-9]+|\([0-9]+\)))*$")
PHONE_DIGITS = (6, 15)  # a Japanese number has 10 or 11 digits; E.164 allows 15
MAX_PAGE = 100_000


def utf8_urlencoded(raw: bytes) -> bool:
    """Whether a raw query string or urlencoded form body decodes (percent escapes included) as UTF-8."""
    if raw.isascii() and b"%" not in raw:
        return True  # the common case, without a copy
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def refused_character(value: str, *, multiline: bool = False) -> str | None:
    """The first character of ``value`` no text field accepts, or None."""
    for char in value:
        if multiline and char in LINE_BREAKS:
            continue
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            return char
    return None


def text(form: Mapping[str, str], name: str, label: str, *, max_length: int, required: bool = True,
         multiline: bool = False) -> str:
    """The field ``name`` of ``form``, trimmed; InvalidInput with a message naming what is wrong."""
    value = (form.get(name) or "").strip()
    if multiline:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if required and not value:
        raise InvalidInput(_("%(label)sを入力してください。", label=label))
    if refused_character(value, multiline=multiline) is not None:
        raise InvalidInput(_("%(label)sに使用できない文字（制御文字など）が含まれています。", label=label))
    if len(value) > max_length:
        raise InvalidInput(_("%(label)sは%(max)d文字以内で入力してください。", label=label, max=max_length))
    return value


def phone(form: Mapping[str, str], name: str, label: str, *, required: bool = False) -> str:
    """A plausible telephone number: digits, optional hyphens and parentheses, an optional leading +."""
    value = unicodedata.normalize("NFKC", text(form, name, label, max_length=20, required=required))
    digits = sum(c.isdigit() for c in value)
    if value and (not value.isascii() or len(value) > 20 or not PHONE.match(value)
                  or not PHONE_DIGITS[0] <= digits <= PHONE_DIGITS[1]):
        raise InvalidInput(_("%(label)sは電話番号（半角数字、ハイフン、括弧、先頭の+）で入力してください。",
                             label=label))
    return value


def page_number(raw: str | None) -> int:
    """A list's page number from the query (1 when absent): InvalidInput unless a number from 1 to MAX_PAGE."""
    raw = raw or "1"
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= MAX_PAGE):
        raise InvalidInput(_("ページの指定が正しくありません。"))
    return int(raw)
