""""Recorded or not done": the module is killed after the card executed INSTALL but before its database
commit; the next contact with the card settles the pending row from GET STATUS."""

from __future__ import annotations

import os
import re
import signal
import urllib.parse
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from apdl import db, oplog
from apdl.card.commands import INS_INSTALL, INSTALL_FOR_INSTALL_AND_MAKE_SELECTABLE
from apdl.emulator.stack import PcscStack
from apdl.models import Installation, InstallState, OperationLog
from tests.apdl.app.conftest import Opauth, browser_for, issued_card, login, served_apdl, submit
from tests.apdl.app.world import APS, build_registry, register_resident
from tests.oidc.browser import FormBrowser

pytestmark = pytest.mark.pcsc


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_crash_between_install_and_commit_is_reconciled_at_the_next_contact(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = build_registry(opauth, apdl_app)
    resident = register_resident(login(opauth, apdl_app, "minami"))
    page = f"/residents/{resident}"
    card = card_stack.card
    with served_apdl(opauth, apdl_app) as server:
        module = FormBrowser(opauth.ca)
        _, authorize, _ = module.go(opauth.apdl_base + "/login")
        _, callback, _ = browser_for(opauth, "minami").go(authorize)
        status, location, _ = module.go(callback)
        assert status == 302 and location == "/", (status, location)
        _, _, body = module.go(opauth.apdl_base + page)
        token = re.search(r'name="csrf_token" value="([^"]+)"', body)
        assert token, body[:500]
        [worker] = _workers(server.pid)
        answer = card.process

        def install_then_crash(raw: bytes) -> bytes:
            reply = answer(raw)
            if raw[1] == INS_INSTALL and raw[2] == INSTALL_FOR_INSTALL_AND_MAKE_SELECTABLE:
                os.kill(worker, signal.SIGKILL)  # the card has the AP; the module never hears 9000
            return reply

        monkeypatch.setattr(card, "process", install_then_crash)
        form = {"csrf_token": token.group(1), "ap_ids": str(registry.ids["E1"])}
        with pytest.raises(OSError):
            module.go(opauth.apdl_base + page + "/card/download", form)
        monkeypatch.undo()
    assert card.installed() == {APS["E1"][0]}
    with apdl_app.app_context():
        assert [r.state for r in db.get_session().scalars(select(Installation))] == [InstallState.PENDING]

    client = login(opauth, apdl_app, "minami")  # the module restarted: the next contact with the card
    assert submit(client, page, f"{page}/card/read", {}).status_code == 200
    with apdl_app.app_context():
        session = db.get_session()
        rows = list(session.scalars(select(Installation)))
        assert [(r.state, r.detail) for r in rows] == [(InstallState.INSTALLED, "reconciled from GET STATUS")]
        assert "card_reconciled" in [e.action for e in session.scalars(select(OperationLog))]
        assert oplog.verify_chain(session) is None
    shown = client.get(page).get_data(as_text=True)
    assert urllib.parse.quote(APS["E1"][0]) in shown


def _installed_table(page: str) -> str:
    found = re.search(r'<table id="installed">.*?</table>', page, re.S)
    assert found, page[-500:]
    return found.group(0)


@pytest.mark.parametrize("executed", [False, True], ids=["install-lost", "install-done"])
def test_another_tenants_contact_settles_a_pending_row_without_showing_it(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack, monkeypatch: pytest.MonkeyPatch,
        executed: bool) -> None:
    """南江戸市's module dies as it sends INSTALL (before or after the card executes it); the holder then goes
    to 北江戸市, which registered them too. 北江戸市's contact settles 南江戸市's pending row from GET STATUS
    under 南江戸市's tenant and shows 北江戸市 nothing of it. When the AP never reached the card, 北江戸市
    may load the same AP, and 南江戸市's next contact does not take it for its own; when it did, it is
    南江戸市's and 北江戸市 cannot load it again."""
    registry = build_registry(opauth, apdl_app)
    resident = register_resident(login(opauth, apdl_app, "minami"))
    page = f"/residents/{resident}"
    card = card_stack.card
    with served_apdl(opauth, apdl_app) as server:
        module = FormBrowser(opauth.ca)
        _, authorize, _ = module.go(opauth.apdl_base + "/login")
        _, callback, _ = browser_for(opauth, "minami").go(authorize)
        assert module.go(callback)[:2] == (302, "/")
        token = re.search(r'name="csrf_token" value="([^"]+)"', module.go(opauth.apdl_base + page)[2])
        assert token
        [worker] = _workers(server.pid)
        answer = card.process

        def crash_at_install(raw: bytes) -> bytes:
            if raw[1] == INS_INSTALL and raw[2] == INSTALL_FOR_INSTALL_AND_MAKE_SELECTABLE:
                reply = answer(raw) if executed else b"\x6f\x00"
                os.kill(worker, signal.SIGKILL)  # the module never hears the answer
                return reply
            return answer(raw)

        monkeypatch.setattr(card, "process", crash_at_install)
        with pytest.raises(OSError):
            module.go(opauth.apdl_base + page + "/card/download",
                      {"csrf_token": token.group(1), "ap_ids": str(registry.ids["E1"])})
        monkeypatch.undo()
    assert card.installed() == ({APS["E1"][0]} if executed else set())
    with apdl_app.app_context():
        [pending] = db.get_session().scalars(select(Installation)).all()
        assert (pending.state, pending.tenant_code) == (InstallState.PENDING, "minamiedo")
        minami_row, minami_user_id = pending.id, pending.user_id_in_ap
    minami = login(opauth, apdl_app, "minami")
    assert APS["E1"][0] in _installed_table(minami.get(page).get_data(as_text=True))  # shown as pending

    kita = login(opauth, apdl_app, "kita")
    kita_page = f"/residents/{register_resident(kita)}"
    read = submit(kita, kita_page, f"{kita_page}/card/read", {})
    assert read.status_code == 200
    assert minami_user_id not in read.get_data(as_text=True)
    assert (APS["E1"][1] in read.get_data(as_text=True)) is not executed  # offered only if not on the card
    settled_state = InstallState.INSTALLED if executed else InstallState.FAILED
    with apdl_app.app_context():
        session = db.get_session()
        row = session.get(Installation, minami_row)
        assert row is not None and (row.state, row.detail) == (settled_state, "reconciled from GET STATUS")
        entries = list(session.scalars(select(OperationLog).order_by(OperationLog.id)))
        settled = [e for e in entries if e.target == f"installation:{minami_row}"]
        assert [(e.action, e.tenant_code, e.actor) for e in settled] == [
            ("card_reconciled", "minamiedo", "apdl (card contact)")]
        assert not [e for e in entries if e.tenant_code == "kitaedo" and e.action == "card_reconciled"]
        assert oplog.verify_chain(session) is None
    shown = _installed_table(minami.get(page).get_data(as_text=True))
    assert (APS["E1"][0] in shown) is executed  # installed, or no longer pending
    if executed:
        again = submit(kita, kita_page, f"{kita_page}/card/download", {"ap_ids": [str(registry.ids["E1"])]})
        assert again.status_code == 409 and card.installed() == {APS["E1"][0]}
        with apdl_app.app_context():
            rows = {(r.tenant_code, r.state) for r in db.get_session().scalars(select(Installation))}
            assert rows == {("minamiedo", InstallState.INSTALLED)}
        return
    loaded = submit(kita, kita_page, f"{kita_page}/card/download", {"ap_ids": [str(registry.ids["E1"])]})
    assert loaded.status_code == 302 and card.installed() == {APS["E1"][0]}
    again = submit(minami, page, f"{page}/card/read", {})
    assert again.status_code == 200 and APS["E1"][0] not in _installed_table(again.get_data(as_text=True))
    with apdl_app.app_context():
        states = {(r.tenant_code, r.state) for r in db.get_session().scalars(select(Installation))}
        assert states == {("minamiedo", InstallState.FAILED), ("kitaedo", InstallState.INSTALLED)}


def _warning(page: str) -> str:
    """The warning flash of a read, "" when there is none."""
    found = re.search(r'<p class="flash flash-warning">([^<]*)</p>', page)
    return found.group(1) if found else ""


def test_a_read_names_the_aps_whose_records_it_closed_because_the_card_no_longer_holds_them(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    """The card was reset (or replaced) since the APs were loaded: the read settles their records as deleted
    and says which, in Japanese and in English; a read that changes nothing says only that it read."""
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(client)}"
    loaded = submit(client, page, f"{page}/card/download",
                    {"ap_ids": [str(registry.ids["E1"]), str(registry.ids["E3"])]})
    assert loaded.status_code == 302
    unchanged = submit(client, page, f"{page}/card/read", {}).get_data(as_text=True)
    assert "カードを読み取りました。" in unchanged and _warning(unchanged) == ""

    card_stack.card.load_state(issued_card(apdl_app))  # the card was reset
    read = submit(client, page, f"{page}/card/read", {})
    warning = _warning(read.get_data(as_text=True))
    assert read.status_code == 200 and "カードにないため" in warning, read.get_data(as_text=True)[-1500:]
    assert APS["E1"][1] in warning and APS["E3"][1] in warning
    again = submit(client, page, f"{page}/card/read", {}).get_data(as_text=True)
    assert _warning(again) == ""  # closed once, named once

    client.get("/?lang=en")
    assert submit(client, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"])]}).status_code == 302
    card_stack.card.load_state(issued_card(apdl_app))
    english = _warning(submit(client, page, f"{page}/card/read", {}).get_data(as_text=True))
    assert "no longer on the card" in english and APS["E1"][1] in english and APS["E3"][1] not in english
