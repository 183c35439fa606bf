"""SSL通信証明書 through the API and the web UI: issue (CSR or generated key), delete, reissue, tenancy."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from db import get_session
from kernel.audit import AuditEvent
from tests.conftest import csrf_token
from tests.helpers import BUSINESS, make_csr, run


def _system(api: FlaskClient) -> None:
    payload = {k: v for k, v in BUSINESS.items() if k != "business_id"}
    assert api.put("/api/v1/business-systems/05", json=payload).status_code == 201


def test_generated_key_is_delivered_once_as_pkcs12(api: FlaskClient, tmp_path: Path) -> None:
    _system(api)
    response = api.post("/api/v1/ssl-certificates", json={"tenant": "system", "business_id": "05",
                                                          "hosts": ["www1.city.itozaki.nagano.jp",
                                                                    "perso.city.itozaki.nagano.jp"]})
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    p12 = base64.b64decode(body["pkcs12"]["data_base64"])
    key, cert, chain = pkcs12.load_key_and_certificates(p12, body["pkcs12"]["password"].encode())
    assert key is not None and cert is not None and len(chain) == 2
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["www1.city.itozaki.nagano.jp", "perso.city.itozaki.nagano.jp"]
    eku = {o.dotted_string for o in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value}
    assert eku == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}
    path = tmp_path / "c.p12"
    path.write_bytes(p12)
    assert run("openssl", "pkcs12", "-in", path, "-nokeys", "-passin",
               f"pass:{body['pkcs12']['password']}").returncode == 0
    # Nothing of the key is kept: a second look returns the certificate only.
    again = api.get(f"/api/v1/ssl-certificates/{body['serial']}").get_json()
    assert "pkcs12" not in again


def test_csr_path_binds_a_terminal(api: FlaskClient) -> None:
    response = api.post("/api/v1/ssl-certificates", json={"tenant": "system", "terminal": "term-01",
                                                          "hosts": "term01.city.example.jp",
                                                          "csr": make_csr().decode()})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert "pkcs12" not in body and body["terminal"] == "term-01"


def test_issuance_and_reissue_answers_carry_the_certificate_in_pem(api: FlaskClient) -> None:
    """Like POST /business-server-certificates: the 201 answer has the certificate itself (``pem``), the same
    bytes a download gives; a script needs no second request (nor certificates.view)."""
    _system(api)
    for payload in ({"tenant": "system", "business_id": "05", "hosts": "www1.city.itozaki.nagano.jp",
                     "csr": make_csr().decode()},
                    {"tenant": "system", "terminal": "term-02", "hosts": "term02.city.example.jp"}):
        issued = api.post("/api/v1/ssl-certificates", json=payload)
        assert issued.status_code == 201, issued.get_json()
        body = issued.get_json()
        assert body["pem"] == api.get(f"/api/v1/certificates/{body['serial']}/pem").get_data(as_text=True)
        cert = x509.load_pem_x509_certificate(body["pem"].encode())
        assert format(cert.serial_number, "x") == body["serial"].lstrip("0")
        again = api.post(f"/api/v1/ssl-certificates/{body['serial']}/reissue", json={})
        assert again.status_code == 201
        renewed = again.get_json()
        assert renewed["pem"] == api.get(f"/api/v1/certificates/{renewed['serial']}/pem").get_data(as_text=True)
    assert "pem" not in api.get(f"/api/v1/ssl-certificates/{renewed['serial']}").get_json()  # answers of issuance only


def test_a_business_systems_certificate_is_for_a_tenant_that_uses_it(app: Flask, api: FlaskClient,
                                                                     admin_client: FlaskClient) -> None:
    """Bound to a business system, the tenant must be in its joint use (共同利用) or be システム管理: otherwise 409,
    audited like the other issuance refusals, nothing written; on API, web form and reissue alike."""
    _system(api)
    assert api.post("/api/v1/tenants", json={"code": "city-b", "name": "北江戸市",
                                             "kind": "municipality"}).status_code == 201
    payload = {"tenant": "city-b", "business_id": "05", "hosts": "www1.city.itozaki.nagano.jp"}
    before = len(api.get("/api/v1/ssl-certificates?all=1").get_json()["items"])
    refused = api.post("/api/v1/ssl-certificates", json=payload)
    assert refused.status_code == 409, refused.get_json()
    assert "北江戸市（city-b）は業務 05" in refused.get_json()["message"]
    assert "共同利用していません" in refused.get_json()["message"]
    english = api.post("/api/v1/ssl-certificates", json=payload, headers={"Accept-Language": "en"}).get_json()
    assert "does not use business system 05" in english["message"]
    page = admin_client.get("/admin/ssl-certificates/new").get_data(as_text=True)
    form = admin_client.post("/admin/ssl-certificates/new", data={
        "csrf_token": csrf_token(page), **payload, "terminal": "", "csr": (io.BytesIO(b""), "")},
        content_type="multipart/form-data")
    assert form.status_code == 409 and "共同利用していません" in form.get_data(as_text=True)
    assert len(api.get("/api/v1/ssl-certificates?all=1").get_json()["items"]) == before
    with app.app_context():
        audited = get_session().scalars(select(AuditEvent).where(
            AuditEvent.action == "certificate.issuance_rejected").order_by(AuditEvent.id)).all()
    assert len(audited) == 3 and all("city-b" in str(e.detail) for e in audited)
    # once city-b uses 05 it gets one; when it stops, the certificate cannot be reissued for it
    assert api.put("/api/v1/business-systems/05/joint-use", json={"tenants": ["city-b"]}).status_code == 200
    issued = api.post("/api/v1/ssl-certificates", json=payload)
    assert issued.status_code == 201, issued.get_json()
    assert api.put("/api/v1/business-systems/05/joint-use", json={"tenants": []}).status_code == 200
    reissue = api.post(f"/api/v1/ssl-certificates/{issued.get_json()['serial']}/reissue", json={})
    assert reissue.status_code == 409 and "共同利用していません" in reissue.get_json()["message"]
    assert api.get(f"/api/v1/certificates/{issued.get_json()['serial']}").get_json()["status"] == "valid"
    # the システム管理 tenant runs the installation's business servers and needs no joint use
    assert api.post("/api/v1/ssl-certificates", json=dict(payload, tenant="system")).status_code == 201


def test_bad_requests_are_clear_and_write_nothing(app: Flask, api: FlaskClient) -> None:
    cases = [({"tenant": "system", "hosts": "a.example.jp"}, 400, "どちらか一方だけ"),
             ({"tenant": "system", "terminal": "t1", "business_id": "05", "hosts": "a.example.jp"}, 400, "一方だけ"),
             ({"tenant": "system", "terminal": "t1", "hosts": ""}, 400, "一つ以上"),
             ({"tenant": "system", "terminal": "bad name!", "hosts": "a.example.jp"}, 400, "terminal"),
             ({"tenant": "nowhere", "terminal": "t1", "hosts": "a.example.jp"}, 404, "市町村・任意団体"),
             ({"tenant": "system", "business_id": "77", "hosts": "a.example.jp"}, 404, "業務ID"),
             ({"tenant": "system", "terminal": "t1", "hosts": "a.example.jp", "csr": "junk"}, 400,
              "証明書発行要求 (CSR) ではありません")]
    before = len(api.get("/api/v1/ssl-certificates?all=1").get_json()["items"])
    for payload, status, message in cases:
        response = api.post("/api/v1/ssl-certificates", json=payload)
        assert response.status_code == status, (payload, response.get_json())
        assert message in response.get_json()["message"], (payload, response.get_json())
    assert len(api.get("/api/v1/ssl-certificates?all=1").get_json()["items"]) == before
    with app.app_context():
        refused = get_session().scalars(select(AuditEvent).where(
            AuditEvent.action == "certificate.issuance_rejected")).all()
    assert len(refused) >= len(cases)


def test_hosts_are_checked_as_hosts_not_urls(api: FlaskClient) -> None:
    for hosts, expected in (("fe80::1%eth0", "IPv6 アドレスにゾーンID(%eth0 など)は指定できません。"),
                            ("[fe80::1%25eth0]", "ゾーンID"),
                            ("a.example.jp/x", "「a.example.jp/x」は正しくありません。"),
                            ("a.example.jp:443", "正しくありません"), ("user@a.example.jp", "正しくありません"),
                            ("-a.example.jp", "正しくありません"), ("[a.example.jp]", "正しくありません"),
                            ("[192.0.2.1]", "正しくありません")):
        response = api.post("/api/v1/ssl-certificates", headers={"Accept-Language": "ja"},
                            json={"tenant": "system", "terminal": "t1", "hosts": [hosts]})
        message = response.get_json()["message"]
        assert response.status_code == 400 and expected in message and "URL" not in message, (hosts, message)
    english = api.post("/api/v1/ssl-certificates", headers={"Accept-Language": "en"},
                       json={"tenant": "system", "terminal": "t1", "hosts": "fe80::1%eth0"}).get_json()["message"]
    assert "not a valid host" in english and "zone ID" in english and "URL" not in english, english
    for hosts in ("2001:db8::1", "[2001:DB8::2]", "192.0.2.1", "Term02.City.Example.JP"):
        response = api.post("/api/v1/ssl-certificates", json={"tenant": "system", "terminal": "t2", "hosts": [hosts],
                                                              "csr": make_csr().decode()})
        assert response.status_code == 201, (hosts, response.get_json())


def test_delete_and_reissue(api: FlaskClient) -> None:
    _system(api)
    first = api.post("/api/v1/ssl-certificates", json={"tenant": "system", "business_id": "05",
                                                       "hosts": "www1.city.itozaki.nagano.jp"}).get_json()
    second = api.post(f"/api/v1/ssl-certificates/{first['serial']}/reissue", json={}).get_json()
    assert second["replaces_id"] == first["id"] and "pkcs12" in second
    old = api.get(f"/api/v1/certificates/{first['serial']}").get_json()
    assert old["status"] == "revoked" and old["revocation_reason"] == "superseded"
    active = [c["serial"] for c in api.get("/api/v1/ssl-certificates").get_json()["items"]]
    assert second["serial"] in active and first["serial"] not in active
    deleted = api.delete(f"/api/v1/ssl-certificates/{second['serial']}")
    assert deleted.status_code == 200 and deleted.get_json()["revocation_reason"] == "cessationOfOperation"
    assert api.delete(f"/api/v1/ssl-certificates/{second['serial']}").status_code == 409
    assert api.delete("/api/v1/ssl-certificates/abcdef").status_code == 404
    # A business server certificate is not an SSL communication certificate.
    server = api.get("/api/v1/certificates?profile=root_ca").get_json()["items"][0]["serial"]
    assert api.delete(f"/api/v1/ssl-certificates/{server}").status_code == 404


def test_web_ui_issue_with_generated_key_then_delete_with_confirmation(admin_client: FlaskClient,
                                                                      api: FlaskClient) -> None:
    _system(api)
    page = admin_client.get("/admin/ssl-certificates/new").get_data(as_text=True)
    response = admin_client.post("/admin/ssl-certificates/new", data={
        "csrf_token": csrf_token(page), "tenant": "system", "business_id": "05", "terminal": "",
        "hosts": "perso.city.itozaki.nagano.jp", "csr": (io.BytesIO(b""), "")}, content_type="multipart/form-data")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "PKCS#12" in html and response.headers["Cache-Control"] == "no-store"
    serial = re.search(r"<code>([0-9a-f]{20,40})</code>", html).group(1)  # type: ignore[union-attr]
    assert serial in admin_client.get("/admin/ssl-certificates").get_data(as_text=True)
    confirm = admin_client.get(f"/admin/ssl-certificates/{serial}/delete").get_data(as_text=True)
    assert "取り消せません" in confirm
    assert api.get(f"/api/v1/certificates/{serial}").get_json()["status"] == "valid"  # GET changed nothing
    response = admin_client.post(f"/admin/ssl-certificates/{serial}/delete", data={"csrf_token": csrf_token(confirm)})
    assert response.status_code == 302
    assert api.get(f"/api/v1/certificates/{serial}").get_json()["status"] == "revoked"
    bad = admin_client.post("/admin/ssl-certificates/new", data={
        "csrf_token": csrf_token(page), "tenant": "system", "business_id": "05", "hosts": "",
        "csr": (io.BytesIO(b""), "")}, content_type="multipart/form-data")
    assert bad.status_code == 400 and "一つ以上" in bad.get_data(as_text=True)


def test_expiring_certificates_are_listed_for_administrators(app: Flask, admin_client: FlaskClient,
                                                             api: FlaskClient) -> None:
    _system(api)
    app.config["CERT_EXPIRY_WARNING_DAYS"] = 400  # everything issued now expires within that
    issued = api.post("/api/v1/ssl-certificates", json={"tenant": "system", "business_id": "05",
                                                        "hosts": "perso.city.itozaki.nagano.jp"}).get_json()
    page = admin_client.get("/admin/").get_data(as_text=True)
    assert "有効期限が近い証明書" in page and "perso.city.itozaki.nagano.jp" in page
    assert "perso.city.itozaki.nagano.jp" in admin_client.get("/admin/certificate-expiry").get_data(as_text=True)
    api.delete(f"/api/v1/ssl-certificates/{issued['serial']}")
    assert "perso.city.itozaki.nagano.jp" not in admin_client.get("/admin/certificate-expiry").get_data(as_text=True)
    app.config["CERT_EXPIRY_WARNING_DAYS"] = 1
    assert "有効期限が近い証明書はありません" in admin_client.get("/admin/certificate-expiry").get_data(as_text=True)


def _business_admin(app: Flask, operator_id: str, business_id: str | None) -> None:
    from operators.login.passwords import hash_password
    from operators.models import BusinessSystem, Operator, Role, Tenant
    from tests.bio.helpers import OPERATOR_PASSWORD

    with app.app_context():
        session = get_session()
        tenant = session.scalars(select(Tenant).where(Tenant.code == "system")).one()
        system = session.scalars(select(BusinessSystem).where(BusinessSystem.business_id == business_id)).first()
        session.add(Operator(tenant_id=tenant.id, operator_id=operator_id, name="業務管理者", role=Role.BUSINESS_ADMIN,
                             password_hash=hash_password(OPERATOR_PASSWORD), must_change_password=False,
                             administers_business_system_id=system.id if system else None))
        session.commit()


def test_business_system_administrator_sees_own_systems_certificates_and_warnings(
        app: Flask, api: FlaskClient) -> None:
    from tests.bio.helpers import OPERATOR_PASSWORD, post_login

    _system(api)
    other = {k: v for k, v in BUSINESS.items() if k != "business_id"}
    other["top_url"] = other["operator_admin_url"] = other["personalize_url"] = "https://other.example.jp/"
    assert api.put("/api/v1/business-systems/06", json=other).status_code == 201
    mine = api.post("/api/v1/ssl-certificates", json={"tenant": "system", "business_id": "05",
                                                      "hosts": "perso.city.itozaki.nagano.jp"}).get_json()
    api.post("/api/v1/ssl-certificates", json={"tenant": "system", "business_id": "06", "hosts": "other.example.jp"})
    _business_admin(app, "BADM05", "05")
    client = app.test_client()
    assert post_login(client, operator_id="BADM05", password=OPERATOR_PASSWORD).status_code == 302
    page = client.get("/admin/business-systems/05/certificates").get_data(as_text=True)
    assert "perso.city.itozaki.nagano.jp" in page and "other.example.jp" not in page and mine["serial"][:16] in page
    assert client.get("/admin/business-systems/06/certificates").status_code == 404  # not theirs
    assert client.get("/admin/business-systems/99/certificates").status_code == 404
    assert client.get("/admin/ssl-certificates").status_code == 403  # managing SSL certificates is not theirs
    app.config["CERT_EXPIRY_WARNING_DAYS"] = 400
    top = client.get("/top").get_data(as_text=True)
    assert 'id="expiring-certificates"' in top and "perso.city.itozaki.nagano.jp" in top
    assert "other.example.jp" not in top
    app.config["CERT_EXPIRY_WARNING_DAYS"] = 1
    assert 'id="expiring-certificates"' not in client.get("/top").get_data(as_text=True)
