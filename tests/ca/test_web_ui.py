"""The administrator's browser flow for 業務サーバ証明書: form, confirmation, issue, download, modify."""

from __future__ import annotations

import io
import re

from cryptography import x509
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from ca.models import Certificate
from db import get_session
from tests.conftest import csrf_token
from tests.helpers import BUSINESS, make_csr


def _confirm(client: FlaskClient, csr: bytes, **overrides: str) -> tuple[int, str]:
    page = client.get("/admin/business-server-certificates/new").get_data(as_text=True)
    data = dict(BUSINESS, **overrides)
    data["csrf_token"] = csrf_token(page)
    data["csr"] = (io.BytesIO(csr), "certreq.txt")  # type: ignore[assignment]
    response = client.post("/admin/business-server-certificates/confirm", data=data,
                           content_type="multipart/form-data")
    return response.status_code, response.get_data(as_text=True)


def _hidden(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


def test_issue_flow_shows_confirmation_then_issues_and_downloads(app: Flask, admin_client: FlaskClient) -> None:
    status, html = _confirm(admin_client, make_csr())
    assert status == 200
    assert "業務サーバ証明書発行（確認）" in html and "minamiedo" in html and "perso.city.itozaki.nagano.jp" in html
    with app.app_context():
        before = get_session().scalar(select(func.count()).select_from(Certificate))
    fields = _hidden(html)
    response = admin_client.post("/admin/business-server-certificates/issue", data=fields)
    assert response.status_code == 302
    detail = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "証明書の発行処理が完了しました" in detail and "ダウンロード" in detail
    with app.app_context():
        session = get_session()
        assert session.scalar(select(func.count()).select_from(Certificate)) == before + 1
        cert = session.scalars(select(Certificate).order_by(Certificate.id.desc())).first()
        assert cert is not None
    pem = admin_client.get(f"/admin/certificates/{cert.id}/download/pem")
    assert pem.status_code == 200 and "attachment" in pem.headers["Content-Disposition"]
    assert x509.load_pem_x509_certificate(pem.data).serial_number == int(cert.serial, 16)
    listing = admin_client.get("/admin/certificates?profile=business_server").get_data(as_text=True)
    assert cert.serial[:16] in listing


def test_confirmation_does_not_issue(app: Flask, admin_client: FlaskClient) -> None:
    with app.app_context():
        before = get_session().scalar(select(func.count()).select_from(Certificate))
    _confirm(admin_client, make_csr())
    with app.app_context():
        assert get_session().scalar(select(func.count()).select_from(Certificate)) == before


def test_bad_csr_re_renders_the_form_with_the_reason(admin_client: FlaskClient) -> None:
    status, html = _confirm(admin_client, b"garbage")
    assert status == 400 and "証明書発行要求 (CSR) ではありません" in html and 'value="利用環境設定"' in html


def test_tampered_confirmation_is_refused(app: Flask, admin_client: FlaskClient) -> None:
    _status, html = _confirm(admin_client, make_csr())
    fields = _hidden(html)
    fields["csr_b64"] = "!!!not-base64!!!"
    response = admin_client.post("/admin/business-server-certificates/issue", data=fields)
    assert response.status_code == 400 and "変更されています" in response.get_data(as_text=True)
    fields = _hidden(html)
    fields["top_url"] = "javascript:alert(1)"
    response = admin_client.post("/admin/business-server-certificates/issue", data=fields)
    assert response.status_code == 400


def test_forms_require_csrf_token(admin_client: FlaskClient) -> None:
    response = admin_client.post("/admin/business-server-certificates/confirm", data=dict(BUSINESS))
    assert response.status_code == 400 and "確認用トークン (csrf_token) がありません" in response.get_data(as_text=True)


def test_modify_business_system(app: Flask, admin_client: FlaskClient) -> None:
    _status, html = _confirm(admin_client, make_csr())
    admin_client.post("/admin/business-server-certificates/issue", data=_hidden(html))
    page = admin_client.get("/admin/business-systems/05/edit").get_data(as_text=True)
    data = dict(BUSINESS, admin_org="新しい管理組織", csrf_token=csrf_token(page), business_id="99")
    response = admin_client.post("/admin/business-systems/05/edit", data=data)
    assert response.status_code == 302
    listing = admin_client.get("/admin/business-systems").get_data(as_text=True)
    assert "新しい管理組織" in listing and ">99<" not in listing
    assert admin_client.get("/admin/business-systems/42/edit").status_code == 404


def test_tampered_ids_in_urls_are_404_not_500(admin_client: FlaskClient) -> None:
    for url in ("/admin/certificates/999999", "/admin/certificates/999999/download/pem",
                "/admin/business-systems/zz/edit", "/pki/ca/999.der"):
        assert admin_client.get(url).status_code == 404, url
    assert admin_client.get("/admin/certificates/1/download/exe").status_code == 400


def test_pages_require_login(app: Flask) -> None:
    client = app.test_client()
    for url in ("/admin/", "/admin/certificates", "/admin/business-server-certificates/new",
                "/admin/business-systems"):
        response = client.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"], url


def test_one_time_password_must_be_changed_before_anything_else(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"csrf_token": csrf_token(page), "tenant": "system", "operator_id": "admin",
                                "password": app.config["BOOTSTRAP_PASSWORD"]})
    response = client.get("/admin/certificates")
    assert response.status_code == 302 and response.headers["Location"].endswith("/password")


def test_wrong_password_and_unknown_operator_get_the_same_answer(app: Flask) -> None:
    client = app.test_client()
    answers = []
    for operator_id, password in (("admin", "wrong-password"), ("nobody", "wrong-password")):
        page = client.get("/login").get_data(as_text=True)
        response = client.post("/login", data={"csrf_token": csrf_token(page), "tenant": "system",
                                               "operator_id": operator_id, "password": password})
        answers.append((response.status_code, re.sub(r'value="[^"]*"', "", response.get_data(as_text=True))))
    assert answers[0] == answers[1] and answers[0][0] == 401


def test_certificate_lists_page_with_their_filters(app: Flask, admin_client: FlaskClient) -> None:
    """The certificate list and a business system's certificates share the pager; its links keep the filters."""
    for _ in range(3):
        _status, html = _confirm(admin_client, make_csr())
        assert admin_client.post("/admin/business-server-certificates/issue", data=_hidden(html)).status_code == 302
    app.config["PAGE_SIZE"] = 2
    first = admin_client.get("/admin/certificates?profile=business_server&business_id=05").get_data(as_text=True)
    assert first.count('href="/admin/certificates/') == 2 and "1 / 2" in first
    nxt = re.search(r'<p class="pager">.*?href="([^"]+)"', first, re.S)
    assert nxt is not None and "page=2" in nxt[1] and "profile=business_server" in nxt[1] and "business_id=05" in nxt[1]
    second = admin_client.get(nxt[1].replace("&amp;", "&")).get_data(as_text=True)
    assert second.count('href="/admin/certificates/') == 1 and "2 / 2" in second and "前へ" in second
    own = admin_client.get("/admin/business-systems/05/certificates").get_data(as_text=True)
    assert "1 / 2" in own and 'href="/admin/business-systems/05/certificates?page=2"' in own
    assert "2 / 2" in admin_client.get("/admin/business-systems/05/certificates?page=2").get_data(as_text=True)
