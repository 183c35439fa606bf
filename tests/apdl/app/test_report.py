"""報告: loads and deletions per AP and 利用機関 for a year, on screen and as CSV (UTF-8 and CP932); the totals
equal the operation log's counts after loads and deletions through the real card path; permissions and input."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from apdl import db
from apdl.emulator import faults
from apdl.emulator.faults import StatusRule
from apdl.emulator.stack import PcscStack
from apdl.errors import InvalidInput
from apdl.models import Installation, OperationLog
from apdl.report import Period, bounds, parse_request
from tests.apdl.app.conftest import Opauth, issued_card, login, submit
from tests.apdl.app.world import APS, build_registry, register_resident

HEADER = ["期間", "利用機関コード", "利用機関名", "AID", "カードAP名", "搭載件数", "削除件数"]


def test_the_fiscal_year_runs_april_to_march_in_japan_time() -> None:
    assert bounds(2026, Period.FISCAL) == (datetime(2026, 3, 31, 15, tzinfo=UTC), datetime(2027, 3, 31, 15, tzinfo=UTC))
    assert bounds(2026, Period.CALENDAR) == (datetime(2025, 12, 31, 15, tzinfo=UTC),
                                             datetime(2026, 12, 31, 15, tzinfo=UTC))
    assert parse_request("", "", today=datetime(2027, 3, 31, 14, 59, tzinfo=UTC)) == (2026, Period.FISCAL)
    assert parse_request("", "", today=datetime(2027, 3, 31, 15, 0, tzinfo=UTC)) == (2027, Period.FISCAL)
    assert parse_request("", "calendar", today=datetime(2027, 2, 1, tzinfo=UTC)) == (2027, Period.CALENDAR)
    for year, period in (("20x6", ""), ("1999", ""), ("2101", ""), ("０２０２", ""), ("2026", "weekly")):
        with pytest.raises(InvalidInput):
            parse_request(year, period)


def _csv(client: FlaskClient, query: str, encoding: str) -> tuple[list[list[str]], bytes, dict[str, str]]:
    response = client.get(f"/report/csv?{query}&encoding={encoding}")
    assert response.status_code == 200, response.get_data(as_text=True)[-300:]
    body = response.get_data()
    text = body.decode("utf-8-sig" if encoding == "utf-8" else "cp932")
    return list(csv.reader(io.StringIO(text))), body, dict(response.headers)


def _total(counts: dict[tuple[str, str, str], int], action: str) -> int:
    return sum(n for key, n in counts.items() if key[2] == action)


def _log_counts(app: Flask, tenant: str | None = None) -> Counter[tuple[str, str, str]]:
    """(tenant, AID, action) of every ap_installed / ap_deleted entry, counted straight from the log."""
    with app.app_context():
        entries = db.get_session().scalars(select(OperationLog).where(
            OperationLog.action.in_(("ap_installed", "ap_deleted"))))
        return Counter((e.tenant_code, e.target.removeprefix("ap:"), e.action) for e in entries
                       if tenant is None or e.tenant_code == tenant)


@pytest.mark.pcsc
def test_report_totals_equal_the_operation_log(opauth: Opauth, apdl_app: Flask, card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    minami = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(minami)}"
    assert submit(minami, page, f"{page}/card/regional-area", {}).status_code == 302
    for labels in (["R1", "E1", "E2"], ["E3"]):
        response = submit(minami, page, f"{page}/card/download",
                          {"ap_ids": [str(registry.ids[label]) for label in labels], "pin": "2580"})
        assert response.status_code == 302
    with apdl_app.app_context():
        e1 = db.get_session().scalars(select(Installation).where(
            Installation.card_ap_id == registry.ids["E1"])).one().id
    assert submit(minami, page, f"{page}/card/installations/{e1}/delete", {"confirm": "yes"}).status_code == 302
    assert submit(minami, page, f"{page}/card/download", {"ap_ids": [str(registry.ids["E1"])]}).status_code == 302
    faults.write(card_stack.fault_path, status=[StatusRule(0x6A84, ins=0xE6, times=1)])  # a refused load
    card_stack.card.load_state(issued_card(apdl_app, card_identifier="2222222222222"))
    kita = login(opauth, apdl_app, "kita")
    kita_page = f"/residents/{register_resident(kita, card='2222222222222')}"
    assert submit(kita, kita_page, f"{kita_page}/card/download",
                  {"ap_ids": [str(registry.ids["E1"])]}).status_code == 403  # 6A84: not counted
    assert submit(kita, kita_page, f"{kita_page}/card/download",
                  {"ap_ids": [str(registry.ids["E1"])]}).status_code == 302

    logged = _log_counts(apdl_app)
    assert sum(logged.values()) == 7 and logged[("minamiedo", APS["E1"][0], "ap_installed")] == 2
    admin = login(opauth, apdl_app, "admin")
    year = parse_request("", "")[0]
    query = f"year={year}&period=fiscal"
    screen = admin.get(f"/report?{query}").get_data(as_text=True)
    installs = sum(n for (_t, _a, action), n in logged.items() if action == "ap_installed")
    deletions = sum(n for (_t, _a, action), n in logged.items() if action == "ap_deleted")
    assert (installs, deletions) == (6, 1)
    assert f'id="total-loads">{installs}<' in screen and f'id="total-deletions">{deletions}<' in screen
    assert "南江戸市" in screen and "北江戸市" in screen and APS["R1"][1] in screen
    for tenant in ("minamiedo", "kitaedo"):
        mine = {k: n for k, n in logged.items() if k[0] == tenant}
        assert (f'<tr id="tenant-{tenant}"><td>{tenant}</td><td>{_total(mine, "ap_installed")}</td>'
                f'<td>{_total(mine, "ap_deleted")}</td></tr>') in screen
    e1_logged = {k: n for k, n in logged.items() if k[1] == APS["E1"][0]}
    assert (f'<tr id="ap-{APS["E1"][0]}"><td>{APS["E1"][0]}</td><td>{_total(e1_logged, "ap_installed")}</td>'
            f'<td>{_total(e1_logged, "ap_deleted")}</td></tr>') in screen
    assert _total(e1_logged, "ap_installed") == 3  # twice by 南江戸市, once by 北江戸市

    utf8, body, headers = _csv(admin, query, "utf-8")
    assert body.startswith(b"\xef\xbb\xbf") and headers["Content-Type"] == "text/csv; charset=UTF-8"
    assert headers["Content-Disposition"] == f'attachment; filename="apdl-report-FY{year}.csv"'
    assert utf8[0] == HEADER and utf8[-1] == [f"{year}年度", "合計", "", "", "", str(installs), str(deletions)]
    from_csv = Counter()
    for _label, tenant, _name, aid, _ap, loads, deleted in utf8[1:-1]:
        from_csv[(tenant, aid, "ap_installed")] += int(loads)
        from_csv[(tenant, aid, "ap_deleted")] += int(deleted)
    assert +from_csv == logged  # every 利用機関 and AP, line by line
    cp932, body, headers = _csv(admin, query, "cp932")
    assert cp932 == utf8 and headers["Content-Type"] == "text/csv; charset=Shift_JIS"
    assert "南江戸市".encode("cp932") in body and "南江戸市".encode() not in body
    upper, _body, headers = _csv(admin, query, "CP932")  # the name in any case
    assert upper == utf8 and headers["Content-Type"] == "text/csv; charset=Shift_JIS"

    own, _body, _headers = _csv(minami, query, "utf-8")  # ap.manage in a municipality: its own lines only
    assert {row[1] for row in own[1:-1]} == {"minamiedo"}
    minami_logged = _log_counts(apdl_app, "minamiedo")
    assert own[-1][5:] == [str(sum(n for k, n in minami_logged.items() if k[2] == "ap_installed")),
                           str(sum(n for k, n in minami_logged.items() if k[2] == "ap_deleted"))]
    earlier, _body, _headers = _csv(admin, f"year={year - 1}&period=fiscal", "utf-8")
    assert earlier == [HEADER, [f"{year - 1}年度", "合計", "", "", "", "0", "0"]]
    calendar, _body, _headers = _csv(admin, f"year={datetime.now(UTC).year}&period=calendar", "utf-8")
    assert calendar[-1][5:] == [str(installs), str(deletions)]
    with apdl_app.app_context():
        exported = db.get_session().scalars(select(OperationLog).where(OperationLog.action == "report_exported")).all()
    assert len(exported) == 6


def test_the_report_is_only_for_the_manage_permission_and_refuses_bad_input(opauth: Opauth,
                                                                             apdl_app: Flask) -> None:
    for label in ("kita", "reader"):  # ap.download etc. / user.register only: no ap.manage
        client = login(opauth, apdl_app, label)
        assert client.get("/report").status_code == 403
        assert client.get("/report/csv?encoding=cp932").status_code == 403
    assert apdl_app.test_client().get("/report").status_code == 302  # to the login
    admin = login(opauth, apdl_app, "admin")
    assert admin.get("/report").status_code == 200
    for query in ("year=abcd", "year=1999", "year=20266", "period=weekly", "encoding=latin-1", "encoding=",
                  "year=%00"):
        response = admin.get(f"/report/csv?{query}")
        assert response.status_code == 400, query
    assert admin.get("/report?year=abcd").status_code == 400
    with apdl_app.app_context():
        session = db.get_session()
        assert session.scalars(select(OperationLog).where(OperationLog.action == "report_exported")).all() == []
        refused = session.scalars(select(OperationLog).where(OperationLog.action == "refused")).all()
    assert {r.target for r in refused} >= {"/report", "/report/csv"}


def test_a_name_excel_would_run_as_a_formula_is_inert_in_the_csv(opauth: Opauth, apdl_app: Flask,
                                                                  card_stack: PcscStack) -> None:
    registry = build_registry(opauth, apdl_app)
    admin = login(opauth, apdl_app, "admin")
    formula = '=HYPERLINK("http://attacker.example/","c")'
    fields = {"aid": "D392F000030009", "name": formula, "description": "説明", "provider_name": "南江戸市",
              "area": "extended", "ap_type": "C", "size_bytes": "2048", "pin_max_tries": "3", "business_id": "05",
              "personalize_url": "https://perso.example.jp/p"}
    assert submit(admin, "/aps", "/aps", fields).status_code == 302
    ap_id = admin.get("/aps").get_data(as_text=True).split('">D392F000030009<')[0].rsplit("/aps/", 1)[1]
    assert submit(admin, "/tenants/minamiedo", "/tenants/minamiedo/availability",
                  {"action": "add", "add_ids": [ap_id]}).status_code == 302
    minami = login(opauth, apdl_app, "minami")
    page = f"/residents/{register_resident(minami)}"
    assert submit(minami, page, f"{page}/card/download",
                  {"ap_ids": [ap_id, str(registry.ids["E1"])]}).status_code == 302
    query = f"year={parse_request('', '')[0]}&period=fiscal"
    for encoding in ("utf-8", "cp932"):
        rows, _body, _headers = _csv(admin, query, encoding)
        names = [row[4] for row in rows[1:-1]]
        assert f"'{formula}" in names and APS["E1"][1] in names  # the formula shown as text, other names untouched
        assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)
