"""apdl's UI is Japanese first with complete English: every message id in its code and templates has English."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
APDL = ROOT / "apdl"
PO = APDL / "translations" / "en" / "LC_MESSAGES" / "messages.po"


def test_every_apdl_string_has_an_english_translation() -> None:
    keywords = {"_": None, "gettext": None, "lazy_gettext": None}
    found = {message if isinstance(message, str) else message[0]
             for _f, _l, message, _c, _ctx in extract_from_dir(
                 str(APDL), method_map=[("**.py", "python"), ("templates/**.html", "jinja2")], keywords=keywords)}
    translated = {m.id for m in read_po(PO.open("rb")) if m.id and m.string}
    assert found, "no message ids found: the extraction looks in the wrong place"
    missing = found - translated
    assert not missing, f"add English to {PO.relative_to(ROOT)}: {sorted(missing)}"
