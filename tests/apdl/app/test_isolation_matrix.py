"""The tenant isolation matrix: every route of the module (each rule, each method but HEAD/OPTIONS) has an
entry saying how another tenant's object is addressed there and what must happen.

南江戸市 (minamiedo) owns the objects: a 利用者 with an AP loaded on the card, another 利用者, its own item,
an automatic preset. The foreign operators are 北江戸市's (kitaedo: ap.download, ap.delete, user.register)
and the admin tenant's (apdlcenter: ap.manage). For each attempt the matrix states the status, and that
the same request with an id that exists nowhere answers the same (no existence oracle). After each
attempt 南江戸市's read screens, the admin's registry screens and the card are unchanged, the operation
log's chain is intact and any new entry belongs to the attacker's own tenant and is one of the actions
the entry allows. A route missing from the matrix (or a matrix entry without a route) fails the run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from apdl import db, oplog
from apdl.app import create_app
from apdl.emulator.stack import PcscStack
from apdl.models import Installation, OperationLog
from tests.apdl.app.conftest import ACCOUNTS, Opauth, csrf, login, submit
from tests.apdl.app.world import APS, CARD, Registry, build_registry, register_resident

SKIPPED_METHODS = {"HEAD", "OPTIONS"}
MISSING = 2_000_000_000  # an id no row has (within the 32-bit ids the routes accept)
MINAMI_ONLY_CARD = "7777777777777"
MARKERS = ("南野", "ミナミノ", "南江戸独自項目", "南江戸の値", "南江戸セット")  # only 南江戸市's objects carry these


@dataclass
class World:
    """南江戸市's objects and everyone's logged-in clients."""

    app: Flask
    registry: Registry
    clients: dict[str, FlaskClient]
    resident: int  # 南江戸市's 利用者 whose card is in the reader (E1 loaded)
    other_resident: int  # 南江戸市's second 利用者 (card not in the reader)
    kita_resident: int  # 北江戸市's own registration of the same holder
    installation: int  # 南江戸市's E1 installation
    preset: int
    field_id: int
    minami_sid: str
    diagnosis: int  # 南江戸市's カード障害切り分け run on the card in the reader
    terminal: int  # 南江戸市's registered terminal (端末管理)
    kita_terminal: int  # 北江戸市's registered terminal (registered by the admin tenant)


@dataclass(frozen=True)
class Attempt:
    """One request by a foreign operator."""

    actor: str  # "kita", "kitamgr", "admin", "minami" (at the admin tenant's screens) or "anonymous"
    path: Callable[[World], str]
    expect: int
    form: Callable[[World], dict[str, object]] | None = None  # POST with these fields (and the CSRF token)
    missing: Callable[[World], str] | None = None  # the same route naming nothing: must answer identically
    writes: frozenset[str] = frozenset({"refused"})  # op-log actions allowed, in the attacker's own tenant
    follow: bool = False  # also read the redirect target: no foreign marker there either
    absent: Callable[[World], tuple[str, ...]] = lambda w: ()  # more text the answer must not hold


@dataclass(frozen=True)
class Entry:
    """How the route addresses another tenant's object, and the attempts that prove it is out of reach."""

    addressed: str
    attempts: tuple[Attempt, ...]


def _resident(w: World) -> str:
    return f"/residents/{w.resident}"


def _user_id(w: World) -> str:
    """The 利用者ID numbered into 南江戸市's E1 installation."""
    with w.app.app_context():
        row = db.get_session().get(Installation, w.installation)
        assert row is not None
        return row.user_id_in_ap


def _diagnosis_link(w: World) -> tuple[str, ...]:
    return (f"/diagnosis/{w.diagnosis}\"",)


def _minami_log(w: World) -> tuple[str, ...]:
    """What only 南江戸市's operation log entries show: its operator, its terminal, its 利用者."""
    return ("U-OP0601@minamiedo", f"terminal:{w.terminal}<", f"resident:{w.resident}<", "minamiedo")


