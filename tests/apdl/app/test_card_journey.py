"""An operator logged in through opauth registers a 利用者, creates the regional area, loads three APs
through pyscard → pcscd → vpcd → the emulated card (management under SCP03 with the module's keys), sees
them in GET STATUS and deletes one; the rules refuse before the card is touched, and a refused INSTALL
leaves nothing recorded as installed."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from sqlalchemy import select

from apdl import db, oplog
from apdl.card.adapter import GlobalPlatformCardSession
from apdl.card.commands import INS_INSTALL
from apdl.card.commands import Area as CardArea
from apdl.card.diversification import MasterKeys
from apdl.card.pcsc import PcscTransport
from apdl.card.scp03 import StaticKeys
from apdl.emulator.card import CardState
from apdl.emulator.stack import PcscStack
from apdl.models import Installation, InstallState, OperationLog
from tests.apdl.app.conftest import Opauth, issued_card, login, submit
from tests.apdl.app.world import APS, build_registry, register_resident

pytestmark = pytest.mark.pcsc

STANDARD_AIDS = {"A000000151000000", "D392F0000101", "D392F0000102"}  # card manager and the two areas


def _card_aps(stack: PcscStack) -> set[str]:
    """GET STATUS through a second, independent pyscard session: the APs on the card."""
    transport = PcscTransport(stack.reader)
    keys = stack.card.state.scp03_keys
    try:
        entries = GlobalPlatformCardSession(transport, keys=StaticKeys.from_hex(keys) if keys else None).list_apps()
    finally:
        transport.close()
    return {e.aid.hex().upper() for e in entries} - STANDARD_AIDS


def _installations(app: Flask) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.get_session().scalars(select(Installation).order_by(Installation.id))
        return [(r.state, r.user_id_in_ap) for r in rows]


def _actions(app: Flask) -> list[str]:
    with app.app_context():
        session = db.get_session()
        assert oplog.verify_chain(session) is None
        return [e.action for e in session.scalars(select(OperationLog).order_by(OperationLog.id))]


def test_register_create_area_load_three_list_and_delete(opauth: Opauth, apdl_app: Flask,
                                                         card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    resident = register_resident(client)
    page = f"/residents/{resident}"
    read = submit(client, page, f"{page}/card/read", {})
    assert read.status_code == 200 and 'id="regional">なし<' in read.get_data(as_text=True)
    assert "カードを読み取りました。" in read.get_data(as_text=True)
    assert submit(client, page, f"{page}/card/regional-area", {}).status_code == 302
    assert "地域住民向け領域を設定しました。" in client.get(page).get_data(as_text=True)
    chosen = ["R1", "E1", "E2"]
    response = submit(client, page, f"{page}/card/download",
                      {"ap_ids": [str(registry.ids[label]) for label in chosen], "pin": "2580"})
    assert response.status_code == 302, response.get_data(as_text=True)[-500:]
    expected = {APS[label][0] for label in chosen}
    assert _card_aps(card_stack) == expected == card_stack.card.installed()
    assert card_stack.card.installed(CardArea.REGIONAL) == {APS["R1"][0]}
    rows = _installations(apdl_app)
    assert [state for state, _ in rows] == ["installed"] * 3
    assert len({user_id for _, user_id in rows}) == 3 and all(re.fullmatch(r"[0-9A-F]{16}", u) for _, u in rows)
    shown = submit(client, page, f"{page}/card/read", {}).get_data(as_text=True)
    assert all(APS[label][0] in shown for label in chosen) and 'id="regional">あり<' in shown
    assert "https://perso.example.jp/p" in shown  # 利用者情報登録 leads to the AP's personalisation URL
    with apdl_app.app_context():
        logged = str([e.detail for e in db.get_session().scalars(select(OperationLog))])
    assert "2580" not in logged

    with apdl_app.app_context():
        e1 = db.get_session().scalars(select(Installation).where(
            Installation.card_ap_id == registry.ids["E1"])).one().id
    commands = card_stack.card.commands
    unconfirmed = submit(client, page, f"{page}/card/installations/{e1}/delete", {})  # the 利用者 page's button
    question = unconfirmed.get_data(as_text=True)
    assert unconfirmed.status_code == 200 and "カードAP削除の確認" in question and APS["E1"][1] in question
    assert 'name="confirm" value="yes"' in question and 'id="confirm-back"' in question
    assert card_stack.card.commands == commands  # asking sent no APDU
    assert APS["E1"][0] in _card_aps(card_stack) and "ap_deleted" not in _actions(apdl_app)
    deleted = submit(client, page, f"{page}/card/installations/{e1}/delete", {"confirm": "yes"})
    assert deleted.status_code == 302
    assert _card_aps(card_stack) == {APS["R1"][0], APS["E2"][0]}
    assert f"カードAP「{APS['E1'][1]}」を削除しました。" in client.get(page).get_data(as_text=True)
    actions = _actions(apdl_app)
    assert actions.count("ap_installed") == 3 and "regional_area_created" in actions and "ap_deleted" in actions


def test_a_municipality_where_the_holder_does_not_live_may_not_touch_the_regional_area(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    kita = login(opauth, apdl_app, "kita")
    resident = register_resident(kita)
    page = f"/residents/{resident}"
    refused = submit(kita, page, f"{page}/card/regional-area", {})
    assert refused.status_code == 403 and "住所地の市町村" in refused.get_data(as_text=True)
    assert f'id="back-resident" href="{page}"' in refused.get_data(as_text=True)  # back to the 利用者, not the top
    card_stack.card.load_state(issued_card(apdl_app, regional_created=True))  # created by the residence municipality
    offered = submit(kita, page, f"{page}/card/read", {}).get_data(as_text=True)
    assert APS["E1"][1] in offered and APS["R1"][1] not in offered  # the table offers only what it may load
    refused = submit(kita, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["R1"])]})
    assert refused.status_code == 403
    assert _card_aps(card_stack) == set() and _installations(apdl_app) == []
    allowed = submit(kita, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"])]})
    assert allowed.status_code == 302 and _card_aps(card_stack) == {APS["E1"][0]}
    not_offered = submit(kita, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E3"])]})
    assert not_offered.status_code == 404  # an AP not available to this tenant does not exist for it
    assert f'id="back-resident" href="{page}"' in not_offered.get_data(as_text=True)  # the 利用者 is its own
    missing = submit(kita, page, "/residents/999999/card/read", {})  # another tenant's id reads the same
    assert missing.status_code == 404 and 'id="back-resident"' not in missing.get_data(as_text=True)


def test_not_enough_memory_from_the_card_records_nothing_as_installed(opauth: Opauth, apdl_app: Flask,
                                                                      card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(client)}"
    card_stack.card.force_status(0x6A84, ins=0xE6)
    response = submit(client, page, f"{page}/card/download",
                      {"ap_ids": [str(registry.ids[label]) for label in ("E1", "E3")]})
    assert response.status_code == 403 and "空き容量" in response.get_data(as_text=True)
    assert _card_aps(card_stack) == set()
    assert [state for state, _ in _installations(apdl_app)] == [InstallState.FAILED]
    assert "ap_install_failed" in _actions(apdl_app)


def test_a_selection_that_does_not_fit_the_free_space_is_refused_before_any_install(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    card_stack.card.load_state(issued_card(apdl_app, extended_quota=3000))
    client = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(client)}"
    response = submit(client, page, f"{page}/card/download",
                      {"ap_ids": [str(registry.ids[label]) for label in ("E1", "E3")]})
    assert response.status_code == 403
    assert _card_aps(card_stack) == set() and _installations(apdl_app) == []


def test_refusals_before_the_card_is_touched(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(client)}"
    e2 = str(registry.ids["E2"])
    assert submit(client, page, f"{page}/card/download", {"ap_ids": [e2]}).status_code == 400  # type A needs a PIN
    assert submit(client, page, f"{page}/card/download", {"ap_ids": []}).status_code == 400
    assert submit(client, page, f"{page}/card/download", {"ap_ids": ["x"]}).status_code == 400
    no_request = f"/residents/{register_resident(client, card='9999999999999', holder_request=False)}"
    assert submit(client, no_request, f"{no_request}/card/download", {"ap_ids": [e2], "pin": "1234"}).status_code == 403
    other_card = f"/residents/{register_resident(client, card='5555555555555')}"
    mismatch = submit(client, other_card, f"{other_card}/card/download", {"ap_ids": [e2], "pin": "1234"})
    assert mismatch.status_code == 409  # the card in the reader is not this holder's
    reader = login(opauth, apdl_app, "reader")  # user.register only
    assert submit(reader, page, f"{page}/card/download", {"ap_ids": [e2], "pin": "1234"}).status_code == 403
    assert "refused" in _actions(apdl_app)
    assert _card_aps(card_stack) == set()


def test_an_automatic_preset_skips_the_selection_and_loads_its_aps(opauth: Opauth, apdl_app: Flask,
                                                                    card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    preset = {"name": "転入セット", "ap_ids": [str(registry.ids["E1"]), str(registry.ids["E3"])], "auto_load": "on"}
    assert submit(client, "/presets", "/presets", preset).status_code == 302
    page = f"/residents/{register_resident(client)}"
    shown = client.get(page).get_data(as_text=True)
    assert 'id="offered"' not in shown and "転入セット" in shown
    response = submit(client, page, f"{page}/card/download", {"preset": "auto"})
    assert response.status_code == 302, response.get_data(as_text=True)[-400:]
    assert _card_aps(card_stack) == {APS["E1"][0], APS["E3"][0]}
    with apdl_app.app_context():
        rows = {r.card_ap_id: r for r in db.get_session().scalars(select(Installation))}
    standard = rows[registry.ids["E3"]].standard_id  # 避難所受付 asks for a 標準ID, 健康ポイント does not
    assert standard is not None and re.fullmatch(r"131016[0-9]{10}", standard)
    assert rows[registry.ids["E1"]].standard_id is None
    assert standard in client.get(page).get_data(as_text=True)


def test_a_card_with_other_scp03_keys_is_not_managed(opauth: Opauth, apdl_app: Flask,
                                                      card_stack: PcscStack) -> None:
    """The module's master keys open the secure channel only with cards issued from them: another issuer's
    card's cryptogram does not verify, so nothing is installed (a 502, not a crash)."""
    registry = build_registry(opauth, apdl_app)
    card_stack.card.load_state(CardState.issued(MasterKeys.generate()))
    client = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(client)}"
    response = submit(client, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"])]})
    assert response.status_code == 502
    assert card_stack.card.installed() == set() and _installations(apdl_app) == []


def test_an_install_whose_answer_fails_its_r_mac_is_not_recorded_as_installed(opauth: Opauth, apdl_app: Flask,
                                                                              card_stack: PcscStack) -> None:
    """Under R-MAC + R-ENCRYPTION an altered answer to INSTALL is a clear card error (502): the row stays
    pending, never installed, and the refusal is in the operation log; the next contact settles the row
    from an authenticated GET STATUS."""
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(client)}"
    card_stack.card.alter_answers(ins=INS_INSTALL)
    response = submit(client, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"])]})
    assert response.status_code == 502
    assert [state for state, _ in _installations(apdl_app)] == ["pending"]
    assert "ap_installed" not in _actions(apdl_app) and "refused" in _actions(apdl_app)
    with apdl_app.app_context():
        refusal = db.get_session().scalars(select(OperationLog).where(OperationLog.action == "refused")).all()[-1]
    assert "wrong R-MAC" in refusal.detail["reason"]
    assert submit(client, page, f"{page}/card/read", {}).status_code == 200  # a fresh, good session settles it
    assert [state for state, _ in _installations(apdl_app)] == ["installed"]
