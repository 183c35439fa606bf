"""The module's data for the journeys, created through its own forms: APs, tenant profiles, availability."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import Flask
from flask.testing import FlaskClient

from tests.apdl.app.conftest import CHIYODA, SAPPORO, Opauth, login, submit

CARD = "1234567890123"  # the emulated card's identifier (residence 131016)
APS = {  # label: (AID, name, area, type)
    "R1": ("D392F000020001", "地域図書館カード", "regional", "C"),
    "E1": ("D392F000030001", "健康ポイント", "extended", "C"),
    "E2": ("D392F000030002", "窓口予約", "extended", "A"),
    "E3": ("D392F000030003", "避難所受付", "extended", "C"),
}


@dataclass
class Registry:
    """Ids of the registered APs by label."""

    ids: dict[str, int]


STANDARD_ID_APS = {"E3"}  # 避難所受付 numbers a 標準ID into each installation


def register_ap(admin: FlaskClient, label: str, *, size: int = 2048) -> int:
    aid, name, area, ap_type = APS[label]
    fields = {"aid": aid, "name": name, "description": f"{name}の説明", "provider_name": "南江戸市", "area": area,
              "ap_type": ap_type, "size_bytes": str(size), "pin_max_tries": "3", "business_id": "05",
              "personalize_url": "https://perso.example.jp/p"}
    if label in STANDARD_ID_APS:
        fields["needs_standard_id"] = "on"
    response = submit(admin, "/aps", "/aps", fields)
    assert response.status_code == 302, response.get_data(as_text=True)[-600:]
    page = admin.get("/aps").get_data(as_text=True)
    found = re.search(rf'href="/aps/(\d+)">{aid}<', page)
    assert found, page
    return int(found.group(1))


def build_registry(opauth: Opauth, app: Flask) -> Registry:
    """Four APs; 南江戸市 (千代田区's code) may load all, 北江戸市 (Sapporo's code) R1 and E1."""
    admin = login(opauth, app, "admin")
    ids = {label: register_ap(admin, label) for label in APS}
    for tenant, code in (("minamiedo", CHIYODA), ("kitaedo", SAPPORO)):
        response = submit(admin, "/tenants", "/tenants",
                          {"tenant_code": tenant, "kind": "municipality", "municipality_code": code})
        assert response.status_code == 302, response.get_data(as_text=True)[-400:]
    for tenant, labels in (("minamiedo", list(APS)), ("kitaedo", ["R1", "E1"])):
        response = submit(admin, f"/tenants/{tenant}", f"/tenants/{tenant}/availability",
                          {"action": "add", "add_ids": [str(ids[label]) for label in labels]})
        assert response.status_code == 302
    return Registry(ids)


def register_resident(client: FlaskClient, *, card: str = CARD, holder_request: bool = True,
                      **overrides: str) -> int:
    fields = {"card_status": "active", "card_identifier": card, "kana_family": "ヤマダ", "kana_given": "ハナコ",
              "kanji_family": "山田", "kanji_given": "花子", "birth_date": "3610602", "gender": "female",
              "postal_code": "100-0001", "address1": "東京都千代田区千代田１－１", "address2": "",
              "phone": "03-1234-5678", "email": "hanako@example.jp", "occupation": "会社員", **overrides}
    if holder_request:
        fields["holder_request"] = "on"
    response = submit(client, "/residents", "/residents", fields)
    assert response.status_code == 302, response.get_data(as_text=True)[-600:]
    return int(response.headers["Location"].rsplit("/", 1)[1])
