"""Screens that behave: a refused form keeps what was typed and says why in Japanese; menus lead where
they say; the bulk pages can select everything; the CSV import shows one progress bar."""

from __future__ import annotations

import html as html_lib
import io
import re

from flask.testing import FlaskClient
from sqlalchemy import select

from db import get_session
from kernel.audit import AuditEvent
from operators.models import Tenant
from tests.conftest import csrf_token
from tests.operators.conftest import World, register, web_client
from tests.operators.test_csv import csv_bytes, row


def _password_field(page: str) -> str:
    match = re.search(r'<input id="password" name="password"[^>]*value="([^"]*)"', page)
    assert match, "no password field"
    return html_lib.unescape(match.group(1))


def test_generated_password_survives_a_refused_registration(world: World, web_a: FlaskClient) -> None:
    page = web_a.get("/admin/t/minamiedo/register").get_data(as_text=True)
    token = csrf_token(page)
    form = {"csrf_token": token, "operator_id": "OP7001", "name": "", "business_ids": ["05"],
            "auth_method": "password", "role": "operator", "gender": "unspecified"}
    generated_page = web_a.post("/admin/t/minamiedo/register", data=dict(form, action="generate"))
    generated = _password_field(generated_page.get_data(as_text=True))
    assert len(generated) >= 12

    refused = web_a.post("/admin/t/minamiedo/register", data=dict(form, action="stage", password=generated))
    body = refused.get_data(as_text=True)
    assert refused.status_code == 400 and 'class="error"' in body
    assert _password_field(body) == generated  # still there to copy, and to submit again
    assert 'value="OP7001"' in body

    accepted = web_a.post("/admin/t/minamiedo/register",
                          data=dict(form, action="stage", password=generated, name="山田 花子"))
    assert accepted.status_code == 302


def _tenant_order(world: World) -> list[str]:
    with world.app.app_context():
        return [t.code for t in get_session().scalars(select(Tenant).order_by(Tenant.display_order, Tenant.code))]


def test_tenant_order_refuses_what_is_not_a_number(world: World, sys_web: FlaskClient) -> None:
    before = _tenant_order(world)
    page = sys_web.get("/admin/tenants/order").get_data(as_text=True)
    form = {"csrf_token": csrf_token(page), "order-system": "1", "order-minamiedo": "2", "order-musashino": "abc"}
    refused = sys_web.post("/admin/tenants/order", data=form)
    body = refused.get_data(as_text=True)
    assert refused.status_code == 400
    assert "表示順には 1 から 99999 までの整数を入力してください" in body and "南武蔵野市（abc）" in body
    assert 'value="abc"' in body and 'aria-invalid="true"' in body
    assert _tenant_order(world) == before  # nothing moved

    for bad in ("", "-1", "0", "１", "100000", "2.5"):
        assert sys_web.post("/admin/tenants/order", data=dict(form, **{"order-musashino": bad})).status_code == 400
    assert _tenant_order(world) == before

    moved = sys_web.post("/admin/tenants/order", data=dict(form, **{"order-musashino": "0002", "order-minamiedo": "3"}))
    assert moved.status_code == 302
    assert _tenant_order(world) == ["system", "musashino", "minamiedo"]


def test_bad_in_business_id_is_a_form_error_on_the_list(world: World, api_a: FlaskClient) -> None:
    register(api_a, business_ids=["05", "07"])
    web = web_client(world.app, "badmin07", "system")
    page = web.get("/admin/t/minamiedo/in-business-ids/07").get_data(as_text=True)
    refused = web.post("/admin/t/minamiedo/in-business-ids/07/OP0601", data={
        "csrf_token": csrf_token(page), "in_business_id": "bad id!", "permissions": "view"})
    body = refused.get_data(as_text=True)
    assert refused.status_code == 400
    assert "業務内ID管理" in body and 'id="in-business-error"' in body  # the list page, not a bare error page
    assert "業務内IDは半角英数字と _ . @ - の1〜64文字で入力してください。" in body
    assert "must be" not in body
    assert 'value="bad id!"' in body and 'aria-invalid="true"' in body

    bad_permission = web.post("/admin/t/minamiedo/in-business-ids/07/OP0601", data={
        "csrf_token": csrf_token(page), "in_business_id": "MADO-1", "permissions": "view, 発行"})
    assert bad_permission.status_code == 400
    assert "業務権限「発行」に使えるのは" in bad_permission.get_data(as_text=True)
    assert "07" not in api_a.get("/api/v1/tenants/minamiedo/operators/OP0601").get_json()["in_business_ids"]


def test_pending_and_bulk_password_pages_have_select_all(world: World, web_a: FlaskClient) -> None:
    page = web_a.get("/admin/t/minamiedo/import").get_data(as_text=True)
    web_a.post("/admin/t/minamiedo/import", data={
        "csrf_token": csrf_token(page), "file": (io.BytesIO(csv_bytes([row("OP6001"), row("OP6002")])), "a.csv")},
        content_type="multipart/form-data").get_data()
    for path in ("/admin/t/minamiedo/certificates/pending", "/admin/t/minamiedo/passwords"):
        body = web_a.get(path).get_data(as_text=True)
        assert 'data-select-all="operator_ids"' in body, path
        assert "js/select_all.js" in body, path
        assert body.count('name="operator_ids"') >= 2, path


