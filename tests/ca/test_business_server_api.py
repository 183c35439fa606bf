"""業務サーバ証明書 through the REST API, checked with openssl."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from ca.models import Certificate
from db import get_session
from kernel.audit import AuditEvent
from tests.helpers import BUSINESS, business_payload, make_csr, run


def count(app: Flask, model: type) -> int:
    with app.app_context():
        return get_session().scalar(select(func.count()).select_from(model)) or 0


def issue(api: FlaskClient, **overrides: str) -> dict:
    response = api.post("/api/v1/business-server-certificates", json=business_payload(make_csr(), **overrides))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_issued_certificate_verifies_with_openssl_against_published_chain(api: FlaskClient, tmp_path: Path) -> None:
    body = issue(api)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(api.get(f"/api/v1/certificates/{body['serial']}/pem").data)
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(api.get("/pki/ca-bundle.pem").data)
    result = run("openssl", "verify", "-purpose", "sslserver", "-CAfile", bundle, leaf)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
    # The same check from the full chain file: root as trust anchor, issuing CA as untrusted intermediate.
    chain = api.get(f"/api/v1/certificates/{body['serial']}/chain.pem").data
    certs = x509.load_pem_x509_certificates(chain)
    assert len(certs) == 3
    (tmp_path / "root.pem").write_bytes(certs[2].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "inter.pem").write_bytes(certs[1].public_bytes(serialization.Encoding.PEM))
    result = run("openssl", "verify", "-CAfile", tmp_path / "root.pem", "-untrusted", tmp_path / "inter.pem", leaf)
    assert result.returncode == 0, result.stderr


def test_subject_and_extensions_follow_the_business_server_profile(api: FlaskClient) -> None:
    body = issue(api)
    cert = x509.load_der_x509_certificate(api.get(f"/api/v1/certificates/{body['serial']}/der").data)
    subject = {a.oid: a.value for a in cert.subject}
    assert subject[NameOID.COUNTRY_NAME] == "JP"
    assert subject[NameOID.STATE_OR_PROVINCE_NAME] == "tokyo"
    assert subject[NameOID.ORGANIZATION_NAME] == "ICS"
    assert subject[NameOID.COMMON_NAME] == "www1.city.itozaki.nagano.jp"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert sans == ["www1.city.itozaki.nagano.jp", "perso.city.itozaki.nagano.jp"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert {d.access_location.value for d in aia} == {
        "http://pki.opauth.example.jp/pki/ocsp", "http://pki.opauth.example.jp/pki/ca/2.der"}
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == "http://pki.opauth.example.jp/pki/crl/2.crl"
    assert cert.serial_number.bit_length() > 64 and cert.serial_number > 0
    assert body["business_id"] == "05" and body["status"] == "valid"


def test_certificate_is_downloadable_in_every_format(api: FlaskClient) -> None:
    serial = issue(api)["serial"]
    der = api.get(f"/api/v1/certificates/{serial}/der").data
    pem = api.get(f"/api/v1/certificates/{serial}/pem").data
    assert x509.load_pem_x509_certificate(pem) == x509.load_der_x509_certificate(der)
    p7 = pkcs7.load_der_pkcs7_certificates(api.get(f"/api/v1/certificates/{serial}/p7b").data)
    # PKCS#7 holds a SET: order is not kept, membership is.
    assert {c.fingerprint(hashes.SHA256()) for c in p7} == {
        c.fingerprint(hashes.SHA256())
        for c in x509.load_pem_x509_certificates(api.get(f"/api/v1/certificates/{serial}/chain.pem").data)}
    assert len(p7) == 3
    bad = api.get(f"/api/v1/certificates/{serial}/zip")
    assert bad.status_code == 400 and "format は次のいずれか" in bad.get_json()["message"]


def test_caissuers_url_serves_the_issuing_ca_in_der(api: FlaskClient) -> None:
    body = issue(api)
    cert = x509.load_der_x509_certificate(api.get(f"/api/v1/certificates/{body['serial']}/der").data)
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    url = next(d.access_location.value for d in aia if d.access_method.dotted_string == "1.3.6.1.5.5.7.48.2")
    response = api.get(url.replace("http://pki.opauth.example.jp", ""))
    assert response.status_code == 200 and response.mimetype == "application/pkix-cert"
    issuer = x509.load_der_x509_certificate(response.data)
    cert.verify_directly_issued_by(issuer)


def test_reissue_for_existing_business_id_links_the_previous_certificate(api: FlaskClient) -> None:
    first = issue(api)
    second = issue(api, name="利用環境設定（更新）")
    assert second["replaces_id"] == first["id"] and second["serial"] != first["serial"]
    system = api.get("/api/v1/business-systems/05").get_json()
    assert system["name"] == "利用環境設定（更新）" and system["image"] == "file_05.png"


def test_modify_business_system_via_put(api: FlaskClient) -> None:
    payload = {k: v for k, v in BUSINESS.items() if k != "business_id"}
    created = api.put("/api/v1/business-systems/07", json=payload)
    assert created.status_code == 201
    payload["admin_org"] = "新組織"
    updated = api.put("/api/v1/business-systems/07", json=payload)
    assert updated.status_code == 200 and updated.get_json()["admin_org"] == "新組織"
    bad = api.put("/api/v1/business-systems/07", json=dict(payload, top_url="http://insecure.example.jp/"))
    assert bad.status_code == 400 and "https" in bad.get_json()["message"]
    assert api.get("/api/v1/business-systems/07").get_json()["top_url"] == BUSINESS["top_url"]
    assert api.get("/api/v1/business-systems/99").status_code == 404


def test_list_filters_and_paginates(api: FlaskClient) -> None:
    for business_id in ("11", "12", "13"):
        issue(api, business_id=business_id)
    page = api.get("/api/v1/certificates?profile=business_server&per_page=2").get_json()
    assert page["total"] == 3 and page["pages"] == 2 and len(page["items"]) == 2
    page2 = api.get("/api/v1/certificates?profile=business_server&per_page=2&page=2").get_json()
    assert len(page2["items"]) == 1
    only = api.get("/api/v1/certificates?business_id=12").get_json()
    assert only["total"] == 1 and only["items"][0]["business_id"] == "12"
    assert api.get("/api/v1/certificates?status=valid&profile=business_server").get_json()["total"] == 3
    assert api.get("/api/v1/certificates?status=revoked").get_json()["total"] == 0
    assert api.get("/api/v1/certificates?status=bogus").status_code == 400
    assert api.get("/api/v1/certificates?page=abc").status_code == 400


@pytest.mark.parametrize("serial", ["00", "zz", "1" * 80, "%00"])
def test_unknown_or_malformed_serial_is_404(api: FlaskClient, serial: str) -> None:
    response = api.get(f"/api/v1/certificates/{serial}")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def test_api_requires_credentials(app: Flask, api: FlaskClient) -> None:
    anonymous = app.test_client()
    response = anonymous.get("/api/v1/certificates")
    assert response.status_code == 401 and "WWW-Authenticate" in response.headers
    import base64

    wrong = base64.b64encode(b"admin@system:wrong-password").decode()
    response = anonymous.get("/api/v1/certificates", headers={"Authorization": f"Basic {wrong}"})
    assert response.status_code == 401
    with app.app_context():
        failures = get_session().scalars(select(AuditEvent).where(AuditEvent.action == "auth.login_failure")).all()
    assert any(e.detail.get("method") == "api_basic" for e in failures)


def test_issuance_is_audited(app: Flask, api: FlaskClient) -> None:
    body = issue(api)
    with app.app_context():
        events = get_session().scalars(select(AuditEvent).where(AuditEvent.target == f"certificate:{body['serial']}"))
        event = events.one()
    assert event.action == "certificate.issued" and event.actor == "admin" and event.tenant == "system"
    assert count(app, Certificate) >= 4  # root, issuing, server TLS, this one


def _actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(get_session().scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_reissuing_for_an_unchanged_system_audits_the_certificate_not_the_system(
        app: Flask, api: FlaskClient) -> None:
    first = issue(api)
    before = _actions(app)
    second = issue(api)  # the same business system data: nothing to save
    third = issue(api, name="利用環境設定（改）")  # changed: saved and audited as before
    added = [action for action in _actions(app)[len(before):] if not action.startswith("auth.")]
    assert added == ["certificate.issued", "business_system.updated", "certificate.issued"], added
    assert third["replaces_id"] == second["id"] and second["replaces_id"] == first["id"]
    with app.app_context():
        recorded = get_session().scalars(select(Certificate.serial).where(
            Certificate.serial.in_([first["serial"], second["serial"], third["serial"]]))).all()
    assert len(recorded) == 3
