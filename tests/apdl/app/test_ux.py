"""What a user walk of the module found: logout at a shared counter, return to the page asked for, the UI
language at opauth, words instead of codes, local times, the form kept on a refusal, field messages that
name the real problem, and editing a 利用者."""

from __future__ import annotations

import html
import re
import urllib.parse
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from apdl import db, oplog
from apdl.emulator.stack import PcscStack
from apdl.models import OperationLog, Resident
from tests.apdl.app.conftest import Opauth, browser_for, login, served_apdl, submit
from tests.apdl.app.world import APS, build_registry, register_resident

TOKYO = ZoneInfo("Asia/Tokyo")
BASE = {"card_status": "active", "card_identifier": "5555555555555", "kana_family": "ヤマダ", "kana_given": "ハナコ",
        "kanji_family": "山田", "kanji_given": "花子", "birth_date": "3610602", "gender": "female",
        "postal_code": "100-0001", "address1": "東京都千代田区千代田１－１"}


def _finish_login(opauth: Opauth, client: FlaskClient, label: str, start: str = "/login") -> str:
    """Log ``client`` in from ``start``; the module's answer to the callback (where it sends the browser)."""
    authorize = client.get(start).headers["Location"]
    status, callback, page = browser_for(opauth, label).go(authorize)
    assert status == 302 and callback.startswith(opauth.apdl_base + "/auth/callback?"), (status, callback, page[:300])
    done = client.get(callback.removeprefix(opauth.apdl_base))
    assert done.status_code == 302
    return str(done.headers["Location"])


def _log(app: Flask) -> list[OperationLog]:
    with app.app_context():
        session = db.get_session()
        assert oplog.verify_chain(session) is None
        return list(session.scalars(select(OperationLog).order_by(OperationLog.id)))


def _text(response: object) -> str:
    return html.unescape(response.get_data(as_text=True))  # type: ignore[attr-defined]


# --- 1. logout at a shared counter terminal ends opauth's session too -------------------------------------

def test_module_logout_also_ends_the_opauth_session_so_the_next_login_asks_for_the_password(
        opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "counter")
    browser = browser_for(opauth, "counter")
    try:
        response = submit(client, "/", "/logout", {})
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location.startswith(opauth.issuer + "/logout?"), location
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        assert query["post_logout_redirect_uri"] == opauth.apdl_base + "/" and query["client_id"] == "biz-01"
        assert query["id_token_hint"].count(".") == 2  # the login's ID token
        assert client.get("/residents").headers["Location"] == "/login"  # the module's session is over
        with served_apdl(opauth, apdl_app):
            status, back, _page = browser.go(location)
            # opauth's logout also queues a back-channel logout for the module: delivered here, not in another test
            delivered = opauth.cli("oidc", "deliver-logouts", "--timeout", "5")
        assert (status, back) == (302, opauth.apdl_base + "/")  # opauth logged out and sent the browser back
        assert "1 logout tokens delivered, 0 failed" in delivered, delivered
        authorize = client.get("/login").headers["Location"]
        status, where, _page = browser.go(authorize)
        assert status == 302 and urllib.parse.urlsplit(where).path == "/login", where  # the password form
        assert "/auth/callback" not in where  # not a silent login
    finally:
        opauth.browsers.pop("counter", None)
    assert [e.action for e in _log(apdl_app)] == ["login", "logout"]


# --- 5. after the login, the page asked for; never another origin -----------------------------------------

def test_the_login_returns_to_the_page_first_asked_for(opauth: Opauth, apdl_app: Flask) -> None:
    client = apdl_app.test_client()
    assert client.get("/residents/fields?x=1").headers["Location"] == "/login"
    assert _finish_login(opauth, client, "minami") == "/residents/fields?x=1"
    other = apdl_app.test_client()
    assert _finish_login(opauth, other, "minami", "/login?next=/aps") == "/aps"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "https:evil",
                                    "/\r\nLocation: https://evil.example", "\t//evil.example", "/login",
                                    "javascript:x"])
def test_next_never_leaves_the_module(opauth: Opauth, apdl_app: Flask, target: str) -> None:
    client = apdl_app.test_client()
    start = "/login?" + urllib.parse.urlencode({"next": target})
    assert _finish_login(opauth, client, "minami", start) == "/"


def test_the_ui_language_goes_to_opauth_as_ui_locales(opauth: Opauth, apdl_app: Flask) -> None:
    client = apdl_app.test_client()
    for asked, expected in (("/login", "ja"), ("/login?lang=en", "en"), ("/login", "en")):  # the cookie remembers
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(client.get(asked).headers["Location"]).query))
        assert query["ui_locales"] == expected, asked


# --- 5. words, local times, plain parentheses in English ------------------------------------------------------

