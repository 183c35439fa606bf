"""一括登録 (CSV import), オペレータ情報出力 and 操作者情報の移行 (export from one tenant, import into another)."""

from __future__ import annotations

import csv
import io
import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from db import get_session
from operators.csv_io import COLUMNS, decode
from operators.models import InBusinessId, Operator, Tenant
from tests.conftest import csrf_token
from tests.operators.conftest import World, register

HEADER = [h for _, h in COLUMNS]


def csv_bytes(rows: list[list[str]], encoding: str = "utf-8", bom: bool = False,
              header: list[str] | None = None) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header or HEADER)
    writer.writerows(rows)
    data = out.getvalue().encode(encoding)
    return (b"\xef\xbb\xbf" + data) if bom else data


def row(operator_id: str, name: str = "渡邉 髙橋", business_ids: str = "05", **extra: str) -> list[str]:
    values = {"operator_id": operator_id, "name": name, "department": "住民課", "gender": "女性",
              "phone": "042-123-4567", "extension": "201", "email": "", "info": "①情報", "extra_info": "付帯",
              "auth_method": "生体認証", "business_ids": business_ids, "in_business_ids": "", "password": ""}
    values.update(extra)
    return [values[k] for k, _ in COLUMNS]


def count_operators(world: World, tenant: str) -> int:
    with world.app.app_context():
        return get_session().scalar(select(func.count()).select_from(Operator).join(Tenant).where(
            Tenant.code == tenant)) or 0


def import_api(api: FlaskClient, tenant: str, data: bytes, **params: str) -> tuple[int, dict[str, object]]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    response = api.post(f"/api/v1/tenants/{tenant}/operators/import?{query}", data=data, content_type="text/csv")
    return response.status_code, response.get_json()


@pytest.mark.parametrize(("encoding", "bom"), [("utf-8", False), ("utf-8", True), ("cp932", False)])
def test_japanese_names_import_in_every_excel_encoding(world: World, api_a: FlaskClient, encoding: str,
                                                       bom: bool) -> None:
    data = csv_bytes([row("OP1001", "渡邉 髙橋", "05;07", in_business_ids="05=U1;07=U2"),
                      row("OP1002", "ｶﾀｶﾅ 半角")], encoding, bom)
    status, body = import_api(api_a, "minamiedo", data)
    assert status == 201 and body == {"imported": 2}
    first = api_a.get("/api/v1/tenants/minamiedo/operators/OP1001").get_json()
    assert first["name"] == "渡邉 髙橋" and first["gender"] == "female" and first["auth_method"] == "biometric"
    assert first["business_ids"] == ["05", "07"] and first["info"] == "①情報"
    assert {k: v["in_business_id"] for k, v in first["in_business_ids"].items()} == {"05": "U1", "07": "U2"}
    assert api_a.get("/api/v1/tenants/minamiedo/operators/OP1002").get_json()["name"] == "ｶﾀｶﾅ 半角"


def test_a_bad_row_is_reported_with_its_line_and_nothing_is_written(world: World, api_a: FlaskClient) -> None:
    data = csv_bytes([row("OP2001"), row("OP2002", email="not-an-address"), row("OP2003")])
    status, body = import_api(api_a, "minamiedo", data)
    assert status == 400 and body["error"] == "invalid_csv_row"
    assert str(body["message"]).startswith("3 行目:") and "E-Mail" in str(body["message"])
    assert count_operators(world, "minamiedo") == 1  # mgrA only


@pytest.mark.parametrize(("rows", "line", "reason"), [
    ([row("OP1"), row("OP1")], 3, "2 行目にもあります"),
    ([row("OP1"), row("OP2", business_ids="99")], 3, "共同利用業務設定"),
    ([row("OP1"), ["OP2", "名前"]], 3, "列の数"),
    ([row("OP1", password="short")], 2, "パスワード"),
    ([row("mgrA")], 2, "登録済み"),
    ([row("OP1", in_business_ids="07=X")], 2, "業務内ID"),
])
def test_row_errors(world: World, api_a: FlaskClient, rows: list[list[str]], line: int, reason: str) -> None:
    status, body = import_api(api_a, "minamiedo", csv_bytes(rows))
    assert status == 400 and str(body["message"]).startswith(f"{line} 行目:") and reason in str(body["message"])
    assert count_operators(world, "minamiedo") == 1