NO_OBJECT = "names no tenant-owned object"
MATRIX: dict[tuple[str, str], Entry] = {
    ("/", "GET"): Entry(NO_OBJECT + ": the operator's own name and tenant only",
                        (Attempt("kita", lambda w: "/", 200),)),
    ("/static/<path:filename>", "GET"): Entry(NO_OBJECT + ": packaged files; a path out of the folder is a 404", (
        Attempt("kita", lambda w: "/static/../apdl.db", 404, missing=lambda w: "/static/none.css"),
        Attempt("anonymous", lambda w: "/static/%2e%2e/secret_key", 404, missing=lambda w: "/static/none.css"))),
    ("/login", "GET"): Entry(NO_OBJECT + ": starts a login at opauth",
                             (Attempt("anonymous", lambda w: "/login", 302),)),
    ("/auth/callback", "GET"): Entry("the pending login in the caller's own cookie; another's state is refused", (
        Attempt("kita", lambda w: "/auth/callback?code=x&state=y", 400),
        Attempt("anonymous", lambda w: "/auth/callback?code=x&state=y", 400))),
    ("/logout", "POST"): Entry("the caller's own session only; 南江戸市's session stays (its screens still answer)", (
        Attempt("kita-leaving", lambda w: "/logout", 302, form=lambda w: {}, writes=frozenset({"logout"})),)),
    ("/backchannel-logout", "POST"): Entry("a session by sid in a token opauth signed; one naming 南江戸市's sid "
                                           "but signed by anyone else is refused", (
        Attempt("anonymous", lambda w: "/backchannel-logout", 400,
                form=lambda w: {"logout_token": _forged_logout_token(w)}, writes=frozenset()),)),
    ("/aps", "GET"): Entry("lists only the APs made available to the tenant (not E2/E3 for 北江戸市)",
                           (Attempt("kita", lambda w: "/aps", 200, absent=lambda w: (
                               APS["E2"][0], APS["E2"][1], APS["E3"][0], APS["E3"][1])),)),
    ("/aps", "POST"): Entry("the registry is the admin tenant's: 403 without ap.manage, 404 for another tenant's "
                            "manager", (
        Attempt("kita", lambda w: "/aps", 403, form=lambda w: _ap_form()),
        Attempt("minami", lambda w: "/aps", 404, form=lambda w: _ap_form()))),
    ("/aps/<int:ap_id>", "GET"): Entry("an AP not available to the tenant (E3) is as missing as no AP", (
        Attempt("kita", lambda w: f"/aps/{w.registry.ids['E3']}", 404, missing=lambda w: f"/aps/{MISSING}"),)),
    ("/aps/<int:ap_id>/withdraw", "POST"): Entry("403 for a non-manager, 404 for a manager outside the admin "
                                                 "tenant, whatever the id", (
        Attempt("kita", lambda w: f"/aps/{w.registry.ids['E1']}/withdraw", 403, form=lambda w: {},
                missing=lambda w: f"/aps/{MISSING}/withdraw"),
        Attempt("minami", lambda w: f"/aps/{w.registry.ids['E1']}/withdraw", 404, form=lambda w: {},
                missing=lambda w: f"/aps/{MISSING}/withdraw"))),
    ("/tenants", "GET"): Entry("the admin tenant's screen", (Attempt("kita", lambda w: "/tenants", 403),
                                                             Attempt("minami", lambda w: "/tenants", 404))),
    ("/tenants", "POST"): Entry("the admin tenant's screen: no tenant may set any profile, its own or another's", (
        Attempt("kita", lambda w: "/tenants", 403,
                form=lambda w: {"tenant_code": "minamiedo", "kind": "voluntary"}),
        Attempt("minami", lambda w: "/tenants", 404,
                form=lambda w: {"tenant_code": "kitaedo", "kind": "voluntary"}))),
    ("/tenants/<tenant_code>", "GET"): Entry("another tenant's code, for a non-admin: as missing as no tenant", (
        Attempt("kita", lambda w: "/tenants/minamiedo", 403, missing=lambda w: "/tenants/nosuchtenant"),
        Attempt("minami", lambda w: "/tenants/kitaedo", 404, missing=lambda w: "/tenants/nosuchtenant"),
        Attempt("minami", lambda w: "/tenants/minamiedo", 404, missing=lambda w: "/tenants/nosuchtenant"))),
    ("/tenants/<tenant_code>/availability", "POST"): Entry("another tenant's code, for a non-admin", (
        Attempt("kita", lambda w: "/tenants/kitaedo/availability", 403,
                form=lambda w: {"action": "add", "add_ids": [str(w.registry.ids["E3"])]},
                missing=lambda w: "/tenants/nosuchtenant/availability"),
        Attempt("minami", lambda w: "/tenants/kitaedo/availability", 404,
                form=lambda w: {"action": "remove", "remove_ids": [str(w.registry.ids["E1"])]},
                missing=lambda w: "/tenants/nosuchtenant/availability"))),
    ("/presets", "GET"): Entry("lists only the tenant's presets", (
        Attempt("kita", lambda w: "/presets", 403), Attempt("admin", lambda w: "/presets", 200))),
    ("/presets", "POST"): Entry("a preset of the same name as 南江戸市's is another tenant's own (no 409), and "
                                "marking it automatic leaves 南江戸市's automatic preset alone", (
        Attempt("kita", lambda w: "/presets", 403, form=lambda w: {"name": "x", "ap_ids": [str(w.registry.ids["E1"])]}),
        Attempt("admin", lambda w: "/presets", 302, writes=frozenset({"preset_saved"}),
                form=lambda w: {"name": "南江戸セット", "ap_ids": [str(w.registry.ids["E1"])], "auto_load": "on"}))),
    ("/presets/<int:preset_id>/delete", "POST"): Entry("南江戸市's preset id", (
        Attempt("kita", lambda w: f"/presets/{w.preset}/delete", 403, form=lambda w: {},
                missing=lambda w: f"/presets/{MISSING}/delete"),
        Attempt("admin", lambda w: f"/presets/{w.preset}/delete", 404, form=lambda w: {},
                missing=lambda w: f"/presets/{MISSING}/delete"))),
    ("/residents", "GET"): Entry("lists and searches only the tenant's 利用者; 南江戸市's card number finds nothing", (
        Attempt("kita", lambda w: "/residents", 200),
        Attempt("kita", lambda w: f"/residents?card={MINAMI_ONLY_CARD}", 200, missing=lambda w: "/residents?card=1"))),
    ("/residents", "POST"): Entry("南江戸市's card number registers 北江戸市's own 利用者 (no 409 oracle); a value "
                                  "for 南江戸市's item (custom_<its id>) is ignored", (
        Attempt("kita", lambda w: "/residents", 302, writes=frozenset({"resident_registered"}), follow=True,
                form=lambda w: {**_resident_form(MINAMI_ONLY_CARD), f"custom_{w.field_id}": "南江戸の値"}),)),
    ("/residents/<int:resident_id>", "GET"): Entry("南江戸市's 利用者 id", (
        Attempt("kita", lambda w: _resident(w), 404, missing=lambda w: f"/residents/{MISSING}"),
        Attempt("kita", lambda w: f"/residents/{w.other_resident}", 404, missing=lambda w: f"/residents/{MISSING}"))),
    ("/residents/fields", "GET"): Entry("lists only the tenant's own items", (
        Attempt("kita", lambda w: "/residents/fields", 200),)),
    ("/residents/fields", "POST"): Entry("南江戸市's item label is free for 北江戸市 (no 409 oracle)", (
        Attempt("kita", lambda w: "/residents/fields", 302, writes=frozenset({"custom_field_added"}),
                form=lambda w: {"label": "南江戸独自項目", "max_length": "20"}),)),
    ("/residents/<int:resident_id>/card/read", "POST"): Entry("南江戸市's 利用者 id (its card is in the reader)", (
        Attempt("kita", lambda w: f"{_resident(w)}/card/read", 404, form=lambda w: {},
                missing=lambda w: f"/residents/{MISSING}/card/read"),)),
    ("/residents/<int:resident_id>/card/regional-area", "POST"): Entry("南江戸市's 利用者 id", (
        Attempt("kita", lambda w: f"{_resident(w)}/card/regional-area", 404, form=lambda w: {},
                missing=lambda w: f"/residents/{MISSING}/card/regional-area"),)),
    ("/residents/<int:resident_id>/card/download", "POST"): Entry("南江戸市's 利用者 id", (
        Attempt("kita", lambda w: f"{_resident(w)}/card/download", 404,
                form=lambda w: {"ap_ids": [str(w.registry.ids["E1"])], "pin": "1234"},
                missing=lambda w: f"/residents/{MISSING}/card/download"),)),
    ("/residents/<int:resident_id>/card/installations/<int:installation_id>/delete", "POST"): Entry(
        "南江戸市's installation, under 南江戸市's 利用者 id or under 北江戸市's own registration of the same holder", (
            Attempt("kita", lambda w: f"{_resident(w)}/card/installations/{w.installation}/delete", 404,
                    form=lambda w: {"confirm": "yes"},
                    missing=lambda w: f"/residents/{MISSING}/card/installations/{MISSING}/delete"),
            Attempt("kita", lambda w: f"/residents/{w.kita_resident}/card/installations/{w.installation}/delete", 404,
                    form=lambda w: {"confirm": "yes"},
                    missing=lambda w: f"/residents/{w.kita_resident}/card/installations/{MISSING}/delete"))),
    ("/diagnosis", "GET"): Entry("the history lists only the tenant's own runs, also filtered by 南江戸市's card", (
        Attempt("kita", lambda w: "/diagnosis", 200, absent=_diagnosis_link),
        Attempt("kita", lambda w: f"/diagnosis?card={CARD}", 200, absent=_diagnosis_link),
        Attempt("admin", lambda w: "/diagnosis", 200, absent=_diagnosis_link))),
    ("/diagnosis", "POST"): Entry("runs on the card in the reader as the tenant's own run; 南江戸市's recent "
                                  "operations on that card are not shown", (
        Attempt("kita", lambda w: "/diagnosis", 302, form=lambda w: {}, writes=frozenset({"card_diagnosed"}),
                follow=True),)),
    ("/diagnosis/<int:diagnosis_id>", "GET"): Entry("南江戸市's run id", (
        Attempt("kita", lambda w: f"/diagnosis/{w.diagnosis}", 404, missing=lambda w: f"/diagnosis/{MISSING}"),)),
    ("/report", "GET"): Entry("needs ap.manage; a manager outside the admin tenant sees its own figures only", (
        Attempt("kita", lambda w: "/report", 403),)),
    ("/oplog", "GET"): Entry("needs ap.manage; a manager outside the admin tenant reads its own 利用機関's entries "
                             "only, also when it searches for 南江戸市's card or filters by 南江戸市's code", (
        Attempt("kita", lambda w: "/oplog", 403),
        Attempt("kitamgr", lambda w: "/oplog", 200, absent=_minami_log),
        Attempt("kitamgr", lambda w: f"/oplog?q={CARD}", 200, absent=_minami_log),
        Attempt("kitamgr", lambda w: "/oplog?tenant=minamiedo&page=1", 200, absent=_minami_log))),
    ("/oplog/chain", "GET"): Entry("the hash chain spans every tenant's entries: the admin tenant's check only", (
        Attempt("kita", lambda w: "/oplog/chain", 403),
        Attempt("kitamgr", lambda w: "/oplog/chain", 403))),
    ("/report/csv", "GET"): Entry("needs ap.manage, as the screen", (
        Attempt("kita", lambda w: "/report/csv?encoding=cp932", 403),)),
    ("/residents/<int:resident_id>/edit", "GET"): Entry("南江戸市's 利用者 id", (
        Attempt("kita", lambda w: f"{_resident(w)}/edit", 404, missing=lambda w: f"/residents/{MISSING}/edit"),)),
    ("/residents/<int:resident_id>/edit", "POST"): Entry("南江戸市's 利用者 id: nothing of it changes", (
        Attempt("kita", lambda w: f"{_resident(w)}/edit", 404, form=lambda w: _resident_form(CARD),
                missing=lambda w: f"/residents/{MISSING}/edit"),
        Attempt("admin", lambda w: f"{_resident(w)}/edit", 403, form=lambda w: _resident_form(CARD),
                missing=lambda w: f"/residents/{MISSING}/edit"))),
    ("/card-status", "GET"): Entry("the feed screen is the admin tenant's: 403 without ap.manage, 404 for another "
                                   "tenant's manager", (
        Attempt("kita", lambda w: "/card-status", 403), Attempt("minami", lambda w: "/card-status", 404))),
    ("/card-status/import", "POST"): Entry("the feed import is the admin tenant's", (
        Attempt("kita", lambda w: "/card-status/import", 403, form=lambda w: {"batch_id": "b1"}),
        Attempt("minami", lambda w: "/card-status/import", 404, form=lambda w: {"batch_id": "b1"}))),
    ("/residents/<int:resident_id>/card/stop", "POST"): Entry("南江戸市's 利用者 id: its card cannot be stopped by "
                                                              "another tenant, with or without ap.manage", (
        Attempt("kita", lambda w: f"{_resident(w)}/card/stop", 404, form=lambda w: {"reason": "紛失の届出"},
                missing=lambda w: f"/residents/{MISSING}/card/stop"),
        Attempt("admin", lambda w: f"{_resident(w)}/card/stop", 404, form=lambda w: {"reason": "紛失の届出"},
                missing=lambda w: f"/residents/{MISSING}/card/stop"))),
    ("/residents/<int:resident_id>/card/stop/cancel", "POST"): Entry("南江戸市's 利用者 id", (
        Attempt("kita", lambda w: f"{_resident(w)}/card/stop/cancel", 404, form=lambda w: {"reason": "発見"},
                missing=lambda w: f"/residents/{MISSING}/card/stop/cancel"),
        Attempt("admin", lambda w: f"{_resident(w)}/card/stop/cancel", 404, form=lambda w: {"reason": "発見"},
                missing=lambda w: f"/residents/{MISSING}/card/stop/cancel"))),
    ("/agent/pair", "POST"): Entry(NO_OBJECT + ": a card agent's route; without a terminal certificate refused", (
        Attempt("anonymous", lambda w: "/agent/pair", 403, form=lambda w: {},
                writes=frozenset({"terminal_refused"})),)),
    ("/agent/poll", "POST"): Entry("the commands queued for the presenting terminal only; none without one", (
        Attempt("anonymous", lambda w: "/agent/poll", 403, form=lambda w: {},
                writes=frozenset({"terminal_refused"})),)),
    ("/agent/respond", "POST"): Entry("an exchange the presenting terminal collected; none without one", (
        Attempt("anonymous", lambda w: "/agent/respond", 403, form=lambda w: {},
                writes=frozenset({"terminal_refused"})),)),
    ("/api/v1/users", "GET"): Entry(NO_OBJECT + ": a business system's 利用者 through its own APs (業務ID from its "
                                    "SSL通信証明書); without a certificate refused", (
        Attempt("anonymous", lambda w: "/api/v1/users", 403, writes=frozenset({"business_api_refused"})),
    )),
    ("/api/v1/users/<user_id>", "GET"): Entry("南江戸市's 利用者ID in an AP: refused without a business system's "
                                              "certificate", (
        Attempt("anonymous", lambda w: f"/api/v1/users/{_user_id(w)}", 403,
                missing=lambda w: "/api/v1/users/00000000000000FF", writes=frozenset({"business_api_refused"})),
    )),
    ("/api/v1/card-status", "GET"): Entry(NO_OBJECT + ": status changes of the calling system's cards", (
        Attempt("anonymous", lambda w: "/api/v1/card-status?since=2000-01-01T00:00:00Z", 403,
                writes=frozenset({"business_api_refused"})),)),
    ("/api/v1/cards/<card>/status", "GET"): Entry("南江戸市's card (E1 loaded)", (
        Attempt("anonymous", lambda w: f"/api/v1/cards/{CARD}/status", 403,
                missing=lambda w: "/api/v1/cards/9999999999999/status", writes=frozenset({"business_api_refused"})),
    )),
    ("/api/v1/cards/<card>/stop", "POST"): Entry("南江戸市's card: not stopped without a business system's "
                                                 "certificate", (
        Attempt("anonymous", lambda w: f"/api/v1/cards/{CARD}/stop", 403, form=lambda w: {"reason": "紛失"},
                missing=lambda w: "/api/v1/cards/9999999999999/stop", writes=frozenset({"business_api_refused"})),)),
    ("/api/v1/cards/<card>/stop/cancel", "POST"): Entry("南江戸市's card", (
        Attempt("anonymous", lambda w: f"/api/v1/cards/{CARD}/stop/cancel", 403, form=lambda w: {"reason": "発見"},
                missing=lambda w: "/api/v1/cards/9999999999999/stop/cancel",
                writes=frozenset({"business_api_refused"})),)),
    ("/terminals", "GET"): Entry("lists only the tenant's own terminals (the admin tenant's: all); 403 without "
                                 "ap.manage", (
        Attempt("kita", lambda w: "/terminals", 403),
        Attempt("minami", lambda w: "/terminals", 200, absent=lambda w: ("kita-desk", "北江戸市")))),
    ("/terminals", "POST"): Entry("registers for the caller's own tenant only: another tenant's code is as missing as "
                                  "no tenant (the admin tenant may name any)", (
        Attempt("kita", lambda w: "/terminals", 403, form=lambda w: {"name": "x", "organization": "北江戸市"}),
        Attempt("minami", lambda w: "/terminals", 404,
                form=lambda w: {"tenant_code": "kitaedo", "name": "x", "organization": "北江戸市"}),
        Attempt("minami", lambda w: "/terminals", 404,
                form=lambda w: {"tenant_code": "nosuchtenant", "name": "x", "organization": "北江戸市"}))),
    ("/terminals/<int:terminal_id>/disable", "GET"): Entry("another tenant's terminal id", (
        Attempt("kita", lambda w: f"/terminals/{w.terminal}/disable", 403,
                missing=lambda w: f"/terminals/{MISSING}/disable"),
        Attempt("minami", lambda w: f"/terminals/{w.kita_terminal}/disable", 404,
                missing=lambda w: f"/terminals/{MISSING}/disable"))),
    ("/terminals/<int:terminal_id>/disable", "POST"): Entry("another tenant's terminal id: it stays enabled", (
        Attempt("kita", lambda w: f"/terminals/{w.terminal}/disable", 403, form=lambda w: {"confirm": "yes"},
                missing=lambda w: f"/terminals/{MISSING}/disable"),
        Attempt("minami", lambda w: f"/terminals/{w.kita_terminal}/disable", 404, form=lambda w: {"confirm": "yes"},
                missing=lambda w: f"/terminals/{MISSING}/disable"))),
    ("/terminals/<int:terminal_id>/enable", "POST"): Entry("another tenant's terminal id", (
        Attempt("kita", lambda w: f"/terminals/{w.terminal}/enable", 403, form=lambda w: {},
                missing=lambda w: f"/terminals/{MISSING}/enable"),
        Attempt("minami", lambda w: f"/terminals/{w.kita_terminal}/enable", 404, form=lambda w: {},
                missing=lambda w: f"/terminals/{MISSING}/enable"))),
    ("/terminal", "GET"): Entry("the caller's own session's pairing only",
                                (Attempt("kita", lambda w: "/terminal", 200),)),
    ("/terminal", "POST"): Entry("a code shown on a terminal's screen; a wrong one pairs nothing", (
        Attempt("kita", lambda w: "/terminal", 400, form=lambda w: {"code": "00000000"}),)),
}


