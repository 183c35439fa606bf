"""操作者登録 and オペレータ証明書: PKCS#12 and CSR delivery, checked with openssl and pkilint."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask.testing import FlaskClient
from sqlalchemy import func, select

from ca.profiles import permitted_business_ids
from db import get_session
from operators.login.passwords import verify_password
from operators.models import Gender, Operator, OperatorCertificate
from tests.conftest import csrf_token
from tests.helpers import make_csr, pkilint, run
from tests.operators.conftest import (
    World,
    ca_bundle,
    load_pem,
    openssl_p12_cert,
    operator_payload,
    pem_of,
    register,
    write_p12,
)


def test_registration_stores_every_seed_field_and_a_hashed_password(world: World, api_a: FlaskClient) -> None:
    body = register(api_a, password="Given-Password-2026")
    assert "password" not in body  # only generated passwords are returned
    op = body["operator"]
    assert op["name"] == "山田 太郎" and op["department"] == "市民課" and op["gender"] == "male"
    assert (op["phone"], op["extension"], op["email"]) == ("03-1234-5678", "1234", "yamada@city.example.jp")
    assert (op["info"], op["extra_info"], op["business_ids"]) == ("窓口担当", "本庁舎2階", ["05", "07"])
    with world.app.app_context():
        row = get_session().scalar(select(Operator).where(Operator.operator_id == "OP0601"))
        assert row is not None and row.gender is Gender.MALE and row.must_change_password
        assert row.password_hash.startswith("$argon2id$") and "Given-Password-2026" not in row.password_hash
        assert verify_password(row.password_hash, "Given-Password-2026")


def test_pkcs12_opens_with_openssl_and_certificate_verifies_as_ssl_client(
        world: World, api_a: FlaskClient, tmp_path: Path) -> None:
    body = register(api_a)
    assert len(body["password"]) >= 16 and len(body["pkcs12_password"]) >= 16
    p12 = write_p12(tmp_path, body)
    info = run("openssl", "pkcs12", "-info", "-noout", "-in", p12, "-passin", f"pass:{body['pkcs12_password']}")
    assert info.returncode == 0, info.stderr
    assert "AES-256-CBC" in info.stderr  # PBES2, not the legacy RC2/3DES
    wrong = run("openssl", "pkcs12", "-info", "-noout", "-in", p12, "-passin", "pass:wrong-password")
    assert wrong.returncode != 0
    leaf = openssl_p12_cert(p12, body["pkcs12_password"], tmp_path / "leaf.pem")
    verify = run("openssl", "verify", "-purpose", "sslclient", "-CAfile", ca_bundle(api_a, tmp_path), leaf)
    assert verify.returncode == 0 and "OK" in verify.stdout, verify.stdout + verify.stderr
    server = run("openssl", "verify", "-purpose", "sslserver", "-CAfile", tmp_path / "ca.pem", leaf)
    assert server.returncode != 0  # clientAuth only


def test_certificate_names_operator_and_tenant_and_carries_permitted_business_ids(
        world: World, api_a: FlaskClient, tmp_path: Path) -> None:
    body = register(api_a, business_ids=["07", "05"])
    cert = load_pem(openssl_p12_cert(write_p12(tmp_path, body), body["pkcs12_password"], tmp_path / "c.pem"))
    subject = {a.oid: a.value for a in cert.subject}
    assert subject[NameOID.COMMON_NAME] == "OP0601"
    assert subject[NameOID.ORGANIZATION_NAME] == "南江戸市"
    assert subject[NameOID.ORGANIZATIONAL_UNIT_NAME] == "minamiedo"
    assert permitted_business_ids(cert) == ["05", "07"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    clean = tmp_path / "clean.pem"  # openssl's output starts with "Bag Attributes", which pkilint refuses
    clean.write_bytes(pem_of(cert.public_bytes(serialization.Encoding.DER)))
    assert pkilint("lint_pkix_cert", clean) == []


def test_certificate_from_terminal_csr_keeps_the_terminal_key(world: World, api_a: FlaskClient) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = register(api_a, csr=make_csr(key).decode())
    assert "pkcs12" not in body and "pkcs12_password" not in body
    pem = api_a.get("/api/v1/tenants/minamiedo/operators/OP0601").get_json()["certificates"][0]
    assert pem["serial"] == body["certificate"]["serial"]
    with world.app.app_context():
        from ca.inquiry import get_certificate

        der = get_certificate(get_session(), serial=pem["serial"]).der
    assert x509.load_der_x509_certificate(der).public_key() == key.public_key()


def test_bad_csr_is_refused_and_nothing_is_registered(world: World, api_a: FlaskClient) -> None:
    response = api_a.post("/api/v1/tenants/minamiedo/operators", json=operator_payload(csr="not a csr"))
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_csr"
    with world.app.app_context():
        assert get_session().scalar(select(func.count()).select_from(Operator).where(
            Operator.operator_id == "OP0601")) == 0


def test_permitted_business_systems_must_be_in_the_tenants_joint_use(world: World, api_b: FlaskClient) -> None:
    response = api_b.post("/api/v1/tenants/musashino/operators", json=operator_payload(business_ids=["05", "07"]))
    assert response.status_code == 400 and "07" in response.get_json()["message"]
    assert api_b.post("/api/v1/tenants/musashino/operators",
                      json=operator_payload(business_ids=["05"])).status_code == 201


def test_operator_id_is_unique_within_its_tenant_only(world: World, api_a: FlaskClient,
                                                       api_b: FlaskClient) -> None:
    register(api_a, business_ids=["05"])
    again = api_a.post("/api/v1/tenants/minamiedo/operators", json=operator_payload(business_ids=["05"]))
    assert again.status_code == 409
    register(api_b, tenant="musashino", business_ids=["05"])  # same ID, other tenant


def test_invalid_fields_are_400_with_the_field_named(world: World, api_a: FlaskClient) -> None:
    cases = {"operator_id": "オペ01", "gender": "other", "phone": "03(1234)", "email": "no-at",
             "business_ids": "5", "auth_method": "retina", "name": ""}
    for field, value in cases.items():
        response = api_a.post("/api/v1/tenants/minamiedo/operators", json=operator_payload(**{field: value}))
        assert response.status_code == 400, (field, response.get_json())
        assert field in response.get_json()["message"], (field, response.get_json())
    assert api_a.post("/api/v1/tenants/minamiedo/operators", data="[]",
                      content_type="application/json").status_code == 400


def test_tenant_manager_cannot_register_a_system_administrator(world: World, api_a: FlaskClient) -> None:
    response = api_a.post("/api/v1/tenants/minamiedo/operators", json=operator_payload(role="system_admin"))
    assert response.status_code == 403


def test_web_registration_target_list_generate_stage_edit_remove_then_issue_all(
        world: World, web_a: FlaskClient, tmp_path: Path) -> None:
    page = web_a.get("/admin/t/minamiedo/register").get_data(as_text=True)
    token = csrf_token(page)
    assert "登録対象リスト" in page and "生成" in page and "窓口交付機能" in page
    generated = web_a.post("/admin/t/minamiedo/register", data={"csrf_token": token, "action": "generate",
                                                                 "operator_id": "OP0601"})
    match = re.search(r'id="password" name="password" type="text" autocomplete="new-password" value="([^"]+)"',
                      generated.get_data(as_text=True))
    assert match and len(match.group(1)) >= 16
    for op_id, name in (("OP0601", "佐藤 花子"), ("OP0602", "鈴木 一郎"), ("OP0603", "高橋 次郎")):
        response = web_a.post("/admin/t/minamiedo/register", data={
            "csrf_token": token, "action": "stage", "operator_id": op_id, "password": match.group(1),
            "name": name, "gender": "female", "business_ids": ["05"], "auth_method": "biometric"})
        assert response.status_code == 302, response.get_data(as_text=True)
    with world.app.app_context():
        from operators.models import StagedOperator

        staged = {s.operator_id: s.id for s in get_session().scalars(select(StagedOperator))}
        assert all(s.password_hash.startswith("$argon2id$") for s in get_session().scalars(select(StagedOperator)))
    # edit one, remove another
    response = web_a.post(f"/admin/t/minamiedo/staged/{staged['OP0602']}/edit", data={
        "csrf_token": token, "operator_id": "OP0602", "name": "鈴木 一郎（修正）", "business_ids": ["05", "07"]})
    assert response.status_code == 302
    assert web_a.post(f"/admin/t/minamiedo/staged/{staged['OP0603']}/delete",
                      data={"csrf_token": token}).status_code == 302
    confirm = web_a.get("/admin/t/minamiedo/staged/issue").get_data(as_text=True)
    assert "鈴木 一郎（修正）" in confirm and "<td>OP0603</td>" not in confirm and "<td>OP0601</td>" in confirm
    result = web_a.post("/admin/t/minamiedo/staged/issue", data={"csrf_token": token})
    assert result.status_code == 200 and result.headers["Cache-Control"] == "no-store"
    html = result.get_data(as_text=True)
    links = re.findall(r'download="minamiedo-(OP\d+)\.p12" href="data:application/x-pkcs12;base64,([^"]+)"', html)
    passwords = re.findall(r'<code class="secret">([^<]+)</code>', html)
    assert [op for op, _ in links] == ["OP0601", "OP0602"] and len(passwords) == 2
    assert "/bio/manage/minamiedo/OP0601" in html  # biometric mode: enrol the finger next
    import base64

    p12 = tmp_path / "op2.p12"
    p12.write_bytes(base64.b64decode(links[1][1]))
    assert run("openssl", "pkcs12", "-info", "-noout", "-in", p12, "-passin", f"pass:{passwords[1]}").returncode == 0
    with world.app.app_context():
        session = get_session()
        op = session.scalar(select(Operator).where(Operator.operator_id == "OP0602"))
        assert op is not None and op.name == "鈴木 一郎（修正）" and verify_password(op.password_hash, match.group(1))
        assert [s.business_id for s in op.permitted_systems] == ["05", "07"]
        assert session.scalar(select(func.count()).select_from(OperatorCertificate)) == 2
        assert session.scalar(select(func.count()).select_from(StagedOperator)) == 0
    # a second issue with an empty list is refused
    assert web_a.post("/admin/t/minamiedo/staged/issue", data={"csrf_token": token}).status_code == 400


def test_web_registration_error_redisplays_the_form(world: World, web_a: FlaskClient) -> None:
    token = csrf_token(web_a.get("/admin/t/minamiedo/register").get_data(as_text=True))
    response = web_a.post("/admin/t/minamiedo/register", data={
        "csrf_token": token, "action": "stage", "operator_id": "OP1", "password": "short", "name": "名前"})
    assert response.status_code == 400 and "パスワード" in response.get_data(as_text=True)


def test_forms_without_csrf_token_are_refused(world: World, web_a: FlaskClient) -> None:
    response = web_a.post("/admin/t/minamiedo/register", data={"action": "stage", "operator_id": "OP1"})
    assert response.status_code == 400
