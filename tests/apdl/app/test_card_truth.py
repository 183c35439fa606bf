"""The card is the evidence: records that the card no longer backs are settled at the next contact, two
operations on one card never interleave, and every tenant (the admin tenant too) loads only the APs its
availability list allows. Found by a user walk of `make run-apdl`."""

from __future__ import annotations

import threading

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from apdl import db
from apdl.emulator.stack import PcscStack
from apdl.models import CardAp, Installation, OperationLog
from tests.apdl.app.conftest import Opauth, csrf, issued_card, login, submit
from tests.apdl.app.world import APS, build_registry, register_resident

pytestmark = pytest.mark.pcsc


def _rows(app: Flask, label: str) -> list[str]:
    """States of the installations of AP ``label``, oldest first."""
    with app.app_context():
        session = db.get_session()
        return list(session.scalars(select(Installation.state).join(CardAp, CardAp.id == Installation.card_ap_id)
                                    .where(CardAp.aid == APS[label][0]).order_by(Installation.id)))


def test_an_installed_row_the_card_no_longer_holds_is_settled_and_the_ap_can_be_loaded_again(
        opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    client = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(client)}"
    e1 = str(registry.ids["E1"])
    assert submit(client, page, f"{page}/card/download", {"ap_ids": [e1]}).status_code == 302
    assert _rows(apdl_app, "E1") == ["installed"]
    card_stack.card.load_state(issued_card(apdl_app))  # the card was reset (or replaced by a new one)

    shown = submit(client, page, f"{page}/card/read", {}).get_data(as_text=True)
    assert _rows(apdl_app, "E1") == ["deleted"]  # settled from GET STATUS, not kept as installed
    assert "/card/installations/" not in shown  # nothing offered for deletion that is not on the card
    with apdl_app.app_context():
        settled = [e.detail for e in db.get_session().scalars(select(OperationLog))
                   if e.action == "card_reconciled"]
    assert settled and settled[-1]["why"] == "not on the card at contact"
    assert submit(client, page, f"{page}/card/download", {"ap_ids": [e1]}).status_code == 302
    assert _rows(apdl_app, "E1") == ["deleted", "installed"]  # one record per copy on the card
    assert card_stack.card.installed() == {APS["E1"][0]}


def test_two_downloads_of_one_ap_at_once_record_one_installation(opauth: Opauth, apdl_app: Flask,
                                                                 card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    first = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(first)}"
    second = login(opauth, apdl_app, "minami")
    form = {"ap_ids": [str(registry.ids["E2"])], "pin": "2580"}
    tokens = {id(c): csrf(c.get(page).get_data(as_text=True)) for c in (first, second)}
    statuses: list[int] = []
    start = threading.Barrier(2)

    def download(client: FlaskClient) -> None:
        start.wait()
        response = client.post(f"{page}/card/download", data={**form, "csrf_token": tokens[id(client)]})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=download, args=(c,)) for c in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # one loads it; the other waits for the card, reads it afresh and finds the AP already there
    assert sorted(statuses) == [302, 409], statuses
    assert _rows(apdl_app, "E2") == ["installed"]
    assert card_stack.card.installed() == {APS["E2"][0]}


def test_the_admin_tenant_loads_only_what_its_availability_list_allows(opauth: Opauth, apdl_app: Flask,
                                                                       card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    counter = login(opauth, apdl_app, "center")  # the admin tenant's own counter operator
    page = f"/residents/{register_resident(counter)}"
    shown = counter.get(page).get_data(as_text=True)
    assert APS["E1"][1] not in shown  # the registry lists every AP for it; the カードAP搭載 table does not
    refused = submit(counter, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"])]})
    assert refused.status_code == 404
    assert card_stack.card.installed() == set()
    admin = login(opauth, apdl_app, "admin")
    assert submit(admin, "/tenants", "/tenants", {"tenant_code": "apdlcenter", "kind": "voluntary"}).status_code == 302
    assert submit(admin, "/tenants/apdlcenter", "/tenants/apdlcenter/availability",
                  {"action": "add", "add_ids": [str(registry.ids["E1"])]}).status_code == 302
    assert submit(counter, page, f"{page}/card/download",
                  {"ap_ids": [str(registry.ids["E1"])]}).status_code == 302
    assert card_stack.card.installed() == {APS["E1"][0]}