def test_posting_the_pending_and_password_lists_with_nothing_selected_says_so_in_the_ui_language(
        world: World, web_a: FlaskClient) -> None:
    token = csrf_token(web_a.get("/admin/t/minamiedo/passwords").get_data(as_text=True))
    pending = "証明書を発行するオペレータを 1 人以上 100 人以下で選択してください。"
    for path, japanese, english in (
            ("/admin/t/minamiedo/certificates/pending", pending,
             "Select between 1 and 100 operators to issue certificates for."),
            ("/admin/t/minamiedo/passwords", "パスワードを変更するオペレータを一人以上選択してください。",
             "Select at least one operator whose password is to be changed.")):
        response = web_a.post(path, data={"csrf_token": token})
        assert response.status_code == 400 and japanese in response.get_data(as_text=True), path
        response = web_a.post(path + "?lang=en", data={"csrf_token": token})
        assert response.status_code == 400 and english in response.get_data(as_text=True), path
        web_a.get("/admin/t/minamiedo/?lang=ja")  # back to Japanese for the next request
    no_file = web_a.post("/admin/t/minamiedo/import", data={"csrf_token": token}, content_type="multipart/form-data")
    assert no_file.status_code == 400 and "取り込む CSV ファイルを選択してください。" in no_file.get_data(as_text=True)
    with world.app.app_context():
        rejected = get_session().scalars(select(AuditEvent)
                                         .where(AuditEvent.action == "certificate.issuance_rejected")).all()
        reasons = [event.detail.get("reason") for event in rejected]
    assert pending in reasons, reasons  # the audit detail too


def test_tenant_menu_leads_to_biometrics_management(world: World, web_a: FlaskClient) -> None:
    menu = web_a.get("/admin/t/minamiedo/").get_data(as_text=True)
    assert 'href="/bio/manage?tenant=minamiedo"' in menu and "生体情報管理" in menu
    assert web_a.get("/bio/manage?tenant=minamiedo").status_code == 200


def test_top_menu_operator_certificates_and_operator_management_lead_to_different_pages(
        world: World, web_a: FlaskClient) -> None:
    top = web_a.get("/top").get_data(as_text=True)
    links = dict((label, href) for href, label in re.findall(r'<a href="([^"]+)">([^<]+)</a>', top))
    assert links["オペレータ証明書"] != links["オペレータ管理"]
    certificates = web_a.get(links["オペレータ証明書"]).get_data(as_text=True)
    assert "/admin/t/minamiedo/register" in certificates  # オペレータ証明書発行
    assert "/admin/t/minamiedo/certificates/pending" in certificates
    assert "/admin/t/musashino/" not in certificates  # only the manager's own tenant


def test_csv_import_streams_steps_that_one_script_collapses_into_one_bar(world: World, web_a: FlaskClient) -> None:
    page = web_a.get("/admin/t/minamiedo/import").get_data(as_text=True)
    data = csv_bytes([row(f"OP{i:05d}") for i in range(1_200)])
    response = web_a.post("/admin/t/minamiedo/import", data={
        "csrf_token": csrf_token(page), "file": (io.BytesIO(data), "ops.csv")}, content_type="multipart/form-data")
    body = response.get_data(as_text=True)
    assert "js/import_progress.js" in body.split("</head>")[0]
    assert re.findall(r'<p class="import-step"[^>]*><progress value="(\d+)"', body) == ["0", "500", "1000", "1200"]


def _stage_and_issue(web: FlaskClient, operator_id: str, auth_method: str) -> str:
    token = csrf_token(web.get("/admin/t/minamiedo/register").get_data(as_text=True))
    staged = web.post("/admin/t/minamiedo/register", data={
        "csrf_token": token, "action": "stage", "operator_id": operator_id, "password": "Register-Pass-0001",
        "name": "山田 花子", "gender": "unspecified", "business_ids": ["05"], "auth_method": auth_method,
        "role": "operator"})
    assert staged.status_code == 302, staged.get_data(as_text=True)
    issued = web.post("/admin/t/minamiedo/staged/issue", data={"csrf_token": token})
    assert issued.status_code == 200
    return issued.get_data(as_text=True)


def test_issue_result_asks_for_biometrics_only_when_a_biometric_operator_was_issued(
        world: World, web_a: FlaskClient) -> None:
    reminder = "生体認証方式の操作者は、続けて生体情報を登録してください。"
    assert reminder not in _stage_and_issue(web_a, "OP7101", "password")
    assert reminder in _stage_and_issue(web_a, "OP7102", "biometric")


def test_error_page_leads_to_login_or_to_the_top_screen(world: World, web_a: FlaskClient) -> None:
    anonymous = world.app.test_client().get("/admin/t/minamiedo/operators/none?x=%00")
    assert anonymous.status_code == 400 and 'href="/login"' in anonymous.get_data(as_text=True)
    logged_in = web_a.get("/admin/t/minamiedo/operators/NOSUCH")
    assert logged_in.status_code == 404 and 'href="/top"' in logged_in.get_data(as_text=True)