def routes(app: Flask) -> set[tuple[str, str]]:
    """Every (rule, method) the app answers, HEAD and OPTIONS aside."""
    return {(rule.rule, method) for rule in app.url_map.iter_rules()
            for method in (rule.methods or set()) - SKIPPED_METHODS}


def matrix_gaps(app: Flask) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(routes without an entry, entries without a route)."""
    present = routes(app)
    return present - set(MATRIX), set(MATRIX) - present


def _ap_form() -> dict[str, object]:
    return {"aid": "D392F0000900", "name": "不正登録", "provider_name": "p", "area": "extended", "ap_type": "C",
            "size_bytes": "100", "business_id": "05"}


def _resident_form(card: str) -> dict[str, object]:
    return {"card_status": "active", "card_identifier": card, "kana_family": "キタ", "kana_given": "タロウ",
            "kanji_family": "北", "kanji_given": "太郎", "birth_date": "1980-01-01", "gender": "male",
            "postal_code": "060-0001", "address1": "北江戸市１"}


def _forged_logout_token(w: World) -> str:
    key = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
    now = int(time.time())
    issuer = w.app.config["OPAUTH_ISSUER"]
    return jwt.encode({"alg": "ES256", "typ": "logout+jwt"}, {
        "iss": issuer, "aud": "biz-01", "iat": now, "exp": now + 60, "jti": f"forged-{now}", "sid": w.minami_sid,
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}, key)


def test_every_route_has_an_entry_in_the_matrix(tmp_path: Path) -> None:
    missing, stale = matrix_gaps(create_app({"INSTANCE_DIR": str(tmp_path / "apdl")}))
    assert not missing, f"routes without an isolation entry: {sorted(missing)}"
    assert not stale, f"isolation entries without a route: {sorted(stale)}"
    assert all(entry.attempts and entry.addressed for entry in MATRIX.values())


def test_a_new_route_without_an_entry_is_caught(tmp_path: Path) -> None:
    app = create_app({"INSTANCE_DIR": str(tmp_path / "apdl")})
    app.add_url_rule("/residents/<int:resident_id>/export", "export", lambda resident_id: "", methods=["GET", "POST"])
    missing, _ = matrix_gaps(app)
    assert missing == {("/residents/<int:resident_id>/export", "GET"), ("/residents/<int:resident_id>/export", "POST")}


# --- the attempts -----------------------------------------------------------------------------------------

def _normalise(page: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token"', page)


def _screens(w: World) -> dict[str, tuple[int, str]]:
    """What 南江戸市 and the admin tenant see on their read screens."""
    minami, admin = w.clients["minami"], w.clients["admin"]
    pages = {("minami", p): minami for p in ("/", "/residents", _resident(w), f"/residents/{w.other_resident}",
                                            "/residents/fields", "/presets", "/aps", f"/aps/{w.registry.ids['E1']}",
                                            "/terminals")}
    pages.update({("admin", p): admin for p in ("/aps", "/tenants", "/tenants/minamiedo", "/tenants/kitaedo",
                                               f"/aps/{w.registry.ids['E3']}", "/terminals")})
    seen = {}
    for (who, path), client in pages.items():
        response = client.get(path)
        seen[f"{who} {path}"] = (response.status_code, _normalise(response.get_data(as_text=True)))
    return seen


def _log_after(app: Flask, last_id: int) -> tuple[int, list[OperationLog]]:
    with app.app_context():
        session = db.get_session()
        assert oplog.verify_chain(session) is None
        rows = list(session.scalars(select(OperationLog).where(OperationLog.id > last_id).order_by(OperationLog.id)))
        top = session.scalars(select(OperationLog.id).order_by(OperationLog.id.desc())).first() or 0
        return top, rows


def _card(stack: PcscStack) -> tuple[frozenset[str], bool]:
    return frozenset(stack.card.installed()), bool(stack.card.state.regional_created)


def _send(w: World, client: FlaskClient, attempt: Attempt, path: str):  # type: ignore[no-untyped-def]
    if attempt.form is None:
        return client.get(path)
    fields = attempt.form(w)
    if attempt.actor == "anonymous":  # the back channel carries no CSRF token
        return client.post(path, data=fields)
    token = csrf(client.get("/").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **fields})


def _build(opauth: Opauth, app: Flask, stack: PcscStack) -> World:
    registry = build_registry(opauth, app)
    minami = login(opauth, app, "minami")
    assert submit(minami, "/residents/fields", "/residents/fields",
                  {"label": "南江戸独自項目", "max_length": "20"}).status_code == 302
    field_id = int(re.findall(r'name="custom_(\d+)"', minami.get("/residents").get_data(as_text=True))[0])
    resident = register_resident(minami, kanji_family="南野", kana_family="ミナミノ",
                                 **{f"custom_{field_id}": "南江戸の値"})
    other = register_resident(minami, card=MINAMI_ONLY_CARD, kanji_family="南野", kana_family="ミナミノ",
                              **{f"custom_{field_id}": "南江戸の値"})
    page = f"/residents/{resident}"
    loaded = submit(minami, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"])]})
    assert loaded.status_code == 302, loaded.get_data(as_text=True)[-400:]
    assert stack.card.installed() == {APS["E1"][0]}
    installation = int(re.findall(r'/card/installations/(\d+)/delete', minami.get(page).get_data(as_text=True))[0])
    assert submit(minami, "/presets", "/presets", {"name": "南江戸セット", "ap_ids": [str(registry.ids["E1"])],
                                                   "auto_load": "on"}).status_code == 302
    preset = int(re.findall(r'/presets/(\d+)/delete', minami.get("/presets").get_data(as_text=True))[0])
    diagnosed = submit(minami, "/diagnosis", "/diagnosis", {})
    assert diagnosed.status_code == 302, diagnosed.get_data(as_text=True)[-400:]
    diagnosis = int(diagnosed.headers["Location"].rsplit("/", 1)[1])
    kita = login(opauth, app, "kita")
    kita_resident = register_resident(kita, card=CARD)  # the same holder, registered by 北江戸市 too
    with app.app_context():
        entry = db.get_session().scalars(select(OperationLog).where(
            OperationLog.action == "login", OperationLog.tenant_code == "minamiedo")).first()
        assert entry is not None
        sid = str(entry.detail["sid"])
    admin = login(opauth, app, "admin")
    assert submit(minami, "/terminals", "/terminals", {"name": "minami-desk", "organization": "南江戸市"}
                  ).status_code == 302  # 端末管理: its own terminal
    assert submit(admin, "/terminals", "/terminals", {"tenant_code": "kitaedo", "name": "kita-desk",
                                                      "organization": "北江戸市"}).status_code == 302
    terminal = int(re.findall(r'/terminals/(\d+)/disable', minami.get("/terminals").get_data(as_text=True))[0])
    kita_terminal = max(int(i) for i in re.findall(r'/terminals/(\d+)/disable',
                                                   admin.get("/terminals").get_data(as_text=True)))
    clients = {"minami": minami, "kita": kita, "admin": admin, "kitamgr": login(opauth, app, "kitamgr"),
               "anonymous": app.test_client()}
    return World(app, registry, clients, resident, other, kita_resident, installation, preset, field_id, sid,
                 diagnosis, terminal, kita_terminal)


@pytest.mark.pcsc
def test_no_route_reaches_another_tenants_objects(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    assert not any(matrix_gaps(apdl_app)), "see test_every_route_has_an_entry_in_the_matrix"
    w = _build(opauth, apdl_app, card_stack)
    tenant_of = {label: account.tenant for label, account in ACCOUNTS.items()}
    tenant_of.update({"anonymous": "", "kita-leaving": "kitaedo"})
    # attempts that legitimately write the attacker's own rows go last, so they cannot hide a marker
    ordered = sorted(((rule, method, attempt) for (rule, method) in sorted(routes(apdl_app))
                      for attempt in MATRIX[(rule, method)].attempts), key=lambda x: bool(x[2].writes - {"refused"}))
    checked = 0
    for rule, method, attempt in ordered:
        label = f"{method} {rule} as {attempt.actor}"
        leaving = attempt.actor == "kita-leaving"  # logs out: its own fresh session
        client = login(opauth, apdl_app, "kita") if leaving else w.clients[attempt.actor]
        before_screens, before_card = _screens(w), _card(card_stack)
        last_id, _ = _log_after(apdl_app, 10**9)
        path = attempt.path(w)
        response = _send(w, client, attempt, path)
        body = response.get_data(as_text=True)
        assert response.status_code == attempt.expect, (label, response.status_code, body[-300:])
        assert response.status_code < 500, label
        forbidden = (*MARKERS, *attempt.absent(w)) if attempt.actor != "minami" else attempt.absent(w)
        assert not [m for m in forbidden if m in body], (label, [m for m in forbidden if m in body])
        if attempt.follow:
            target = client.get(response.headers["Location"]).get_data(as_text=True)
            assert not [m for m in MARKERS if m in target], (label, "redirect target")
        if attempt.missing is not None:
            control = _send(w, client, attempt, attempt.missing(w))
            assert (control.status_code, _normalise(control.get_data(as_text=True))) == (
                response.status_code, _normalise(body)), (label, "answers differently from a missing object")
        assert _screens(w) == before_screens, (label, "南江戸市's or the admin's screens changed")
        assert _card(card_stack) == before_card, (label, "the card changed")
        _, written = _log_after(apdl_app, last_id)
        for entry in written:
            assert entry.tenant_code == tenant_of[attempt.actor], (label, entry.tenant_code, entry.action)
            assert entry.action in attempt.writes, (label, entry.action)
        checked += 1
    assert checked == sum(len(entry.attempts) for entry in MATRIX.values())
