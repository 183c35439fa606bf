"""Re-issue on a change of permitted business systems, certificate revocation and 操作者失効."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask.testing import FlaskClient
from sqlalchemy import func, select

from ca.inquiry import get_certificate
from ca.models import RevocationReason
from ca.profiles import permitted_business_ids
from db import get_session
from kernel.audit import AuditEvent
from operators.models import InBusinessId, Operator
from tests.bio.helpers import manager_enrols
from tests.bio.softauthn import SoftAuthenticator
from tests.conftest import csrf_token
from tests.helpers import run
from tests.operators.conftest import World, basic_client, ca_bundle, operator_payload, pem_of, register, web_client


def _cert(world: World, serial: str) -> tuple[x509.Certificate, str | None, RevocationReason | None]:
    with world.app.app_context():
        row = get_certificate(get_session(), serial=serial)
        return x509.load_der_x509_certificate(row.der), row.status, row.revocation_reason


def test_changing_permitted_systems_reissues_and_supersedes_the_old_certificate(
        world: World, api_a: FlaskClient, tmp_path: Path) -> None:
    body = register(api_a, business_ids=["05"], password="Operator-Password-1")
    old_serial = body["certificate"]["serial"]
    response = api_a.put("/api/v1/tenants/minamiedo/operators/OP0601",
                         json=operator_payload(business_ids=["05", "07"], name="山田 太郎（異動）"))
    assert response.status_code == 200, response.get_json()
    updated = response.get_json()
    assert updated["business_ids"] == ["05", "07"] and updated["name"] == "山田 太郎（異動）"
    [new] = updated["reissued"]
    new_cert, status, _ = _cert(world, new["serial"])
    old_cert, old_status, reason = _cert(world, old_serial)
    assert permitted_business_ids(new_cert) == ["05", "07"] and permitted_business_ids(old_cert) == ["05"]
    assert status == "valid" and old_status == "revoked" and reason is RevocationReason.SUPERSEDED
    assert new_cert.public_key() == old_cert.public_key()  # the terminal keeps its key
    # the new certificate is a valid client certificate for the same key
    leaf = tmp_path / "new.pem"
    leaf.write_bytes(pem_of(new_cert.public_bytes(serialization.Encoding.DER)))
    assert run("openssl", "verify", "-purpose", "sslclient", "-CAfile", ca_bundle(api_a, tmp_path),
               leaf).returncode == 0


def test_changing_other_fields_does_not_reissue(world: World, api_a: FlaskClient) -> None:
    register(api_a, business_ids=["05"])
    response = api_a.put("/api/v1/tenants/minamiedo/operators/OP0601",
                         json=operator_payload(business_ids=["05"], department="税務課"))
    assert response.status_code == 200 and response.get_json()["reissued"] == []


def test_removed_permission_removes_its_in_business_id(world: World, api_a: FlaskClient) -> None:
    register(api_a, business_ids=["05", "07"], in_business_id="U0601")
    api_a.put("/api/v1/tenants/minamiedo/operators/OP0601", json=operator_payload(business_ids=["05"]))
    detail = api_a.get("/api/v1/tenants/minamiedo/operators/OP0601").get_json()
    assert list(detail["in_business_ids"]) == ["05"]


def test_revoking_one_certificate(world: World, api_a: FlaskClient) -> None:
    serial = register(api_a)["certificate"]["serial"]
    url = f"/api/v1/tenants/minamiedo/operators/OP0601/certificates/{serial}/revoke"
    response = api_a.post(url, json={"reason": "keyCompromise"})
    assert response.status_code == 200 and response.get_json()["status"] == "revoked"
    assert api_a.post(url, json={}).status_code == 409  # already revoked
    assert api_a.post(url.replace(serial, "abcdef"), json={}).status_code == 404


def test_tenant_manager_releases_a_hold_they_placed(world: World, api_a: FlaskClient, api_b: FlaskClient,
                                                    web_a: FlaskClient) -> None:
    """Who may put an operator certificate on hold (運用管理部門, through the tenancy guard) may release it:
    release-hold, or removeFromCRL as the reason; another tenant's manager gets 404, a certificate not on hold 409,
    an unknown reason 400 naming the accepted ones; every refusal audited."""
    serial = register(api_a)["certificate"]["serial"]
    base = f"/api/v1/tenants/minamiedo/operators/OP0601/certificates/{serial}"
    held = api_a.post(f"{base}/revoke", json={"reason": "certificateHold"})
    assert held.status_code == 200 and held.get_json()["status"] == "on_hold"
    # another tenant's manager reaches neither the operator nor the certificate
    assert api_b.post(f"{base}/release-hold").status_code == 404
    assert api_b.post(f"{base}/revoke", json={"reason": "removeFromCRL"}).status_code == 404
    released = api_a.post(f"{base}/revoke", json={"reason": "removeFromCRL"})
    assert released.status_code == 200, released.get_json()
    assert released.get_json()["status"] == "valid" and _cert(world, serial)[1] == "valid"
    assert api_a.post(f"{base}/revoke", json={"reason": "certificateHold"}).status_code == 200
    released = api_a.post(f"{base}/release-hold")
    assert released.status_code == 200 and released.get_json()["status"] == "valid"
    not_held = api_a.post(f"{base}/release-hold")
    assert not_held.status_code == 409 and "保留中ではありません" in not_held.get_json()["message"]
    bad = api_a.post(f"{base}/revoke", json={"reason": "holdPlease"})
    assert bad.status_code == 400 and "removeFromCRL" in bad.get_json()["message"]
    with world.app.app_context():
        events = get_session().scalars(select(AuditEvent).where(AuditEvent.target == f"certificate:{serial}")
                                       .order_by(AuditEvent.id)).all()
    assert [e.action for e in events].count("certificate.hold_released") == 2
    assert [e.action for e in events].count("certificate.revocation_rejected") >= 2
    # the web UI: 保留解除 on the operator's page, a confirmation page, then the POST
    assert api_a.post(f"{base}/revoke", json={"reason": "certificateHold"}).status_code == 200
    detail = web_a.get("/admin/t/minamiedo/operators/OP0601").get_data(as_text=True)
    url = f"/admin/t/minamiedo/operators/OP0601/certificates/{serial}/release-hold"
    assert f'href="{url}"' in detail
    confirm = web_a.get(url)
    assert confirm.status_code == 200 and "保留（certificateHold）を解除します" in confirm.get_data(as_text=True)
    assert _cert(world, serial)[1] == "on_hold"  # the GET changed nothing
    assert web_a.post(url, data={"csrf_token": csrf_token(confirm.get_data(as_text=True))}).status_code == 302
    assert _cert(world, serial)[1] == "valid"


def test_a_revoked_operators_certificates_are_not_released(world: World, api_a: FlaskClient) -> None:
    serial = register(api_a)["certificate"]["serial"]
    assert api_a.post("/api/v1/tenants/minamiedo/operators/OP0601/revoke").status_code == 200
    refused = api_a.post(f"/api/v1/tenants/minamiedo/operators/OP0601/certificates/{serial}/release-hold")
    assert refused.status_code == 409 and _cert(world, serial)[1] == "revoked"


def test_operator_revocation_cascades_and_keeps_the_record(world: World, api_a: FlaskClient) -> None:
    body = register(api_a, business_ids=["05", "07"], in_business_id="U0601", password="Operator-Password-1")
    second = api_a.post("/api/v1/tenants/minamiedo/operators/OP0601/certificates", json={})
    assert second.status_code == 201
    serials = {body["certificate"]["serial"], second.get_json()["certificate"]["serial"]}
    web_a = web_client(world.app, "mgrA", world.tenant_a)
    enrolled = manager_enrols(web_a, "OP0601", SoftAuthenticator(), tenant=world.tenant_a)
    assert enrolled.status_code == 200, enrolled.get_data(as_text=True)
    bio_rows = 1
    operator_web = web_client(world.app, "OP0601", "minamiedo", "Operator-Password-1")
    changed = operator_web.post("/password", data={  # the one-time password is changed at first login
        "csrf_token": csrf_token(operator_web.get("/password").get_data(as_text=True)),
        "current_password": "Operator-Password-1", "new_password": "Operator-Password-2",
        "confirm_password": "Operator-Password-2"})
    assert changed.status_code == 302
    assert operator_web.get("/top").status_code == 200
    with world.app.app_context():
        op = get_session().scalar(select(Operator).where(Operator.operator_id == "OP0601"))
        assert op is not None
        version = op.session_version
    response = api_a.post("/api/v1/tenants/minamiedo/operators/OP0601/revoke")
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert set(result["revoked_certificates"]) == serials
    assert result["biometric_credentials_removed"] == bio_rows
    for serial in serials:
        _, status, reason = _cert(world, serial)
        assert status == "revoked" and reason is RevocationReason.PRIVILEGE_WITHDRAWN
    with world.app.app_context():
        session = get_session()
        op = session.scalar(select(Operator).where(Operator.operator_id == "OP0601"))
        assert op is not None and op.revoked_at is not None and op.session_version == version + 1
        assert op.name == "山田 太郎"  # kept for audit
        assert session.scalar(select(func.count()).select_from(InBusinessId)) == 0
        assert session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "operator.revoked")) == 1
    # no login anywhere: the open browser session is gone, password login and API Basic refuse
    assert operator_web.get("/top").status_code == 302  # to the login page
    page = world.app.test_client().get("/login").get_data(as_text=True)
    login = world.app.test_client().post("/login", data={"csrf_token": csrf_token(page), "tenant": "minamiedo",
                                                          "operator_id": "OP0601", "password": "Operator-Password-2"})
    assert login.status_code != 302
    assert basic_client(world.app, "OP0601", "minamiedo", "Operator-Password-2").get(
        "/api/v1/tenants").status_code == 401
    # and it cannot be revoked, modified or given a certificate again
    assert api_a.post("/api/v1/tenants/minamiedo/operators/OP0601/revoke").status_code == 409
    assert api_a.post("/api/v1/tenants/minamiedo/operators/OP0601/certificates", json={}).status_code == 409
    assert api_a.put("/api/v1/tenants/minamiedo/operators/OP0601", json=operator_payload()).status_code == 409


def test_web_revocation_asks_for_confirmation_first(world: World, api_a: FlaskClient, web_a: FlaskClient) -> None:
    register(api_a)
    page = web_a.get("/admin/t/minamiedo/operators/OP0601/revoke")
    assert page.status_code == 200 and "よろしいですか" in page.get_data(as_text=True)
    with world.app.app_context():
        op = get_session().scalar(select(Operator).where(Operator.operator_id == "OP0601"))
        assert op is not None and op.revoked_at is None  # GET changed nothing
    response = web_a.post("/admin/t/minamiedo/operators/OP0601/revoke",
                          data={"csrf_token": csrf_token(page.get_data(as_text=True))})
    assert response.status_code == 302
    detail = web_a.get("/admin/t/minamiedo/operators/OP0601").get_data(as_text=True)
    assert "失効しています" in detail


def test_web_modify_with_permission_change_reissues(world: World, api_a: FlaskClient, web_a: FlaskClient) -> None:
    register(api_a, business_ids=["05"])
    page = web_a.get("/admin/t/minamiedo/operators/OP0601/edit").get_data(as_text=True)
    response = web_a.post("/admin/t/minamiedo/operators/OP0601/edit", data={
        "csrf_token": csrf_token(page), "name": "山田 太郎", "business_ids": ["07"], "gender": "male"})
    assert response.status_code == 302, response.get_data(as_text=True)
    detail = api_a.get("/api/v1/tenants/minamiedo/operators/OP0601").get_json()
    assert [c["status"] for c in detail["certificates"]] == ["valid", "revoked"]
    assert detail["certificates"][0]["business_ids"] == ["07"]


def test_web_certificate_from_csr_upload(world: World, api_a: FlaskClient, web_a: FlaskClient) -> None:
    import io

    from tests.helpers import make_csr

    register(api_a)
    page = web_a.get("/admin/t/minamiedo/operators/OP0601/certificates/new").get_data(as_text=True)
    response = web_a.post("/admin/t/minamiedo/operators/OP0601/certificates/new", data={
        "csrf_token": csrf_token(page), "delivery": "csr", "csr": (io.BytesIO(make_csr()), "req.pem")},
        content_type="multipart/form-data")
    assert response.status_code == 200 and "CSRから発行" in response.get_data(as_text=True)
    bad = web_a.post("/admin/t/minamiedo/operators/OP0601/certificates/new", data={
        "csrf_token": csrf_token(page), "delivery": "csr", "csr": (io.BytesIO(b"garbage"), "req.pem")},
        content_type="multipart/form-data")
    assert bad.status_code == 400


def test_issuing_and_revoking_in_the_web_ui_need_a_recent_login(world: World, api_a: FlaskClient,
                                                                  web_a: FlaskClient) -> None:
    register(api_a)
    with web_a.session_transaction() as sess:
        sess["auth_at"] = sess["auth_at"] - 3600  # logged in an hour ago (absolute limit is longer)
    for url in ("/admin/t/minamiedo/operators/OP0601/certificates/new", "/admin/t/minamiedo/operators/OP0601/revoke",
                "/admin/t/minamiedo/staged/issue"):
        response = web_a.get(url)
        assert response.status_code == 302 and "/reauth" in response.headers["Location"], url
    assert web_a.get("/admin/t/minamiedo/operators/OP0601").status_code == 200  # reading needs no re-auth


def test_imported_operators_get_certificates_from_the_pending_list(world: World, api_a: FlaskClient,
                                                                   web_a: FlaskClient, tmp_path: Path) -> None:
    data = "オペレータID,氏名・組織名,許可業務\r\nOP0701,一括 一郎,05\r\nOP0702,一括 二郎,05;07\r\n"
    assert api_a.post("/api/v1/tenants/minamiedo/operators/import", data=data.encode(),
                      content_type="text/csv").status_code == 201
    register(api_a)  # OP0601 already has a certificate
    page = web_a.get("/admin/t/minamiedo/certificates/pending").get_data(as_text=True)
    assert "OP0701" in page and "OP0702" in page and ">OP0601<" not in page and "mgrA" in page
    response = web_a.post("/admin/t/minamiedo/certificates/pending", data={
        "csrf_token": csrf_token(page), "operator_ids": ["OP0701", "OP0702"]})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.count("application/x-pkcs12;base64,") == 2
    after = web_a.get("/admin/t/minamiedo/certificates/pending").get_data(as_text=True)
    assert "OP0701" not in after and "OP0702" not in after
    detail = api_a.get("/api/v1/tenants/minamiedo/operators/OP0702").get_json()
    assert detail["certificates"][0]["business_ids"] == ["05", "07"]
    # an operator of another tenant cannot be slipped into the selection
    response = web_a.post("/admin/t/minamiedo/certificates/pending", data={
        "csrf_token": csrf_token(page), "operator_ids": ["mgrB"]})
    assert response.status_code == 404
    # the CLI issues the rest into files
    runner = world.app.test_cli_runner()
    result = runner.invoke(args=["operator", "issue-pending", "--tenant", "minamiedo", "--out-dir",
                                 str(tmp_path / "p12")])
    assert result.exit_code == 0, result.output
    name, path, password = result.output.splitlines()[0].split("\t")
    assert name == "mgrA"
    assert run("openssl", "pkcs12", "-info", "-noout", "-in", path, "-passin", f"pass:{password}").returncode == 0


def test_revoked_operator_gets_no_new_certificate_and_the_refusal_is_audited(
        world: World, api_a: FlaskClient, web_a: FlaskClient) -> None:
    register(api_a)
    assert api_a.post("/api/v1/tenants/minamiedo/operators/OP0601/revoke").status_code == 200

    def issued_after_revocation() -> int:
        with world.app.app_context():
            session = get_session()
            revoked_at = session.scalar(select(AuditEvent.id).where(AuditEvent.action == "operator.revoked"))
            return len(list(session.scalars(select(AuditEvent.id).where(
                AuditEvent.id > revoked_at, AuditEvent.result == "success",
                AuditEvent.action.in_(["certificate.issued", "operator.certificate_delivered"])))))

    response = api_a.post("/api/v1/tenants/minamiedo/operators/OP0601/certificates", json={})
    assert response.status_code == 409
    assert response.get_json()["error"] == "operator_revoked" and "失効" in response.get_json()["message"]
    url = "/admin/t/minamiedo/operators/OP0601/certificates/new"
    page = web_a.post(url, data={"csrf_token": csrf_token(web_a.get(url).get_data(as_text=True)),
                                 "delivery": "pkcs12"})
    assert page.status_code == 409 and "失効" in page.get_data(as_text=True)
    assert issued_after_revocation() == 0
    with world.app.app_context():
        refused = list(get_session().scalars(select(AuditEvent).where(
            AuditEvent.action == "certificate.issuance_rejected")))
    assert len(refused) == 2 and all(e.result == "failure" for e in refused)
    assert all(e.target == "operator:minamiedo/OP0601" for e in refused)
