"""市町村・任意団体設定, 表示順変更, 共同利用業務設定, 業務内ID管理, パスワード一括変更 and the CLI."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select

from db import get_session
from kernel.audit import AuditEvent
from operators.login.passwords import verify_password
from operators.models import Operator, Tenant
from tests.conftest import csrf_token
from tests.helpers import run
from tests.operators.conftest import World, basic_client, register, web_client


def test_system_admin_creates_and_edits_tenants_and_reorders_them(world: World, sys_web: FlaskClient) -> None:
    page = sys_web.get("/admin/tenants").get_data(as_text=True)
    token = csrf_token(page)
    created = sys_web.post("/admin/tenants", data={"csrf_token": token, "code": "nishikanto",
                                                        "name": "西関東協議会", "kind": "voluntary"})
    assert created.status_code == 302
    dup = sys_web.post("/admin/tenants", data={"csrf_token": token, "code": "nishikanto", "name": "x",
                                                    "kind": "voluntary"})
    assert dup.status_code == 409 and "既に使われています" in dup.get_data(as_text=True)
    bad = sys_web.post("/admin/tenants", data={"csrf_token": token, "code": "Bad Code", "name": "x",
                                                    "kind": "voluntary"})
    assert bad.status_code == 400
    edit = sys_web.post("/admin/tenants/nishikanto/edit", data={"csrf_token": token, "name": "西関東協議会（改）",
                                                                     "kind": "voluntary"})
    assert edit.status_code == 302
    order = sys_web.post("/admin/tenants/order", data={
        "csrf_token": token, "order-system": "1", "order-nishikanto": "2", "order-musashino": "3",
        "order-minamiedo": "4"})
    assert order.status_code == 302
    with world.app.app_context():
        codes = [t.code for t in get_session().scalars(select(Tenant).order_by(Tenant.display_order))]
        assert codes == ["system", "nishikanto", "musashino", "minamiedo"]
    login = sys_web.get("/login").get_data(as_text=True)
    assert login.index("西関東協議会（改）") < login.index("南武蔵野市") < login.index("南江戸市")


def test_joint_use_two_lists_select_cancel_then_register(world: World, sys_web: FlaskClient) -> None:
    page = sys_web.get("/admin/joint-use?business_id=07").get_data(as_text=True)
    token = csrf_token(page)
    # 選択>>> moves 南武蔵野市 to the permitted list, but nothing is saved yet
    moved = sys_web.post("/admin/joint-use", data={
        "csrf_token": token, "business_id": "07", "permitted": ["minamiedo"], "add": ["musashino"],
        "action": "select"}).get_data(as_text=True)
    permitted_list = moved.split('id="remove"')[1]
    assert "南武蔵野市" in permitted_list and "南江戸市" in permitted_list
    api = basic_client(world.app, "sysadm", "system")
    assert api.get("/api/v1/business-systems/07/joint-use").get_json()["tenants"] == ["minamiedo"]
    # <<<取消 takes 南江戸市 out again, then 登録 saves
    sys_web.post("/admin/joint-use", data={
        "csrf_token": token, "business_id": "07", "permitted": ["minamiedo", "musashino"], "remove": ["minamiedo"],
        "action": "cancel"})
    saved = sys_web.post("/admin/joint-use", data={
        "csrf_token": token, "business_id": "07", "permitted": ["musashino"], "action": "save"})
    assert saved.status_code == 302
    assert api.get("/api/v1/business-systems/07/joint-use").get_json()["tenants"] == ["musashino"]
    assert api.put("/api/v1/business-systems/07/joint-use", json={"tenants": ["nosuch"]}).status_code == 400
    with world.app.app_context():
        event = get_session().scalar(select(AuditEvent).where(AuditEvent.action == "joint_use.changed"))
        assert event is not None and event.detail == {"added": ["musashino"], "removed": ["minamiedo"]}


def test_tenant_managers_cannot_manage_tenants_or_joint_use(world: World, api_a: FlaskClient,
                                                           web_a: FlaskClient) -> None:
    assert web_a.get("/admin/tenants").status_code == 403
    assert web_a.get("/admin/joint-use").status_code == 403
    assert api_a.post("/api/v1/tenants", json={"code": "x", "name": "x", "kind": "voluntary"}).status_code == 403
    assert api_a.put("/api/v1/tenant-order", json={"codes": []}).status_code == 403


def test_in_business_ids_by_the_business_system_administrator(world: World, api_a: FlaskClient) -> None:
    register(api_a, business_ids=["05", "07"])
    register(api_a, operator_id="OP0602", business_ids=["05"])

    web = web_client(world.app, "badmin07", "system")
    page = web.get("/admin/t/minamiedo/in-business-ids/07")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "OP0601" in html and "OP0602" not in html  # only 07's operators
    response = web.post("/admin/t/minamiedo/in-business-ids/07/OP0601", data={
        "csrf_token": csrf_token(html), "in_business_id": "MADO-001", "permissions": "issue, reissue;view"})
    assert response.status_code == 302
    detail = api_a.get("/api/v1/tenants/minamiedo/operators/OP0601").get_json()
    assert detail["in_business_ids"]["07"] == {"in_business_id": "MADO-001",
                                               "permissions": ["issue", "reissue", "view"]}
    page = web_client(world.app, "mgrA", "minamiedo").get("/admin/t/minamiedo/operators/OP0601")
    assert "07: MADO-001 (issue, reissue, view)" in page.get_data(as_text=True)
    # an operator without permission for 07 cannot be mapped in it
    assert web.post("/admin/t/minamiedo/in-business-ids/07/OP0602", data={
        "csrf_token": csrf_token(html), "in_business_id": "X"}).status_code == 404
    bad = basic_client(world.app, "badmin07", "system").put(
        "/api/v1/tenants/minamiedo/business-systems/07/in-business-ids/OP0601",
        json={"in_business_id": "bad id!", "permissions": []})
    assert bad.status_code == 400
    confirm = web.post("/admin/t/minamiedo/in-business-ids/07/OP0601", data={
        "csrf_token": csrf_token(html), "action": "delete"})
    assert confirm.status_code == 200 and "よろしいですか" in confirm.get_data(as_text=True)
    assert "07" in api_a.get("/api/v1/tenants/minamiedo/operators/OP0601").get_json()["in_business_ids"]
    removed = web.post("/admin/t/minamiedo/in-business-ids/07/OP0601", data={
        "csrf_token": csrf_token(html), "action": "delete", "confirmed": "1"})
    assert removed.status_code == 302
    assert "07" not in api_a.get("/api/v1/tenants/minamiedo/operators/OP0601").get_json()["in_business_ids"]


def test_bulk_password_change_exports_new_passwords_once(world: World, api_a: FlaskClient,
                                                         web_a: FlaskClient) -> None:
    register(api_a, operator_id="OP0601", password="Old-Password-0601")
    register(api_a, operator_id="OP0602", password="Old-Password-0602")
    page = web_a.get("/admin/t/minamiedo/passwords").get_data(as_text=True)
    confirm = web_a.post("/admin/t/minamiedo/passwords", data={"csrf_token": csrf_token(page),
                                                               "operator_ids": ["OP0601", "OP0602"]})
    assert confirm.status_code == 200 and "よろしいですか" in confirm.get_data(as_text=True)
    with world.app.app_context():  # nothing changed before the confirmation
        op = get_session().scalar(select(Operator).where(Operator.operator_id == "OP0601"))
        assert op is not None and verify_password(op.password_hash, "Old-Password-0601")
    response = web_a.post("/admin/t/minamiedo/passwords", data={"csrf_token": csrf_token(page), "confirmed": "1",
                                                                "operator_ids": ["OP0601", "OP0602"]})
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    assert rows[0] == ["オペレータID", "パスワード"] and [r[0] for r in rows[1:]] == ["OP0601", "OP0602"]
    with world.app.app_context():
        for operator_id, password in rows[1:]:
            op = get_session().scalar(select(Operator).where(Operator.operator_id == operator_id))
            assert op is not None and op.must_change_password
            assert verify_password(op.password_hash, password)
            assert not verify_password(op.password_hash, f"Old-Password-{operator_id[2:]}")
    # another tenant's operator ID in the list: 404 and nothing changes
    api_b = basic_client(world.app, "mgrB", "musashino")
    assert api_b.post("/api/v1/tenants/musashino/passwords", json={"operator_ids": ["OP0601"]}).status_code == 404
    assert api_a.post("/api/v1/tenants/minamiedo/passwords", json={"operator_ids": []}).status_code == 400


def test_lists_are_paginated(world: World, api_a: FlaskClient, web_a: FlaskClient) -> None:
    data = "オペレータID,氏名・組織名\r\n" + "".join(f"OP{i:03d},職員{i}\r\n" for i in range(120))
    assert api_a.post("/api/v1/tenants/minamiedo/operators/import", data=data.encode(),
                      content_type="text/csv").status_code == 201
    first = api_a.get("/api/v1/tenants/minamiedo/operators?per_page=50").get_json()
    assert first["total"] == 121 and len(first["items"]) == 50
    last = api_a.get("/api/v1/tenants/minamiedo/operators?per_page=50&page=3").get_json()
    assert len(last["items"]) == 21
    assert api_a.get("/api/v1/tenants/minamiedo/operators?page=0").status_code == 400
    html = web_a.get("/admin/t/minamiedo/operators?page=2").get_data(as_text=True)
    assert "2 / 3" in html and "次へ" in html and "前へ" in html


def test_cli_tenant_joint_use_register_import_export_revoke(world: World, tmp_path: Path) -> None:
    runner = world.app.test_cli_runner(env={"LANG": "ja_JP.UTF-8", "LC_ALL": None, "LC_MESSAGES": None})
    result = runner.invoke(args=["tenant", "create", "--code", "higashi", "--name", "東市"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(args=["tenant", "joint-use", "05", "higashi", "minamiedo"]).exit_code == 0
    p12 = tmp_path / "op.p12"
    result = runner.invoke(args=["operator", "register", "--tenant", "higashi", "--operator-id", "OP9001",
                                 "--name", "東 一郎", "--business-ids", "05", "--p12-out", str(p12)])
    assert result.exit_code == 0, result.output
    password = result.output.split("its password (shown once): ")[1].split()[0]
    assert oct(p12.stat().st_mode & 0o777) == "0o600"
    assert run("openssl", "pkcs12", "-info", "-noout", "-in", p12, "-passin", f"pass:{password}").returncode == 0
    csv_path = tmp_path / "ops.csv"
    csv_path.write_bytes("オペレータID,氏名・組織名,許可業務\r\nOP9002,東 二郎,05\r\n".encode("cp932"))
    result = runner.invoke(args=["operator", "import", "--tenant", "higashi", str(csv_path)])
    assert result.exit_code == 0 and "imported 1" in result.output, result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("オペレータID,氏名・組織名,許可業務\r\nOP9003,東,07\r\n")
    result = runner.invoke(args=["operator", "import", "--tenant", "higashi", str(bad)])
    assert result.exit_code == 2 and "2 行目" in result.output
    out = tmp_path / "export.csv"
    assert runner.invoke(args=["operator", "export", "--tenant", "higashi", "--out", str(out)]).exit_code == 0
    assert "東 二郎" in out.read_bytes().decode("utf-8-sig")
    assert runner.invoke(args=["operator", "export", "--tenant", "higashi", "--out", str(out), "--name",
                               "一郎"]).exit_code == 0
    assert "東 二郎" not in out.read_bytes().decode("utf-8-sig")
    result = runner.invoke(args=["operator", "revoke", "--tenant", "higashi", "--yes", "OP9001"])
    assert result.exit_code == 0 and "1 certificates revoked" in result.output, result.output
    assert runner.invoke(args=["tenant", "list"]).output.count("higashi") == 1


def test_withdrawn_joint_use_takes_the_permission_from_the_tenants_operators(world: World,
                                                                             api_a: FlaskClient) -> None:
    old_serial = register(api_a, business_ids=["05", "07"], in_business_id="U1")["certificate"]["serial"]
    admin = basic_client(world.app, "sysadm", "system")
    assert admin.put("/api/v1/business-systems/07/joint-use", json={"tenants": []}).status_code == 200
    detail = api_a.get("/api/v1/tenants/minamiedo/operators/OP0601").get_json()
    assert detail["business_ids"] == ["05"] and list(detail["in_business_ids"]) == ["05"]
    new, old = detail["certificates"]
    assert old["serial"] == old_serial and old["status"] == "revoked" and old["revocation_reason"] == "superseded"
    assert new["status"] == "valid" and new["business_ids"] == ["05"]


def test_system_admin_registers_a_business_system_administrator(world: World, sys_api: FlaskClient,
                                                                sys_web: FlaskClient) -> None:
    response = sys_api.post("/api/v1/tenants/minamiedo/operators", json={
        "operator_id": "BIZ07", "name": "窓口 管理者", "role": "business_admin", "administers_business_id": "07",
        "password": "Biz-Admin-Password-7"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["operator"]["administers_business_id"] == "07"
    page = sys_web.get("/admin/t/minamiedo/operators/BIZ07/edit").get_data(as_text=True)
    assert 'name="administers_business_id" value="07"' in page
    saved = sys_web.post("/admin/t/minamiedo/operators/BIZ07/edit", data={
        "csrf_token": csrf_token(page), "name": "窓口 管理者（改）", "role": "business_admin",
        "administers_business_id": "07"})
    assert saved.status_code == 302, saved.get_data(as_text=True)
    biz = basic_client(world.app, "BIZ07", "minamiedo", "Biz-Admin-Password-7")
    with world.app.app_context():
        session = get_session()
        op = session.scalar(select(Operator).where(Operator.operator_id == "BIZ07"))
        assert op is not None
        op.must_change_password = False
        session.commit()
    assert biz.get("/api/v1/tenants/minamiedo/business-systems/07/in-business-ids").status_code == 200
    assert biz.get("/api/v1/tenants/minamiedo/business-systems/05/in-business-ids").status_code == 404
