"""apdl's UI is Japanese first with complete English: every message id in its code and templates has English."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
APDL = ROOT / "apdl"
PO = APDL / "translations" / "en" / "LC_MESSAGES" / "messages.po"


def test_every_apdl_string_has_an_english_translation() -> None:
    keywords = {"_": None, "gettext": None, "lazy_gettext": None, "ngettext": (1, 2)}
    found = {message if isinstance(message, str) else message[0]
             for _f, _l, message, _c, _ctx in extract_from_dir(
                 str(APDL), method_map=[("**.py", "python"), ("templates/**.html", "jinja2")], keywords=keywords)}
    translated = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(PO.open("rb"))
                  if m.id and (all(m.string) if isinstance(m.string, tuple) else m.string)}  # every plural form
    assert found, "no message ids found: the extraction looks in the wrong place"
    missing = found - translated
    assert not missing, f"add English to {PO.relative_to(ROOT)}: {sorted(missing)}"
