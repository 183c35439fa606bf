"""即時停止 and the feed's card states on the real path (pyscard → pcscd → vpcd → emulated card): a stopped, lost
or stolen card is refused before the first APDU; a cancel is audited and lets the next operation run; a move
deletes the regional APs at the card's next contact and keeps the extended ones."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from apdl import db
from apdl.card.commands import Area as CardArea
from apdl.emulator.stack import PcscStack
from apdl.models import Installation, InstallState
from tests.apdl.app.conftest import SAPPORO, Opauth, issued_card, login, submit
from tests.apdl.app.status_feed import csv_feed, import_status, log_entries
from tests.apdl.app.world import APS, CARD, build_registry, register_resident

pytestmark = pytest.mark.pcsc


def _installations(app: Flask) -> list[tuple[str, int, str]]:
    with app.app_context():
        rows = db.get_session().scalars(select(Installation).order_by(Installation.id))
        return [(r.tenant_code, r.card_ap_id, r.state) for r in rows]


def confirm(client: FlaskClient, page: str, action: str, fields: dict[str, str]) -> Any:
    """Post ``action`` as the 利用者 page does (which shows the confirmation), then 「実行する」 on that page."""
    shown = submit(client, page, action, fields)
    assert shown.status_code == 200 and 'id="confirm-yes"' in shown.get_data(as_text=True), shown.status_code
    token = re.search(r'name="csrf_token" value="([^"]+)"', shown.get_data(as_text=True)).group(1)  # type: ignore
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', shown.get_data(as_text=True)))
    return client.post(action, data={**form, "csrf_token": token, "confirm": "yes"})


def test_an_immediate_stop_refuses_the_next_operation_before_any_apdu_and_a_cancel_lifts_it(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")  # ap.manage: a service provider
    resident = register_resident(minami)
    page = f"/residents/{resident}"
    e1 = str(registry.ids["E1"])
    empty = submit(minami, page, f"{page}/card/stop", {"reason": ""})  # a reason is required, and said so
    assert empty.status_code == 400 and "理由を入力してください。" in empty.get_data(as_text=True)
    reader = login(opauth, apdl_app, "reader")  # no ap.manage
    assert submit(reader, page, f"{page}/card/stop", {"reason": "紛失の申出"}).status_code == 403
    kita = login(opauth, apdl_app, "kita")  # another tenant: the 利用者 does not exist for it
    assert submit(kita, "/residents", f"{page}/card/stop", {"reason": "x"}).status_code == 404
    asked = submit(minami, page, f"{page}/card/stop", {"reason": "本人から紛失の申出"})  # no confirm=yes: a question
    assert asked.status_code == 200 and "本人から紛失の申出" in asked.get_data(as_text=True)
    assert "即時停止の確認" in asked.get_data(as_text=True) and 'value="yes"' in asked.get_data(as_text=True)
    assert "card_stopped" not in [a for a, _, _ in log_entries(apdl_app)] and 'id="stop"' in minami.get(page).text
    assert confirm(minami, page, f"{page}/card/stop", {"reason": "本人から紛失の申出"}).status_code == 302
    shown = minami.get(page).get_data(as_text=True)
    assert "即時停止中（理由: 本人から紛失の申出）" in shown and 'id="cancel-stop"' in shown
    assert "カードを即時停止しました。" in shown and 'id="flashes"' in shown  # said once, after the redirect
    assert "カードを即時停止しました。" not in minami.get(page).get_data(as_text=True)
    assert 'id="card-blocked"' in shown and "即時停止されています（理由: 本人から紛失の申出）" in shown
    for button in ('id="reload"', 'id="regional-area"', 'id="download"', "/delete"):
        assert button not in shown

    assert card_stack.card.commands == 0
    refused = submit(minami, page, f"{page}/card/download", {"ap_ids": [e1]})
    assert refused.status_code == 403 and "即時停止されています" in refused.get_data(as_text=True)
    english = submit(minami, page, f"{page}/card/download?lang=en", {"ap_ids": [e1]})
    assert english.status_code == 403 and "has been stopped" in english.get_data(as_text=True)
    minami.get(f"{page}?lang=ja")
    for action in ("read", "regional-area"):
        assert submit(minami, page, f"{page}/card/{action}", {}).status_code == 403
    assert card_stack.card.commands == 0  # not one APDU reached the card
    assert card_stack.card.installed() == set() and _installations(apdl_app) == []
    actions = [a for a, _, _ in log_entries(apdl_app)]
    assert actions.count("card_stopped") == 1 and actions.count("refused") >= 4

    assert submit(minami, page, f"{page}/card/stop", {"reason": "二度目"}).status_code == 409  # already stopped
    assert submit(minami, page, f"{page}/card/stop/cancel", {"reason": ""}).status_code == 400
    asked = submit(minami, page, f"{page}/card/stop/cancel", {"reason": "カードが見つかった"})
    assert asked.status_code == 200 and "即時停止解除の確認" in asked.get_data(as_text=True)
    assert 'id="card-blocked"' in minami.get(page).text  # still stopped: nothing changed without confirm=yes
    assert confirm(minami, page, f"{page}/card/stop/cancel", {"reason": "カードが見つかった"}).status_code == 302
    lifted = minami.get(page).get_data(as_text=True)
    assert "即時停止を解除しました。" in lifted and 'id="card-blocked"' not in lifted and 'id="reload"' in lifted
    assert submit(minami, page, f"{page}/card/stop/cancel", {"reason": "もう一度"}).status_code == 409
    loaded = submit(minami, page, f"{page}/card/download", {"ap_ids": [e1]})
    assert loaded.status_code == 302, loaded.get_data(as_text=True)[-400:]
    assert card_stack.card.installed() == {APS["E1"][0]}
    assert f"カードAPを搭載しました: {APS['E1'][1]}" in minami.get(page).get_data(as_text=True)
    entries = log_entries(apdl_app)
    cancelled = [d for a, _, d in entries if a == "card_stop_cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["reason"] == "カードが見つかった"
    assert [a for a, _, _ in entries].count("card_stopped") == 1  # the second stop was refused: already stopped


def test_another_municipalitys_stop_shows_only_that_the_card_is_stopped_never_why(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    """Two 利用機関 registered the same card. The reason one typed for its 即時停止 is its own record: the other
    sees 「他の利用機関により即時停止中」 on the 利用者 page and in the refusal, cannot lift it, and learns
    neither the reason nor who stopped it — in Japanese or English."""
    build_registry(opauth, apdl_app)
    secret = "北江戸市福祉課への相談内容に基づく停止"
    kita = login(opauth, apdl_app, "kitamgr")
    kita_page = f"/residents/{register_resident(kita)}"
    minami = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(minami)}"
    assert confirm(kita, kita_page, f"{kita_page}/card/stop", {"reason": secret}).status_code == 302
    assert f"即時停止中（理由: {secret}）" in kita.get(kita_page).get_data(as_text=True)  # its own: in full

    shown = minami.get(page).get_data(as_text=True)
    assert "他の利用機関により即時停止中" in shown and 'id="stopped-elsewhere"' in shown
    assert 'id="cancel-stop"' not in shown and 'id="stop"' not in shown
    assert 'id="card-blocked"' in shown and "他の利用機関により即時停止されています" in shown
    assert secret not in shown and 'id="reload"' not in shown and 'id="download"' not in shown
    answers = [submit(minami, page, f"{page}/card/{action}", {}) for action in ("read", "regional-area")]
    answers.append(submit(minami, page, f"{page}/card/stop/cancel", {"reason": "見つかった"}))
    answers.append(submit(minami, page, f"{page}/card/stop", {"reason": "重ねて"}))
    answers.append(submit(minami, page, f"{page}/card/read?lang=en", {}))
    assert [a.status_code for a in answers] == [403, 403, 409, 409, 403]
    assert "他の利用機関により即時停止されています" in answers[0].get_data(as_text=True)
    assert "stopped by another organisation" in answers[-1].get_data(as_text=True)
    assert "Stopped by another organisation" in minami.get(f"{page}?lang=en").get_data(as_text=True)
    for answer in answers:
        assert secret not in answer.get_data(as_text=True) and "kita" not in answer.get_data(as_text=True)
    assert card_stack.card.commands == 0  # not one APDU reached the card
    refusals = [d for a, _, d in log_entries(apdl_app) if a == "refused"]
    assert len(refusals) >= 3 and secret not in str(refusals)  # nor do 南江戸市's logged refusals carry it


@pytest.mark.parametrize(("status", "word"), [("lost", "紛失"), ("stolen", "盗難"), ("suspended", "一時停止"),
                                              ("abolished", "廃止")])
def test_a_card_the_feed_reports_lost_stolen_suspended_or_abolished_is_refused_before_any_apdu(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack, tmp_path: Path, status: str, word: str) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(minami)}"
    result = import_status(apdl_app, tmp_path, csv_feed(f"{CARD},{status},,2026-11-29"), "--batch-id", status)
    assert result.returncode == 0, result.stderr
    shown = minami.get(page).get_data(as_text=True)  # the page offers no card button, and says why
    assert 'id="card-blocked"' in shown and f"{word}のため利用できません" in shown and 'id="reload"' not in shown
    refused = submit(minami, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"])]})
    assert refused.status_code == 403 and f"{word}のため利用できません" in refused.get_data(as_text=True)
    assert card_stack.card.commands == 0 and card_stack.card.installed() == set()
    lifted = import_status(apdl_app, tmp_path, csv_feed(f"{CARD},active,,2026-11-30"), "--batch-id", "lifted")
    assert lifted.returncode == 0
    assert submit(minami, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"])]}).status_code == 302


def test_a_move_deletes_the_regional_aps_at_the_next_contact_and_keeps_the_extended(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack, tmp_path: Path) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")  # the old municipality (the card's residence code)
    old_page = f"/residents/{register_resident(minami)}"
    assert submit(minami, old_page, f"{old_page}/card/regional-area", {}).status_code == 302
    loaded = submit(minami, old_page, f"{old_page}/card/download",
                    {"ap_ids": [str(registry.ids["R1"]), str(registry.ids["E1"])]})
    assert loaded.status_code == 302
    assert card_stack.card.installed(CardArea.REGIONAL) == {APS["R1"][0]}
    result = import_status(apdl_app, tmp_path, csv_feed(f"{CARD},moved,{SAPPORO},2026-11-29"), "--batch-id", "mv")
    assert result.returncode == 0, result.stderr
    assert card_stack.card.installed() == {APS["R1"][0], APS["E1"][0]}  # nothing happens until the card is seen

    kita = login(opauth, apdl_app, "kita")  # the new municipality reads the card first
    new_page = f"/residents/{register_resident(kita)}"
    read = submit(kita, new_page, f"{new_page}/card/read", {})
    assert read.status_code == 200, read.get_data(as_text=True)[-400:]
    assert card_stack.card.installed() == {APS["E1"][0]}  # the regional AP is gone, the extended one kept
    assert card_stack.card.installed(CardArea.REGIONAL) == set()
    shown = read.get_data(as_text=True)
    assert f'id="residence">{SAPPORO}<' in shown  # the feed's new residence code rules the area checks
    assert APS["R1"][1] in shown  # so the new municipality is offered the regional AP
    assert f"転出のため、地域住民向け領域のカードAPを削除しました: {APS['R1'][1]}" in shown  # named, not counted
    rows = {(tenant, ap_id): state for tenant, ap_id, state in _installations(apdl_app)}
    assert rows == {("minamiedo", registry.ids["R1"]): InstallState.DELETED,
                    ("minamiedo", registry.ids["E1"]): InstallState.INSTALLED}
    deletions = [(target, d) for a, target, d in log_entries(apdl_app) if a == "ap_deleted"]
    assert deletions == [(f"ap:{APS['R1'][0]}", {"card": CARD, "reason": "moved", "rows": 1, "name": APS["R1"][1]})]
    assert submit(kita, new_page, f"{new_page}/card/read", {}).status_code == 200  # settled once, not again
    assert len([a for a, _, _ in log_entries(apdl_app) if a == "ap_deleted"]) == 1
    refused = submit(minami, old_page, f"{old_page}/card/regional-area", {})
    assert refused.status_code == 403  # the old municipality no longer may touch the regional area

    # the old municipality is no longer offered its regional AP, and a request for it is refused before any APDU
    offered = minami.get(old_page).get_data(as_text=True)
    assert f'value="{registry.ids["R1"]}"' not in offered and f'value="{registry.ids["E2"]}"' in offered
    commands = card_stack.card.commands
    asked = submit(minami, old_page, f"{old_page}/card/download", {"ap_ids": [str(registry.ids["R1"])]})
    assert asked.status_code == 403 and card_stack.card.commands == commands
    assert f"転出しています（転出先 {SAPPORO}）" in asked.get_data(as_text=True)
    assert APS["R1"][1] in asked.get_data(as_text=True)
    english = submit(minami, old_page, f"{old_page}/card/download?lang=en", {"ap_ids": [str(registry.ids["R1"])]})
    assert english.status_code == 403 and "has moved out" in english.get_data(as_text=True)
    assert card_stack.card.commands == commands and card_stack.card.installed(CardArea.REGIONAL) == set()
    refusals = [(target, d) for a, target, d in log_entries(apdl_app) if a == "refused"]
    assert refusals[-1] == (f"ap:{APS['R1'][0]}", {"reason": "moved: regional area of the former municipality"})
    loaded = submit(kita, new_page, f"{new_page}/card/download", {"ap_ids": [str(registry.ids["R1"])]})
    assert loaded.status_code == 302, loaded.get_data(as_text=True)[-400:]  # the new municipality may load it
    assert card_stack.card.installed(CardArea.REGIONAL) == {APS["R1"][0]}


def test_a_move_settles_on_a_card_with_nothing_regional(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack,
                                                        tmp_path: Path) -> None:
    card_stack.card.load_state(issued_card(apdl_app))
    build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(minami)}"
    assert import_status(apdl_app, tmp_path, csv_feed(f"{CARD},moved,{SAPPORO},2026-11-29"),
                         "--batch-id", "mv").returncode == 0
    assert submit(minami, page, f"{page}/card/read", {}).status_code == 200
    with apdl_app.app_context():
        from apdl import cardstatus

        assert not cardstatus.status_of(db.get_session(), CARD, viewer=None).regional_purge