@pytest.mark.parametrize("data", [b"", b"\xff\xfe\x00garbage\x81", "名前,年齢\r\nx,1\r\n".encode(),
                                  b"\xef\xbb\xbf" + "オペレータID,氏名・組織名\r\n".encode()])
def test_unusable_files_are_400_not_500(world: World, api_a: FlaskClient, data: bytes) -> None:
    status, _ = import_api(api_a, "minamiedo", data)
    assert status == 400


def test_a_json_body_is_415_not_read_as_a_csv_line(world: World, api_a: FlaskClient) -> None:
    response = api_a.post("/api/v1/tenants/minamiedo/operators/import", json={})
    assert response.status_code == 415 and response.get_json()["error"] == "unsupported_media_type"
    assert "text/csv" in response.get_json()["message"]
    assert count_operators(world, "minamiedo") == 1


def test_export_round_trip_migrates_operators_to_another_tenant(world: World, api_a: FlaskClient,
                                                                  api_b: FlaskClient) -> None:
    register(api_a, operator_id="OP3001", business_ids=["05", "07"], in_business_id="U3001", name="斎藤 齋")
    register(api_a, operator_id="OP3002", business_ids=["05"], name="別の 部署", department="税務課")
    exported = api_a.get("/api/v1/tenants/minamiedo/operators/export.csv?encoding=cp932")
    assert exported.status_code == 200
    text = decode(exported.data)
    assert "斎藤 齋" in text and "パスワード" not in text.splitlines()[0].split(",") and "$argon2" not in text
    assert "mgrA" not in text  # administrative accounts are not exported
    # 07 is not in 南武蔵野市's joint use: permissions are re-checked and the import refused...
    status, body = import_api(api_b, "musashino", exported.data)
    assert status == 400 and "07" in str(body["message"]) and str(body["message"]).startswith("2 行目:")
    assert count_operators(world, "musashino") == 1
    # ...unless the manager chooses to drop what the target tenant may not use
    status, body = import_api(api_b, "musashino", exported.data, drop_unpermitted="1")
    assert status == 201 and body == {"imported": 2}
    moved = api_b.get("/api/v1/tenants/musashino/operators/OP3001").get_json()
    assert moved["name"] == "斎藤 齋" and moved["business_ids"] == ["05"]
    assert moved["in_business_ids"]["05"]["in_business_id"] == "U3001"
    # and the export filters
    filtered = api_a.get("/api/v1/tenants/minamiedo/operators/export.csv?department=税務").data
    assert "OP3002" in decode(filtered) and "OP3001" not in decode(filtered)


def test_export_in_utf8_has_a_bom_for_excel_and_reimports(world: World, api_a: FlaskClient) -> None:
    register(api_a, operator_id="OP4001")
    body = api_a.get("/api/v1/tenants/minamiedo/operators/export.csv").data
    assert body.startswith(b"\xef\xbb\xbf")
    lines = decode(body).splitlines()
    assert lines[0].split(",")[:2] == ["オペレータID", "氏名・組織名"]


def test_template_downloads_and_imports(world: World, api_a: FlaskClient, web_a: FlaskClient) -> None:
    template = web_a.get("/admin/t/minamiedo/import/template.csv?encoding=cp932")
    assert template.status_code == 200 and template.mimetype == "text/csv"
    assert "オペレータID" in template.data.decode("cp932")
    status, body = import_api(api_a, "minamiedo", template.data)
    assert status == 201 and body == {"imported": 1}


def test_web_import_reports_the_bad_line(world: World, web_a: FlaskClient) -> None:
    page = web_a.get("/admin/t/minamiedo/import").get_data(as_text=True)
    data = csv_bytes([row("OP5001"), row("OP5002", phone="電話")], "cp932")
    response = web_a.post("/admin/t/minamiedo/import", data={
        "csrf_token": csrf_token(page), "file": (io.BytesIO(data), "ops.csv")}, content_type="multipart/form-data")
    assert response.status_code == 400 and "3 行目:" in response.get_data(as_text=True)
    assert count_operators(world, "minamiedo") == 1


