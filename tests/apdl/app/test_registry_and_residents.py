"""カードAP管理 and 利用者登録 through the module's forms, and the tenancy guard over every route."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.apdl.app.conftest import Opauth, csrf, login, submit
from tests.apdl.app.world import APS, build_registry, register_ap, register_resident


@pytest.mark.parametrize("aid", ["D392F0000", "D392F000", "D392F00002000100112233445566778899", "D392F0000Z",
                                 "A000000151000000", ""])
def test_invalid_or_reserved_aids_are_refused(opauth: Opauth, apdl_app: Flask, aid: str) -> None:
    admin = login(opauth, apdl_app, "admin")
    response = submit(admin, "/aps", "/aps", {"aid": aid, "name": "x", "provider_name": "p", "area": "extended",
                                              "ap_type": "C", "size_bytes": "100", "business_id": "05"})
    assert response.status_code == 400 and "AID" in response.get_data(as_text=True)


def test_a_duplicate_aid_is_refused_and_other_fields_are_checked(opauth: Opauth, apdl_app: Flask) -> None:
    admin = login(opauth, apdl_app, "admin")
    register_ap(admin, "E1")
    base = {"aid": APS["E1"][0].lower(), "name": "again", "provider_name": "p", "area": "extended",
            "ap_type": "C", "size_bytes": "100", "business_id": "05"}
    assert submit(admin, "/aps", "/aps", base).status_code == 409
    for bad in ({"area": "both"}, {"ap_type": "D"}, {"size_bytes": "0"}, {"size_bytes": "70000"},
                {"business_id": "5"}, {"name": ""}, {"personalize_url": "http://x"}):
        response = submit(admin, "/aps", "/aps", {**base, "aid": "D392F0000400", **bad})
        assert response.status_code == 400, bad


def test_withdrawn_aps_leave_every_tenants_list(opauth: Opauth, apdl_app: Flask) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")
    assert APS["E3"][0] in minami.get("/aps").get_data(as_text=True)
    admin = login(opauth, apdl_app, "admin")
    ap = registry.ids["E3"]
    assert submit(admin, f"/aps/{ap}", f"/aps/{ap}/withdraw", {}).status_code == 302
    assert "廃止" in admin.get(f"/aps/{ap}").get_data(as_text=True)
    assert APS["E3"][0] not in minami.get("/aps").get_data(as_text=True)
    assert minami.get(f"/aps/{ap}").status_code == 404


def test_tenant_profiles_need_a_valid_municipality_code(opauth: Opauth, apdl_app: Flask) -> None:
    admin = login(opauth, apdl_app, "admin")
    for fields in ({"tenant_code": "minamiedo", "kind": "municipality", "municipality_code": "131017"},
                   {"tenant_code": "minamiedo", "kind": "municipality", "municipality_code": ""},
                   {"tenant_code": "Bad Code", "kind": "voluntary"}, {"tenant_code": "x", "kind": "empire"}):
        assert submit(admin, "/tenants", "/tenants", fields).status_code == 400, fields
    ok = submit(admin, "/tenants", "/tenants", {"tenant_code": "minamiedo", "kind": "municipality",
                                                 "municipality_code": "131016"})
    assert ok.status_code == 302


def test_registry_screens_are_the_admin_tenants_only(opauth: Opauth, apdl_app: Flask) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")  # ap.manage, but not in the admin tenant: the screens do not exist
    assert minami.get("/tenants").status_code == 404
    assert minami.get("/tenants/minamiedo").status_code == 404
    assert submit(minami, "/aps", "/aps", {"aid": "D392F0000500", "name": "x"}).status_code == 404
    ap = registry.ids["E1"]
    assert submit(minami, f"/aps/{ap}", f"/aps/{ap}/withdraw", {}).status_code == 404
    assert submit(minami, "/aps", "/tenants/minamiedo/availability", {"action": "add"}).status_code == 404
    kita = login(opauth, apdl_app, "kita")  # no ap.manage at all
    assert kita.get("/tenants").status_code == 403 and kita.get("/presets").status_code == 403


def test_presets_belong_to_their_tenant_and_refuse_aps_it_may_not_load(opauth: Opauth, apdl_app: Flask) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")
    ids = registry.ids
    ok = submit(minami, "/presets", "/presets", {"name": "転入セット", "ap_ids": [str(ids["E1"]), str(ids["E3"])],
                                                 "auto_load": "on"})
    assert ok.status_code == 302
    page = minami.get("/presets").get_data(as_text=True)
    assert "転入セット" in page and "健康ポイント、避難所受付" in page
    assert submit(minami, "/presets", "/presets", {"name": "転入セット", "ap_ids": [str(ids["E1"])]}).status_code == 409
    assert submit(minami, "/presets", "/presets", {"name": "空", "ap_ids": []}).status_code == 400
    admin = login(opauth, apdl_app, "admin")
    assert submit(admin, f"/aps/{ids['E3']}", f"/aps/{ids['E3']}/withdraw", {}).status_code == 302
    refused = submit(minami, "/presets", "/presets", {"name": "廃止を含む", "ap_ids": [str(ids["E3"])]})
    assert refused.status_code == 404  # a withdrawn AP is not this tenant's to choose any more
    preset_id = re.search(r'action="/presets/(\d+)/delete"', page).group(1)  # type: ignore[union-attr]
    assert submit(admin, "/", f"/presets/{preset_id}/delete", {}).status_code == 404  # another tenant's preset
    assert submit(minami, "/presets", f"/presets/{preset_id}/delete", {}).status_code == 302
    assert "転入セット" not in minami.get("/presets").get_data(as_text=True)


def test_resident_fields_are_checked_and_no_individual_number_is_stored(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    resident = register_resident(client, card="1111111111111", birth_date="1986-06-02")
    page = client.get(f"/residents/{resident}").get_data(as_text=True)
    assert "山田 花子" in page and "1986-06-02" in page
    for bad in ({"kana_family": "やまだ"}, {"kanji_family": "Yamada"}, {"postal_code": "1000001x"},
                {"birth_date": "1986/06/02"}, {"gender": "x"}, {"card_status": "lost"}, {"card_identifier": "12ab"},
                {"address2": "番号 123456789018"}, {"occupation": "123456789018"}, {"email": "no-at-sign"}):
        response = submit(client, "/residents", "/residents",
                          {"card_status": "active", "card_identifier": "2222222222222", "kana_family": "ヤマダ",
                           "kana_given": "ハナコ", "kanji_family": "山田", "kanji_given": "花子",
                           "birth_date": "3610602", "gender": "female", "postal_code": "100-0001",
                           "address1": "千代田１", **bad})
        assert response.status_code == 400, bad
    duplicate = submit(client, "/residents", "/residents", {
        "card_status": "active", "card_identifier": "1111111111111", "kana_family": "ヤマダ", "kana_given": "タロウ",
        "kanji_family": "山田", "kanji_given": "太郎", "birth_date": "3610602", "gender": "male",
        "postal_code": "1000001", "address1": "千代田１"})
    assert duplicate.status_code == 409


def test_up_to_twenty_tenant_items_and_the_twenty_first_is_refused(opauth: Opauth, apdl_app: Flask) -> None:
    client = login(opauth, apdl_app, "minami")
    for n in range(1, 21):
        response = submit(client, "/residents/fields", "/residents/fields", {"label": f"項目{n}", "max_length": "20"})
        assert response.status_code == 302, n
    refused = submit(client, "/residents/fields", "/residents/fields", {"label": "項目21"})
    assert refused.status_code == 400 and "20" in refused.get_data(as_text=True)
    form = client.get("/residents").get_data(as_text=True)
    names = re.findall(r'name="(custom_\d+)"', form)
    assert len(names) == 20
    resident = register_resident(client, card="3333333333333", **{names[0]: "図書館利用", names[1]: "x" * 20})
    assert "図書館利用" in client.get(f"/residents/{resident}").get_data(as_text=True)
    too_long = submit(client, "/residents", "/residents", {names[0]: "x" * 21, "card_identifier": "4444444444444"})
    assert too_long.status_code == 400
    kita = login(opauth, apdl_app, "kita")  # another tenant's items are not theirs
    assert 'name="custom_' not in kita.get("/residents").get_data(as_text=True)


def test_another_tenant_reaches_none_of_this_tenants_objects(opauth: Opauth, apdl_app: Flask) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")
    resident = register_resident(minami, card="7777777777777")
    kita = login(opauth, apdl_app, "kita")
    assert "7777777777777" not in kita.get("/residents").get_data(as_text=True)
    assert "7777777777777" not in kita.get("/residents?card=7777777777777").get_data(as_text=True)
    token_page = "/residents"
    paths = {rule.rule for rule in apdl_app.url_map.iter_rules() if "resident_id" in rule.arguments}
    assert paths, "no per-resident routes"
    for rule in sorted(paths):
        path = rule.replace("<int:resident_id>", str(resident)).replace("<int:installation_id>", "1")
        methods = {m for rule_ in apdl_app.url_map.iter_rules() if rule_.rule == rule for m in rule_.methods or ()}
        response = (submit(kita, token_page, path, {"ap_ids": [str(registry.ids["E1"])], "confirm": "yes"})
                    if "POST" in methods else kita.get(path))
        assert response.status_code == 404, (rule, response.status_code)
    assert kita.get(f"/aps/{registry.ids['E3']}").status_code == 404  # not available to 北江戸市
    assert kita.get(f"/aps/{registry.ids['E1']}").status_code == 200
    assert minami.get(f"/residents/{resident}").status_code == 200


def test_nul_bytes_and_oversized_values_get_a_4xx_never_a_500(opauth: Opauth, apdl_app: Flask) -> None:
    admin = login(opauth, apdl_app, "admin")
    assert admin.get("/tenants/bad%00code").status_code == 404
    assert admin.get("/tenants/" + "x" * 300).status_code == 404
    assert submit(admin, "/aps", "/aps", {"aid": "D392F00006\x00", "name": "x"}).status_code == 400
    assert submit(admin, "/aps", "/aps", {"aid": "D392F0000600", "name": "x\x00", "provider_name": "p",
                                          "area": "extended", "ap_type": "C", "size_bytes": "9" * 50,
                                          "business_id": "05"}).status_code == 400
    minami = login(opauth, apdl_app, "minami")
    register_resident(minami)
    assert "/residents/" in minami.get("/residents").get_data(as_text=True).split('id="residents"')[1]
    for mistyped in ("%00", "abc", "12-34", "9" * 40):  # a search that cannot match lists no one
        answer = minami.get(f"/residents?card={mistyped}")
        assert answer.status_code == 400 and 'id="search-error"' in answer.get_data(as_text=True)
        assert "/residents/" not in answer.get_data(as_text=True).split('id="residents"')[1].split("</table>")[0]
    surrogate = minami.get("/residents?card=%ED%A0%80")  # not UTF-8: refused before any view, no one listed
    assert surrogate.status_code == 400 and "UTF-8" in surrogate.get_data(as_text=True)
    assert "/residents/" not in surrogate.get_data(as_text=True)
    assert minami.get("/residents/99999999999999999999").status_code == 404
    assert submit(minami, "/presets", "/presets", {"name": "a\x00b", "ap_ids": ["1"]}).status_code == 400
    assert submit(minami, "/presets", "/presets", {"name": "a", "ap_ids": ["9" * 40]}).status_code == 400
    assert submit(minami, "/residents/fields", "/residents/fields", {"label": "\x00"}).status_code == 400
    assert minami.get("/auth/callback?state=%00&code=%00").status_code == 400


def test_form_fields_that_are_not_utf8_are_refused_never_stored_as_escapes(opauth: Opauth,
                                                                           apdl_app: Flask) -> None:
    minami = login(opauth, apdl_app, "minami")
    token = csrf(minami.get("/residents").get_data(as_text=True))
    fields = (f"csrf_token={token}&card_status=active&card_identifier=1234567890123456&kana_family=%E3%83%A4"
              "&kana_given=%E3%83%8F&kanji_family=%E5%B1%B1&kanji_given=%E8%8A%B1&birth_date=3610602&gender=female"
              "&postal_code=100-0001&address2=&phone=03-1234-5678&email=hanako%40example.jp&occupation=")
    for address in ("%E5%B8%82%ED%A0%80", "a%FFb"):  # werkzeug kept these escapes as the text "%ED%A0%80"
        response = minami.post("/residents", data=f"{fields}&address1={address}",
                               content_type="application/x-www-form-urlencoded")
        assert response.status_code == 400, (address, response.status_code)
        assert "フォームの入力が正しい UTF-8 ではありません。" in response.get_data(as_text=True)
    multipart = (f'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'.encode()
                 + b'--b\r\nContent-Disposition: form-data; name="address1"\r\n\r\na\xffb\r\n--b--\r\n')
    response = minami.post("/residents", data=multipart, content_type="multipart/form-data; boundary=b")
    assert response.status_code == 400 and "UTF-8" in response.get_data(as_text=True)
    listed = minami.get("/residents").get_data(as_text=True).split('id="residents"')[1].split("</table>")[0]
    assert "/residents/" not in listed  # no one was registered
    accepted = minami.post("/residents", data=f"{fields}&address1=%E5%B8%82",  # 市, percent-encoded UTF-8
                           content_type="application/x-www-form-urlencoded")
    assert accepted.status_code == 302, accepted.get_data(as_text=True)[-600:]


def test_the_resident_search_finds_one_card_of_this_tenant_only(opauth: Opauth, apdl_app: Flask) -> None:
    minami, kita = login(opauth, apdl_app, "minami"), login(opauth, apdl_app, "kita")
    first = register_resident(minami, card="3333333333331")
    second = register_resident(minami, card="3333333333332", kanji_given="次郎", kana_given="ジロウ")
    other = register_resident(kita, card="3333333333333")

    def listed(client: FlaskClient, query: str) -> list[int]:
        page = client.get(f"/residents{query}").get_data(as_text=True)
        return [int(n) for n in re.findall(r'href="/residents/(\d+)"', page)]

    everyone = listed(minami, "")
    assert everyone.index(second) < everyone.index(first) and other not in everyone  # newest first, own tenant
    assert listed(minami, "?card=3333333333331") == [first]
    assert listed(minami, "?card=3333333333333") == []  # another tenant's card
    assert listed(kita, "?card=3333333333333") == [other]
    assert listed(minami, "?card=%27%20OR%201%3D1") == []  # not digits: no one (400), never the plain list
    assert minami.get("/residents?card=%27%20OR%201%3D1").status_code == 400


def _flashes(page: str) -> str:
    found = re.search(r'<div id="flashes">(.*?)</div>', page, re.S)
    assert found, page[:500]
    return found.group(1)


def test_registering_a_resident_and_changing_availability_say_what_was_done(opauth: Opauth,
                                                                             apdl_app: Flask) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")
    resident = register_resident(minami)
    assert "利用者を登録しました（カードFID: " in _flashes(minami.get(f"/residents/{resident}").get_data(as_text=True))
    minami.get("/?lang=en")
    other = register_resident(minami, card="1234567890124")
    assert "Registered the card holder (card FID: 1234567890124)." in _flashes(
        minami.get(f"/residents/{other}").get_data(as_text=True))

    admin = login(opauth, apdl_app, "admin")
    page, action = "/tenants/kitaedo", "/tenants/kitaedo/availability"
    e3 = str(registry.ids["E3"])
    added = submit(admin, page, action, {"action": "add", "add_ids": [e3]})
    assert added.status_code == 302
    shown = admin.get(page).get_data(as_text=True)
    assert "選択したカードAPをダウンロード可能にしました。" in _flashes(shown)
    removed = submit(admin, page, action, {"action": "remove", "remove_ids": [e3]})
    assert removed.status_code == 302
    assert "ダウンロード可能APから外しました" in _flashes(admin.get(page).get_data(as_text=True))
    for form in ({"add_ids": [e3]}, {"action": "both", "add_ids": [e3]}, {"action": ""}):
        refused = submit(admin, page, action, form)
        assert refused.status_code == 400 and "を押してください" in refused.get_data(as_text=True), form
    available = re.search(r'id="available">(.*?)</select>', admin.get(page).get_data(as_text=True), re.S)
    assert available and APS["E3"][0] not in available.group(1)  # the refused posts changed nothing
    admin.get("/?lang=en")
    refused = submit(admin, page, action, {})
    assert refused.status_code == 400 and "Press" in refused.get_data(as_text=True)
    assert submit(admin, page, action, {"action": "add"}).status_code == 302
    assert "No card AP was selected" in _flashes(admin.get(page).get_data(as_text=True))