def test_card_status_in_words_holder_request_in_japan_time_and_plain_parentheses_in_english(
        opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    resident = register_resident(client, card="6666666666661")
    abolished = register_resident(client, card="6666666666662", card_status="abolished")
    page = client.get(f"/residents/{resident}?lang=ja").get_data(as_text=True)
    assert 'id="card-status">運用中<' in page and 'id="operator">操作者 minami（南江戸市）<' in page
    shown = re.search(r'id="holder-request">([^<]*)<', page).group(1)  # type: ignore[union-attr]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} JST", shown), shown
    at = datetime.strptime(shown.removesuffix(" JST"), "%Y-%m-%d %H:%M").replace(tzinfo=TOKYO)
    assert abs(datetime.now(TOKYO) - at) < timedelta(minutes=3)
    english = client.get(f"/residents/{abolished}?lang=en").get_data(as_text=True)
    assert 'id="card-status">Abolished<' in english and "abolished<" not in english
    assert 'id="operator">操作者 minami (南江戸市)<' in english and "（" not in english
    listing = client.get("/residents").get_data(as_text=True)
    assert "<td>Abolished</td>" in listing and "<td>In operation</td>" in listing  # the cookie keeps English
    japanese = client.get("/residents?lang=ja").get_data(as_text=True)
    assert "<td>廃止</td>" in japanese and "<td>active</td>" not in japanese


# --- 5. a refused 利用者 form keeps what was typed ------------------------------------------------------------

def test_a_refused_registration_shows_the_form_again_with_the_values_and_the_reason(
        opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    assert submit(client, "/residents/fields", "/residents/fields", {"label": "図書館番号"}).status_code == 302
    custom = re.search(r'name="(custom_\d+)"', client.get("/residents").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    typed = {**BASE, "birth_date": "3650101", "address2": "千代田ビル２階", "phone": "03-1234-5678",
             "email": "hanako@example.jp", "occupation": "会社員", "gender": "other", "card_status": "suspended",
             custom: "L-0042", "holder_request": "on"}
    response = submit(client, "/residents", "/residents", typed)
    page = _text(response)
    assert response.status_code == 400
    assert re.search(r'id="message">[^<]*昭和は64年までです', page), page[-1500:]
    for name in ("card_identifier", "kana_family", "kanji_given", "birth_date", "address1", "address2", "phone",
                 "email", "occupation", custom):
        assert f'name="{name}" value="{typed[name]}"' in page, name
    assert '<option value="other" selected>' in page and '<option value="suspended" selected>' in page
    assert 'name="holder_request" checked' in page
    with apdl_app.app_context():
        assert db.get_session().scalars(select(Resident)).first() is None  # nothing half written
    register_resident(client, card="5555555555555")
    duplicate = submit(client, "/residents", "/residents", {**typed, "birth_date": "3610602"})
    assert duplicate.status_code == 409 and 'value="L-0042"' in _text(duplicate)


# --- 3/4. messages that name the problem; control, bidi and private characters; phone numbers -----------------

@pytest.mark.parametrize(("field", "value"), [("kanji_family", "山\x00田"), ("kana_given", "ハナ\nコ"),
                                              ("address1", "千代田\u202e１－１"), ("address2", "ビル\u200b"),
                                              ("occupation", "会社員\ue000"), ("kanji_given", "花\x7f子")])
def test_refused_characters_are_named_as_such_not_as_a_length(opauth: Opauth, apdl_app: Flask, field: str,
                                                            value: str) -> None:
    client = login(opauth, apdl_app, "minami")
    response = submit(client, "/residents", "/residents", {**BASE, field: value})
    page = _text(response)
    assert response.status_code == 400
    assert "使用できない文字" in page and "文字以内" not in page, page[-800:]


@pytest.mark.parametrize("phone", ["+++", "--", "()", "03--1234", "-0312345678", "12", "03-1234-5678x",
                                   "０３ー１２３４", "+8131234567899999"])
def test_implausible_phone_numbers_are_refused(opauth: Opauth, apdl_app: Flask, phone: str) -> None:
    client = login(opauth, apdl_app, "minami")
    response = submit(client, "/residents", "/residents", {**BASE, "phone": phone})
    assert response.status_code == 400 and "電話番号" in _text(response), phone


def test_plausible_phone_numbers_are_kept(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    for n, phone in enumerate(["03-1234-5678", "(03)1234-5678", "+81-3-1234-5678", "09012345678",
                               "０３－１２３４－５６７８"]):
        resident = register_resident(client, card=f"888888888888{n}", phone=phone)
        with apdl_app.app_context():
            stored = db.get_session().get(Resident, resident)
            assert stored is not None and stored.phone == phone.replace("０３－１２３４－５６７８", "03-1234-5678")


def test_an_empty_preset_name_is_required_and_an_ap_description_refuses_controls(opauth: Opauth,
                                                                                 apdl_app: Flask) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")
    empty = submit(minami, "/presets", "/presets", {"name": "  ", "ap_ids": [str(registry.ids["E1"])]})
    assert empty.status_code == 400
    assert "プリセット名を入力してください" in _text(empty) and "100文字以内" not in _text(empty)
    nul = submit(minami, "/presets", "/presets", {"name": "a\x00b", "ap_ids": [str(registry.ids["E1"])]})
    assert nul.status_code == 400 and "使用できない文字" in _text(nul)
    admin = login(opauth, apdl_app, "admin")
    fields = {"aid": "D392F0000700", "name": "説明の確認", "provider_name": "南江戸市", "area": "extended",
              "ap_type": "C", "size_bytes": "100", "business_id": "05"}
    for bad in ("説明\x01", "説明\u202e", "\u2066説明", "説明\x00"):
        response = submit(admin, "/aps", "/aps", {**fields, "description": bad})
        assert response.status_code == 400 and "説明に使用できない文字" in _text(response), repr(bad)
    name = submit(admin, "/aps", "/aps", {**fields, "name": "名前\u202e"})
    assert name.status_code == 400 and "カードAP名に使用できない文字" in _text(name)
    ok = submit(admin, "/aps", "/aps", {**fields, "description": "一行目\r\n二行目"})  # a multi-line text
    assert ok.status_code == 302
    assert "一行目\n二行目" in admin.get("/aps").get_data(as_text=True)


def test_the_english_messages_say_the_same(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    client.get("/?lang=en")
    page = _text(submit(client, "/residents", "/residents", {**BASE, "kanji_family": "山\x00田"}))
    assert re.search(r"contains characters that are not allowed", page), page[-800:]
    page = _text(submit(client, "/residents", "/residents", {**BASE, "birth_date": "5010101"}))
    assert "2019-01-01 is outside the Reiwa era (Reiwa began on 2019-05-01)" in page, page[-800:]


# --- 6. editing a 利用者 --------------------------------------------------------------------------------------

def _edit_values(client: FlaskClient, resident: int) -> dict[str, str]:
    page = _text(client.get(f"/residents/{resident}/edit"))
    values = dict(re.findall(r'<input name="([a-z0-9_]+)" value="([^"]*)"', page))
    values["gender"] = re.search(r'<option value="(\w+)" selected>', page).group(1)  # type: ignore[union-attr]
    if re.search(r'name="holder_request" checked', page):
        values["holder_request"] = "on"
    return values


def test_a_forgotten_holder_request_is_recorded_by_editing_the_resident(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    assert submit(client, "/residents/fields", "/residents/fields", {"label": "図書館番号"}).status_code == 302
    resident = register_resident(client, card="9999999999991", holder_request=False)
    assert 'id="holder-request"><' in client.get(f"/residents/{resident}").get_data(as_text=True)
    assert submit(client, "/residents", "/residents", {**BASE, "card_identifier": "9999999999991"}).status_code == 409
    values = _edit_values(client, resident)
    assert values["kanji_family"] == "山田" and values["birth_date"] == "1986-06-02" and "holder_request" not in values
    assert "card_identifier" not in values  # the カードFID is shown, never edited
    custom = next(name for name in values if name.startswith("custom_"))
    changed = {**values, "address1": "東京都千代田区丸の内１－１", custom: "L-7", "holder_request": "on",
               "card_identifier": "1111111111111", "card_status": "abolished"}
    response = submit(client, f"/residents/{resident}/edit", f"/residents/{resident}/edit", changed)
    assert response.status_code == 302 and response.headers["Location"] == f"/residents/{resident}"
    page = client.get(f"/residents/{resident}").get_data(as_text=True)
    assert "丸の内" in page and "L-7" in page and re.search(r'id="holder-request">\d{4}-', page)
    assert 'id="card-identifier">9999999999991<' in page and 'id="card-status">運用中<' in page
    entry = _log(apdl_app)[-1]
    assert entry.action == "resident_updated" and entry.target == f"resident:{resident}"
    assert entry.detail == {"card": "9999999999991", "changed": ["address1", "custom"],
                            "holder_request": "confirmed"}
    assert "丸の内" not in str(entry.detail)  # the log names what changed, not the values


def test_withdrawing_the_holder_request_needs_a_confirmation(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    resident = register_resident(client, card="9999999999992")
    values = _edit_values(client, resident)
    assert values.pop("holder_request") == "on"
    refused = submit(client, f"/residents/{resident}/edit", f"/residents/{resident}/edit",
                     {**values, "address2": "変更は保存されない"})
    page = _text(refused)
    assert refused.status_code == 400 and "取消の確認" in page and 'value="変更は保存されない"' in page
    shown = client.get(f"/residents/{resident}").get_data(as_text=True)
    assert re.search(r'id="holder-request">\d{4}-', shown) and "変更は保存されない" not in shown
    done = submit(client, f"/residents/{resident}/edit", f"/residents/{resident}/edit",
                  {**values, "confirm_withdraw": "yes"})
    assert done.status_code == 302
    assert 'id="holder-request"><' in client.get(f"/residents/{resident}").get_data(as_text=True)
    assert _log(apdl_app)[-1].detail == {"card": "9999999999992", "changed": [], "holder_request": "withdrawn"}


def test_editing_checks_the_values_keeps_the_form_and_is_guarded(opauth: Opauth, apdl_app: Flask) -> None:
    minami = login(opauth, apdl_app, "minami")
    resident = register_resident(minami, card="9999999999993")
    values = _edit_values(minami, resident)
    for bad, message in (({"birth_date": "4320101"}, "平成は31年まで"), ({"phone": "+++"}, "電話番号"),
                         ({"address1": "千代田\u202e"}, "使用できない文字"),
                         ({"kana_family": ""}, "を入力してください")):
        response = submit(minami, f"/residents/{resident}/edit", f"/residents/{resident}/edit", {**values, **bad})
        page = _text(response)
        assert response.status_code == 400 and message in page, bad
        assert f'value="{values["address2"] or values["kanji_given"]}"' in page
    unchanged = submit(minami, f"/residents/{resident}/edit", f"/residents/{resident}/edit", values)
    assert unchanged.status_code == 302 and _log(apdl_app)[-1].action == "resident_registered"  # nothing to log
    no_token = minami.post(f"/residents/{resident}/edit", data={**values, "address1": "無効"})
    assert no_token.status_code == 400  # CSRF
    kita = login(opauth, apdl_app, "kita")  # another tenant: the 利用者 does not exist for it
    assert kita.get(f"/residents/{resident}/edit").status_code == 404
    assert submit(kita, "/residents", f"/residents/{resident}/edit", values).status_code == 404
    admin = login(opauth, apdl_app, "admin")  # no user.register
    assert admin.get(f"/residents/{resident}/edit").status_code == 403
    assert "無効" not in minami.get(f"/residents/{resident}").get_data(as_text=True)


@pytest.mark.pcsc
def test_after_the_holder_request_is_added_by_an_edit_the_download_goes_through(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    resident = register_resident(client, holder_request=False)
    page = f"/residents/{resident}"
    ap = {"ap_ids": [str(registry.ids["E1"])]}
    refused = submit(client, page, f"{page}/card/download", ap)
    assert refused.status_code == 403 and "本人の申出が記録されていません" in _text(refused)
    assert card_stack.card.installed() == set()
    values = {**_edit_values(client, resident), "holder_request": "on"}
    assert submit(client, f"{page}/edit", f"{page}/edit", values).status_code == 302
    loaded = submit(client, page, f"{page}/card/download", ap)
    assert loaded.status_code == 302, _text(loaded)[-500:]
    assert card_stack.card.installed() == {APS["E1"][0]}


def test_the_menu_offers_pairing_a_terminal_only_when_cards_go_through_agents(opauth: Opauth,
                                                                             apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    assert 'id="nav-terminal"' not in client.get("/").get_data(as_text=True)  # the server's own reader
    apdl_app.config.update(CARD_TRANSPORT="agent")
    assert 'id="nav-terminal" href="/terminal"' in client.get("/").get_data(as_text=True)


def test_a_refused_form_post_says_which_check_failed(opauth: Opauth, apdl_app: Flask) -> None:
    """Over HTTPS the form check also wants the Referer: a browser or proxy that drops it is told so, not that
    the page expired; a post from another site is named as such; a missing token is the expired page."""
    client = login(opauth, apdl_app, "admin")
    page = client.get("/terminals", base_url="https://localhost").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    form = {"csrf_token": token.group(1), "name": "desk", "organization": "センター"}

    def refused(**headers: str) -> str:
        response = client.post("/terminals", data=form, base_url="https://localhost", headers=headers)
        assert response.status_code == 400
        return html.unescape(response.get_data(as_text=True))

    assert "Referer ヘッダ" in refused() and "有効期限" not in refused()
    assert "他のサイトのページからの送信" in refused(Referer="https://evil.example/terminals")
    response = client.post("/terminals", data={"name": "desk"}, base_url="https://localhost",
                           headers={"Referer": "https://localhost/terminals"})
    assert response.status_code == 400 and "有効期限が切れました" in html.unescape(response.get_data(as_text=True))
    english = client.post("/terminals?lang=en", data=form, base_url="https://localhost")
    assert english.status_code == 400 and "Referer" in english.get_data(as_text=True)
    with apdl_app.app_context():
        assert db.get_session().scalars(select(OperationLog).where(
            OperationLog.action == "terminal_registered")).first() is None  # nothing was written