def test_ten_thousand_rows_import_with_progress(world: World, web_a: FlaskClient) -> None:
    rows = [row(f"OP{i:05d}", f"職員 {i}番", "05;07" if i % 2 else "05", in_business_ids=f"U{i}",
                email=f"staff{i}@city.example.jp", info="情報" * 5, extra_info="付帯情報" * 5)
            for i in range(10_000)]
    data = csv_bytes(rows, "cp932")
    assert len(data) > 1024 * 1024  # above the general upload limit: the import has its own
    page = web_a.get("/admin/t/minamiedo/import").get_data(as_text=True)
    response = web_a.post("/admin/t/minamiedo/import", data={
        "csrf_token": csrf_token(page), "file": (io.BytesIO(data), "ops.csv")}, content_type="multipart/form-data")
    assert response.status_code == 200 and response.is_streamed
    html = response.get_data(as_text=True)
    progress = [int(v) for v in re.findall(r'<progress value="(\d+)" max="10000">', html)]
    assert progress[0] == 0 and progress[-1] == 10_000 and progress == sorted(progress) and len(progress) > 5
    assert 'id="done"' in html and "10000 件を登録しました" in html
    assert count_operators(world, "minamiedo") == 10_001
    with world.app.app_context():
        session = get_session()
        assert session.scalar(select(func.count()).select_from(InBusinessId)) == 15_000
        last = session.scalar(select(Operator).where(Operator.operator_id == "OP09999"))
        assert last is not None and last.name == "職員 9999番" and [s.business_id for s in last.permitted_systems] == [
            "05", "07"]


def test_oversized_upload_is_413(world: World, api_a: FlaskClient) -> None:
    big = b"a" * (17 * 1024 * 1024)
    response = api_a.post("/api/v1/tenants/minamiedo/operators/import", data=big, content_type="text/csv")
    assert response.status_code == 413


@pytest.mark.parametrize("name", ["=HYPERLINK(\"http://evil\")", "+1+2", "-2+3", "@SUM(A1)"])
def test_values_excel_would_run_as_formulas_are_refused(world: World, api_a: FlaskClient, name: str) -> None:
    status, body = import_api(api_a, "minamiedo", csv_bytes([row("OP1", name)]))
    assert status == 400 and str(body["message"]).startswith("2 行目:")


def test_an_id_registered_between_validation_and_writing_is_a_conflict(world: World) -> None:
    from kernel.audit import SYSTEM_ACTOR
    from kernel.errors import Conflict
    from operators import csv_io
    from operators.models import Role
    from operators.tenancy import Scope

    scope = Scope(actor_id=0, actor_name="test", tenant_id=0, all_tenants=True, manages_operators=True,
                  business_system_id=None)
    with world.app.app_context():
        session = get_session()
        tenant = session.scalar(select(Tenant).where(Tenant.code == "minamiedo"))
        assert tenant is not None
        rows = csv_io.validate(session, tenant=tenant, text=csv_bytes([row("OP7001")]).decode())
        session.add(Operator(tenant_id=tenant.id, operator_id="OP7001", name="先客", role=Role.OPERATOR))
        session.flush()
        with pytest.raises(Conflict):
            csv_io.run_import(session, scope=scope, tenant=tenant, rows=rows, actor=SYSTEM_ACTOR)
        session.rollback()


def test_names_shift_jis_cannot_hold_export_as_utf8_only(world: World, api_a: FlaskClient) -> None:
    register(api_a, operator_id="OP8001", name="𠮷田 太郎")  # 𠮷 is outside CP932
    refused = api_a.get("/api/v1/tenants/minamiedo/operators/export.csv?encoding=cp932")
    assert refused.status_code == 400 and "UTF-8" in refused.get_json()["message"]
    assert "𠮷田 太郎" in decode(api_a.get("/api/v1/tenants/minamiedo/operators/export.csv").data)
