"""Languages: Japanese by default, English selectable and remembered; the English catalogue is complete."""

from __future__ import annotations

import io
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask import Flask

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "translations" / "en" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")


def _source_msgids() -> set[str]:
    method_map = [("app.py", "python"), ("bootstrap.py", "python"), ("kernel/**.py", "python"),
                  ("bio/**.py", "python"), ("operators/**.py", "python"), ("ca/**.py", "python"),
                  ("certs/**.py", "python"), ("oidc/**.py", "python"),
                  ("templates/**.html", "jinja2")]
    keywords = {"_": None, "gettext": None, "lazy_gettext": None}
    found = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map=method_map, keywords=keywords):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_ui_string_has_an_english_translation() -> None:
    catalogue = read_po(PO.open("rb"))
    translated = {m.id for m in catalogue if m.id and m.string}
    missing = _source_msgids() - translated
    assert not missing, f"add English to {PO.relative_to(ROOT)} (make translations): {sorted(missing)}"


def test_compiled_catalogue_matches_the_po_file() -> None:
    po = {m.id: m.string for m in read_po(PO.open("rb")) if m.id}
    mo = {m.id: m.string for m in read_mo(io.BytesIO(MO.read_bytes())) if m.id}
    assert mo == po, "translations/en/LC_MESSAGES/messages.mo is stale: run `make compile-translations`"


def test_japanese_is_the_default(sqlite_app: Flask) -> None:
    page = sqlite_app.test_client().get("/login").get_data(as_text=True)
    assert '<html lang="ja">' in page and "操作者用ポータルメニューログイン" in page and ">English<" in page


def test_english_is_selected_and_remembered(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    response = client.get("/login?lang=en")
    page = response.get_data(as_text=True)
    assert '<html lang="en">' in page and "Operator portal login" in page and ">日本語<" in page
    assert "opauth_lang=en" in response.headers["Set-Cookie"]
    assert "HttpOnly" in response.headers["Set-Cookie"]
    assert "Operator portal login" in client.get("/login").get_data(as_text=True)
    assert "Operator portal login" in client.get("/login?lang=xx").get_data(as_text=True)
    assert "操作者用ポータルメニューログイン" in client.get("/login?lang=ja").get_data(as_text=True)


def test_messages_from_code_are_translated_too(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    client.get("/login?lang=en")
    from tests.conftest import csrf_token

    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"csrf_token": csrf_token(page), "tenant": "system",
                                           "operator_id": "nobody", "password": "wrong-password"})
    assert "or you cannot log in at the moment" in response.get_data(as_text=True)
