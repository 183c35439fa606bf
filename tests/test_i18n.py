"""One language at a time: the English catalogue is complete and current, and every page speaks one language.

- Catalogue: every msgid that extraction finds in the sources (with the Makefile's flags) is in
  ``translations/messages.pot`` and has a non-empty, non-fuzzy English msgstr.
- Pages: every GET page that a system administrator, a tenant manager and an operator can reach is
  rendered in English (no kana or kanji left in the visible text, except data the test created) and in
  Japanese (no English UI sentence from the catalogue, and no English refusal from the services).
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient

from ca.models import CertificateProfile, RevocationReason
from tests.conftest import ADMIN_PASSWORD, csrf_token, login_admin
from tests.helpers import BUSINESS, make_csr

ROOT = Path(__file__).resolve().parents[1]
POT = ROOT / "translations" / "messages.pot"
PO = ROOT / "translations" / "en" / "LC_MESSAGES" / "messages.po"

# Kana, kanji and the full-width punctuation Japanese text uses (「」（）、。〜・).
JAPANESE = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff01-\uff60\uff66-\uff9f]")
# The link that switches back to Japanese is written in Japanese on purpose.
ALLOWED_JAPANESE = ("日本語",)
# Words the services use when a message was not marked for translation (checked on Japanese pages).
ENGLISH_REFUSALS = re.compile(r"\b(must be|is required|already|cannot|no such|not allowed|invalid|"
                              r"belongs to|at most|unknown)\b", re.IGNORECASE)

# Machine values that screens must show as words (ca/labels.py), in either language.
MACHINE_VALUES = frozenset({*(p.value for p in CertificateProfile), *(r.value for r in RevocationReason),
                            "valid", "expired", "revoked", "on_hold"})

PASSWORD = "Render-Check-Pass-2026"


# --- the catalogue ---------------------------------------------------------------------------------

def _extract(tmp_path: Path) -> set[str]:
    """msgids as `make translations` extracts them (same babel.cfg, keywords and flags)."""
    out = tmp_path / "messages.pot"
    subprocess.run([str(Path(sys.executable).parent / "pybabel"), "-q", "extract", "-F", "babel.cfg",
                    "-k", "lazy_gettext", "--no-location", "--sort-output", "-o", str(out), "."],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(out.open("rb")) if m.id}


def test_the_template_catalogue_is_up_to_date_with_the_sources(tmp_path: Path) -> None:
    extracted = _extract(tmp_path)
    committed = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(POT.open("rb")) if m.id}
    assert extracted == committed, (
        "translations/messages.pot is stale: run `make translations` and fill in the English. "
        f"new: {sorted(extracted - committed)[:20]}, gone: {sorted(committed - extracted)[:20]}")


def test_every_message_has_an_english_translation(tmp_path: Path) -> None:
    catalogue = {m.id if isinstance(m.id, str) else m.id[0]: m for m in read_po(PO.open("rb")) if m.id}
    untranslated = sorted(i for i in _extract(tmp_path)
                          if i not in catalogue or not catalogue[i].string or catalogue[i].fuzzy)
    assert not untranslated, f"add English to {PO.relative_to(ROOT)}: {untranslated[:40]}"
    japanese_left = sorted(m.id for m in catalogue.values()
                           if isinstance(m.string, str) and JAPANESE.sub("", m.string.replace("日本語", ""))
                           != m.string.replace("日本語", ""))
    assert not japanese_left, f"English msgstr still holds Japanese: {japanese_left[:20]}"


# --- the pages -------------------------------------------------------------------------------------

_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                   "wbr"})


class _VisibleText(HTMLParser):
    """Text a person sees: text nodes, placeholder/title/alt/aria-label, and the JSON blocks of words that
    the page's script shows (the WebAuthn messages); never code or styles, nor records kept as they were
    written (``translate="no"``: an audit entry's detail is in the language of the request it records)."""

    SHOWN_ATTRIBUTES = ("placeholder", "title", "alt", "aria-label")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden: list[bool] = []
        self._verbatim: list[str] = []  # the open elements inside a translate="no" one

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden.append(tag == "style" or ("type", "application/json") not in attrs)
        if self._verbatim or ("translate", "no") in attrs:
            if tag not in _VOID:
                self._verbatim.append(tag)
            return
        for name, value in attrs:
            if value and (name in self.SHOWN_ATTRIBUTES or name.startswith("data-msg")):
                self.parts.append(value)
            if tag == "input" and name == "value" and value and ("type", "submit") in attrs:
                self.parts.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._hidden:
            self._hidden.pop()
        if self._verbatim and self._verbatim[-1] == tag:
            self._verbatim.pop()

    def handle_data(self, data: str) -> None:
        if not any(self._hidden) and not self._verbatim and data.strip():
            self.parts.append(data.strip())


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    return "\n".join(parser.parts)


@dataclass
class World:
    """People and data made through the product's own paths (login, forms, API)."""

    app: Flask
    clients: dict[str, FlaskClient] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    data_words: set[str] = field(default_factory=set)


def _api(app: Flask, user: str, password: str) -> FlaskClient:
    client = app.test_client()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Basic {token}"
    return client


def _web_login(app: Flask, tenant: str, operator_id: str, password: str) -> FlaskClient:
    """Log in through the form; a first login changes the generated password as the product demands."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"csrf_token": csrf_token(page), "tenant": tenant,
                                           "operator_id": operator_id, "password": password})
    assert response.status_code == 302, visible_text(response.get_data(as_text=True))[:500]
    if response.headers["Location"].endswith("/password"):
        page = client.get("/password").get_data(as_text=True)
        response = client.post("/password", data={"csrf_token": csrf_token(page), "current_password": password,
                                                  "new_password": PASSWORD, "confirm_password": PASSWORD})
        assert response.status_code == 302, visible_text(response.get_data(as_text=True))[:500]
    return client


@pytest.fixture
def world(sqlite_app: Flask) -> World:
    app = sqlite_app
    app.config.update(ARGON2_TIME_COST=1, ARGON2_MEMORY_KIB=8192, ARGON2_PARALLELISM=1)
    w = World(app=app)
    w.clients["anonymous"] = app.test_client()  # the login pages, before anyone logs in
    admin = app.test_client()
    login_admin(admin, app)
    w.clients["system_admin"] = admin
    api = _api(app, "admin@system", ADMIN_PASSWORD)
    # a business system (through its server certificate), a tenant, joint use
    issued = api.post("/api/v1/business-server-certificates", json=dict(BUSINESS, csr=make_csr().decode()))
    assert issued.status_code == 201, issued.get_json()
    created = api.post("/api/v1/tenants", json={"code": "nishiedo", "name": "西江戸市", "kind": "municipality"})
    assert created.status_code == 201, created.get_json()
    joint = api.put("/api/v1/business-systems/05/joint-use", json={"tenants": ["nishiedo"]})
    assert joint.status_code == 200, joint.get_json()
    # a tenant manager and an operator, registered with their certificates
    people = {"tenant_manager": ("MGR01", "tenant_manager", "窓口 管理者"),
              "operator": ("OP0601", "operator", "山田 太郎")}
    for key, (operator_id, role, name) in people.items():
        body = {"operator_id": operator_id, "name": name, "department": "市民課", "gender": "male",
                "phone": "03-1234-5678", "extension": "1234", "email": "yamada@city.example.jp",
                "info": "窓口担当", "extra_info": "本庁舎2階", "auth_method": "password",
                "business_ids": ["05"], "role": role}
        registered = api.post("/api/v1/tenants/nishiedo/operators", json=body)
        assert registered.status_code == 201, registered.get_json()
        reply = registered.get_json()
        w.clients[key] = _web_login(app, "nishiedo", operator_id, reply["password"])
        w.values[f"{key}_serial"] = reply.get("serial") or reply["certificate"]["serial"]
    put = api.put("/api/v1/tenants/nishiedo/business-systems/05/in-business-ids/OP0601",
                  json={"in_business_id": "yamada-05", "permissions": ["read"]})
    assert put.status_code in (200, 201), put.get_json()
    terminal = api.post("/api/v1/ssl-certificates", json={"terminal": "madoguchi-01", "tenant": "nishiedo",
                                                           "hosts": ["madoguchi-01.city.example.jp"]})
    assert terminal.status_code == 201, terminal.get_json()
    w.values["ssl_serial"] = terminal.get_json().get("serial") or terminal.get_json()["certificate"]["serial"]
    w.data_words |= {"西江戸市", "窓口 管理者", "山田 太郎", "市民課", "窓口担当", "本庁舎2階",
                     BUSINESS["name"], str(BUSINESS.get("admin_org", "")),
                     # the system tenant and its first administrator are data written by `init`
                     "システム管理者", "システム管理"}
    return w


def _paths(world: World) -> Iterator[str]:
    """Every GET page of the web UI, with its parameters filled from the world's data."""
    with world.app.app_context():
        from ca.models import Certificate
        from db import get_session

        cert_id = get_session().query(Certificate.id).order_by(Certificate.id.desc()).first()
    params = {"code": "nishiedo", "operator_id": "OP0601", "business_id": "05", "tenant_code": "nishiedo",
              "serial": world.values["operator_serial"], "cert_id": str(cert_id[0] if cert_id else 1),
              "staged_id": "1"}
    for rule in sorted(world.app.url_map.iter_rules(), key=lambda r: r.rule):
        if "GET" not in (rule.methods or ()) or rule.rule.startswith(("/api/", "/pki/", "/static")):
            continue
        path = rule.rule
        for name in rule.arguments:
            path = re.sub(rf"<(?:\w+:)?{name}>", params.get(name, "x"), path)
        if "<" not in path:
            yield path


def _render_all(world: World, lang: str) -> dict[str, dict[str, str]]:
    """role → path → visible text of every HTML page that role can open (following redirects)."""
    pages: dict[str, dict[str, str]] = {}
    for role, client in world.clients.items():
        client.get(f"/top?lang={lang}")
        pages[role] = {}
        for path in _paths(world):
            if path == "/admin/ssl-certificates/x/reissue":
                continue
            ssl_path = path.replace("/ssl-certificates/x/", f"/ssl-certificates/{world.values['ssl_serial']}/")
            response = client.get(ssl_path,
                                  follow_redirects=True)
            if response.mimetype == "text/html":
                pages[role][path] = visible_text(response.get_data(as_text=True))
    return pages


def test_every_page_is_english_when_english_is_chosen(world: World) -> None:
    pages = _render_all(world, "en")
    assert len(pages["system_admin"]) > 30 and len(pages["tenant_manager"]) > 10 and len(pages["operator"]) > 3
    leaks: dict[str, str] = {}
    for role, texts in pages.items():
        for path, text in texts.items():
            for word in sorted(world.data_words | set(ALLOWED_JAPANESE), key=len, reverse=True):
                text = text.replace(word, "")
            for line in text.splitlines():
                if JAPANESE.search(line) or line in MACHINE_VALUES:
                    leaks.setdefault(line[:100], f"{role} {path}")
    assert not leaks, "Japanese left on English pages:\n" + "\n".join(f"{k}  ({v})" for k, v in sorted(leaks.items()))


def _english_sentences() -> list[str]:
    """English UI sentences from the catalogue: on a Japanese page any of them is a leak."""
    found = []
    for m in read_po(PO.open("rb")):
        if m.id and isinstance(m.string, str) and len(m.string) >= 12 and " " in m.string:
            found.append(re.split(r"%\(\w+\)s", m.string)[0].strip())
    return [s for s in found if len(s) >= 12]


def test_every_page_is_japanese_by_default(world: World) -> None:
    pages = _render_all(world, "ja")
    sentences = _english_sentences()
    leaks = []
    for role, texts in pages.items():
        for path, text in texts.items():
            leaks += [f"{role} {path}: {s!r}" for s in sentences if s in text]
            leaks += [f"{role} {path}: {line[:80]!r}" for line in text.splitlines()
                      if ENGLISH_REFUSALS.search(line) or line in MACHINE_VALUES]
    assert not leaks, "English on Japanese pages:\n" + "\n".join(sorted(set(leaks))[:60])


def _other_language(world: World, html: str, lang: str) -> list[str]:
    """Lines of the page in the wrong language: Japanese on an English page, English refusals on a Japanese one."""
    text = visible_text(html)
    if lang == "ja":
        return [line for line in text.splitlines() if ENGLISH_REFUSALS.search(line)]
    for word in sorted(world.data_words | set(ALLOWED_JAPANESE), key=len, reverse=True):
        text = text.replace(word, "")
    return [line for line in text.splitlines() if JAPANESE.search(line)]


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_pages_shown_after_a_form_speak_one_language(world: World, lang: str) -> None:
    """Confirmation, result and refusal pages that only a POST reaches."""
    admin = world.clients["system_admin"]
    page = admin.get(f"/admin/business-server-certificates/new?lang={lang}").get_data(as_text=True)
    token = csrf_token(page)
    form = dict(BUSINESS, csrf_token=token)
    confirm = admin.post("/admin/business-server-certificates/confirm", content_type="multipart/form-data",
                         data=dict(form, csr=(io.BytesIO(make_csr()), "server.csr")))
    refused = admin.post("/admin/business-server-certificates/confirm", content_type="multipart/form-data",
                         data=dict(form, top_url="http://x", csr=(io.BytesIO(b""), "")))
    register = admin.post("/admin/t/nishiedo/register", data={
        "csrf_token": token, "operator_id": "OP0700", "name": "x", "phone": "(03)", "business_ids": "05"})
    generated = admin.post("/admin/t/nishiedo/register", data={
        "csrf_token": token, "operator_id": "OP0701", "name": "x", "action": "generate", "business_ids": "05"})
    with world.app.app_context():
        from ca.models import Certificate
        from db import get_session

        cert_id = get_session().query(Certificate.id).order_by(Certificate.id.desc()).first()
    assert cert_id is not None
    revoke = admin.post(f"/admin/certificates/{cert_id[0]}/revoke/confirm",
                        data={"csrf_token": token, "reason": "keyCompromise"})
    pages = {"confirm": confirm, "refused": refused, "register": register, "generated": generated,
             "revoke": revoke}
    assert confirm.status_code == 200 and refused.status_code == 400 and register.status_code == 400
    leaks = {name: _other_language(world, r.get_data(as_text=True), lang) for name, r in pages.items()}
    assert not any(leaks.values()), leaks


@pytest.mark.parametrize(("lang", "expected"), [("ja", "団体コード"), ("en", "Organisation code")])
def test_a_refused_form_speaks_the_ui_language(world: World, lang: str, expected: str) -> None:
    admin = world.clients["system_admin"]
    page = admin.get(f"/admin/tenants?lang={lang}").get_data(as_text=True)
    response = admin.post("/admin/tenants", data={"csrf_token": csrf_token(page), "code": "Bad Code",
                                                  "name": "x", "kind": "voluntary"})
    text = visible_text(response.get_data(as_text=True))
    assert response.status_code == 400 and expected in text
    if lang == "ja":
        assert not ENGLISH_REFUSALS.search(text), text
    else:
        for word in sorted(world.data_words | set(ALLOWED_JAPANESE), key=len, reverse=True):
            text = text.replace(word, "")
        assert not JAPANESE.search(text), text


def test_api_errors_keep_a_stable_code_and_speak_the_requested_language(world: World) -> None:
    api = _api(world.app, "admin@system", ADMIN_PASSWORD)
    body = {"code": "Bad Code", "name": "x", "kind": "voluntary"}
    japanese = api.post("/api/v1/tenants", json=body)
    english = api.post("/api/v1/tenants", json=body, headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert japanese.status_code == english.status_code == 400
    assert japanese.get_json()["error"] == english.get_json()["error"] == "invalid_input"
    assert JAPANESE.search(japanese.get_json()["message"])
    assert not JAPANESE.search(english.get_json()["message"]), english.get_json()


def test_cli_errors_follow_the_shell_language(world: World) -> None:
    runner = world.app.test_cli_runner()
    unset = {"LC_ALL": None, "LC_MESSAGES": None}
    japanese = runner.invoke(args=["cert", "revoke", "ab", "--reason", "bogus"], env={"LANG": "ja_JP.UTF-8", **unset})
    english = runner.invoke(args=["cert", "revoke", "ab", "--reason", "bogus"], env={"LANG": "en_US.UTF-8", **unset})
    assert japanese.exit_code == english.exit_code == 2
    assert JAPANESE.search(japanese.output) and not JAPANESE.search(english.output), (japanese.output,
                                                                                       english.output)
