"""Hostile input never makes the server fail: every body, path, query and form is checked where it enters.

Bodies that once gave HTTP 500 (JSON nested thousands deep, a lone surrogate, a NUL on
PostgreSQL, 30-digit IDs in paths) are sent to the API, the HTML forms (with their CSRF
token, logged in), the unauthenticated WebAuthn endpoint and /pki; every answer is a clear 4xx.
Data is created through the API, as a client would.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.routing import IntegerConverter

from db import get_session
from kernel import webinput
from kernel.audit import AuditEvent
from tests.conftest import csrf_token
from tests.helpers import BUSINESS, make_csr

DEEP_ARRAY = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000
HUGE = "9" * 30

# Each of these once ended in a 500 somewhere, or would be stored as sent.
HOSTILE_JSON: dict[str, bytes] = {
    "deep_array": DEEP_ARRAY,
    "deep_object": DEEP_OBJECT,
    "deep_inside_string_ok_but_outside_deep": b'{"a": "[[[[", "b": ' + b"[" * 100 + b"]" * 100 + b"}",
    "lone_surrogate": b'{"name": "\\ud800", "tenant": "\\udfff", "operator_id": "x"}',
    "nul_escaped": b'{"name": "a\\u0000b", "tenant": "\\u0000", "operator_id": "\\u0000"}',
    "control_in_key": b'{"\\u0007": 1}',
    "huge_integer": b'{"page": ' + HUGE.encode() + b', "display_order": ' + b"9" * 5000 + b"}",
    "nan": b'{"x": NaN}',
    "infinity": b'{"x": 1e999}',
    "duplicate_key": b'{"name": "a", "name": "b"}',
    "invalid_utf8": b'{"name": "\xff\xfe\xc0\x80"}',
    "utf16": '{"name": "x"}'.encode("utf-16"),
    "truncated": b'{"name": [1, 2',
    "binary": b"\x00\x01\x02\x03",
}


def _json_routes(app: Flask) -> list[tuple[str, str]]:
    """Every state-changing /api/v1 route, with placeholder path values."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        for method in sorted((rule.methods or set()) & {"POST", "PUT", "DELETE"}):
            url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", "05", rule.rule)
            routes.append((url, method))
    return routes


def _put_business_system(api: FlaskClient, business_id: str, **overrides: str) -> Any:
    return api.put(f"/api/v1/business-systems/{business_id}", json=dict(BUSINESS, business_id=business_id,
                                                                         **overrides))


# --- the decoder and the text rule ----------------------------------------------------------------

def test_decoder_refuses_each_hostile_body_with_a_clear_message(sqlite_app: Flask) -> None:
    with sqlite_app.test_request_context():
        for name, body in HOSTILE_JSON.items():
            if name == "deep_inside_string_ok_but_outside_deep":
                continue
            with pytest.raises(webinput.InvalidInput) as refused:
                webinput.decode_json(body, max_bytes=1 << 20)
            assert refused.value.message, name
        with pytest.raises(webinput.BodyTooLarge):
            webinput.decode_json(b"[" + b"1," * 1000 + b"1]", max_bytes=100)
        # Brackets inside strings do not count towards the depth; a PEM keeps its line breaks.
        assert webinput.decode_json(b'{"a": "[[[[{{{{", "csr": "-----BEGIN\\r\\nX\\n"}', max_bytes=100) == {
            "a": "[[[[{{{{", "csr": "-----BEGIN\r\nX\n"}
        assert webinput.decode_json(b"[" * 32 + b"]" * 32, max_bytes=100) is not None


def test_text_rule_refuses_control_characters_and_over_long_values_never_cuts(sqlite_app: Flask) -> None:
    with sqlite_app.test_request_context():
        assert webinput.text("  名前 ", field="name", max_length=3) == "名前"
        assert webinput.text("a\r\nb", field="info", max_length=10, multiline=True) == "a\r\nb"
        for bad in ("a\x00b", "a\nb", "a\x1bb", "a\x7fb", "\ud800"):
            with pytest.raises(webinput.UnsafeText):
                webinput.text(bad, field="name", max_length=10)
        with pytest.raises(webinput.InvalidInput, match="4"):
            webinput.text("x" * 5, field="name", max_length=4)
        with pytest.raises(webinput.InvalidInput):
            webinput.text(5, field="name", max_length=4)


def test_every_integer_path_segment_uses_the_bounded_converter(sqlite_app: Flask) -> None:
    unbounded = [rule.rule for rule in sqlite_app.url_map.iter_rules()
                 for converter in (rule._converters or {}).values()
                 if isinstance(converter, IntegerConverter) and not isinstance(converter, webinput.IdConverter)]
    assert unbounded == []


# --- the API --------------------------------------------------------------------------------------

def hostile_json_failures(app: Flask, client: FlaskClient, *, no_cookie: bool = False) -> list[str]:
    """Every state-changing API route sent each hostile JSON body: the answers that are not a 400 with a message
    (or, with ``no_cookie``, that set a cookie)."""
    failures = []
    for url, method in _json_routes(app):
        for name, body in HOSTILE_JSON.items():
            if name == "deep_inside_string_ok_but_outside_deep":
                continue
            response = client.open(url, method=method, data=body, content_type="application/json")
            payload = response.get_json(silent=True) or {}
            if (response.status_code != 400 or not payload.get("message")
                    or (no_cookie and "Set-Cookie" in response.headers)):
                failures.append(f"{method} {url} {name}: {response.status_code} {payload}")
    return failures


def test_hostile_json_on_every_api_route_is_a_400(app: Flask, api: FlaskClient) -> None:
    assert hostile_json_failures(app, api) == []


def test_nul_and_over_long_text_in_a_business_system_are_refused_not_stored(app: Flask, api: FlaskClient) -> None:
    for field, value in (("name", "業務\x00名"), ("admin_org", "\x00"), ("name", "改行\nあり"),
                         ("name", "x" * 201), ("admin_org", "長" * 201), ("phone", "\x00")):
        response = _put_business_system(api, "31", **{field: value})
        assert response.status_code == 400, (field, value, response.get_json())
    assert api.get("/api/v1/business-systems/31").status_code == 404
    # Exactly at the limit is accepted and kept whole.
    assert _put_business_system(api, "31", name="x" * 200).status_code == 201
    assert api.get("/api/v1/business-systems/31").get_json()["name"] == "x" * 200


def test_control_characters_in_path_query_and_credentials_are_refused(app: Flask, api: FlaskClient) -> None:
    assert api.get("/api/v1/business-systems/%00").status_code == 404
    assert api.put("/api/v1/business-systems/%00", json=BUSINESS).status_code == 404
    assert api.get("/api/v1/business-systems/0%005").status_code == 404
    for url in ("/api/v1/certificates?q=%00", "/api/v1/certificates?profile=%00&status=%1b",
                "/api/v1/tenants/system/operators?q=%00", "/api/v1/tenants/system/operators/export.csv?name=%00",
                "/api/v1/certificates?page=" + HUGE, "/api/v1/certificates?%00=1"):
        response = api.get(url)
        assert response.status_code == 400 and response.get_json()["message"], url
    # An over-long query text is refused, not cut.
    assert api.get("/api/v1/tenants/system/operators?q=" + "x" * 101).status_code == 400
    # A query string that is not UTF-8 is refused, never searched for U+FFFD; percent-encoded UTF-8 is text.
    for url in ("/api/v1/certificates?q=%FF", "/api/v1/tenants/system/operators?q=%C3%28",
                "/api/v1/certificates?%E3=1"):
        response = api.get(url)
        assert response.status_code == 400 and "UTF-8" in response.get_json()["message"], url
    assert api.get("/api/v1/tenants/system/operators?q=%E5%8D%97").status_code == 200
    assert app.test_client().get("/login?next=%FF").status_code == 400  # pages too, before anything reads it
    anonymous = app.test_client()
    import base64

    for credentials in ("admin\x00@system:x", "admin@system:pass\x00word"):
        token = base64.b64encode(credentials.encode()).decode()
        response = anonymous.get("/api/v1/business-systems", headers={"Authorization": f"Basic {token}"})
        assert response.status_code == 401, credentials  # a failed login like any other


def test_multipart_and_wrong_content_types_on_the_api(app: Flask, api: FlaskClient) -> None:
    broken = b'--b\r\nContent-Disposition: form-data; name="csr"; filename="c.pem"\r\n\r\n' + make_csr()[:50]
    cases: list[tuple[bytes, str]] = [
        (broken, "multipart/form-data; boundary=b"),
        (b"--b--", "multipart/form-data"),  # no boundary parameter
        (b"name=%00&business_id=05", "application/x-www-form-urlencoded"),
        (b'{"name": "x"}', "text/plain"),
        (b"<xml/>", "application/xml"),
        (b"\x00" * 100, "application/octet-stream"),
    ]
    failures = []
    for url, method in _json_routes(app):
        for body, content_type in cases:
            response = api.open(url, method=method, data=body, content_type=content_type)
            if response.status_code >= 500:
                failures.append(f"{method} {url} {content_type}: {response.status_code}")
    assert failures == []
    response = api.post("/api/v1/business-server-certificates", data={
        **BUSINESS, "name": "a\x00b", "csr": (io.BytesIO(make_csr()), "c.pem")}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert api.get("/api/v1/business-systems/05").status_code == 404



def test_a_body_that_is_not_json_is_415_and_changes_nothing(api: FlaskClient) -> None:
    """A JSON endpoint sent another media type says so (415, not a generic 400), in the caller's language."""
    text = json.dumps(dict(BUSINESS, business_id="07"))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        response = api.put("/api/v1/business-systems/07", data=text, content_type=content_type)
        assert response.status_code == 415, content_type
        assert response.get_json()["error"] == "unsupported_media_type"
        assert "application/json" in response.get_json()["message"]
    english = api.put("/api/v1/business-systems/07", data=text, content_type="text/plain",
                      headers={"Accept-Language": "en"}).get_json()["message"]
    assert english.startswith("The Content-Type is not application/json"), english
    assert api.get("/api/v1/business-systems/07").status_code == 404  # nothing was saved
    empty = api.put("/api/v1/business-systems/07")  # no body at all: what is missing is the JSON object
    assert empty.status_code == 400 and empty.get_json()["error"] == "invalid_input"
    assert api.put("/api/v1/business-systems/07", data=text, content_type="application/json").status_code in (200, 201)


# --- unauthenticated endpoints: WebAuthn login and /pki -------------------------------------------

def test_hostile_json_on_the_unauthenticated_biometric_login(app: Flask) -> None:
    client = app.test_client()
    match = re.search(r'data-csrf="([^"]+)"', client.get("/bio/login").get_data(as_text=True))
    assert match
    token = match.group(1)
    for name, body in HOSTILE_JSON.items():
        response = client.post("/bio/login/options", data=body, content_type="application/json",
                               headers={"X-CSRFToken": token})
        if name == "deep_inside_string_ok_but_outside_deep":
            assert response.status_code < 500
        else:
            assert response.status_code == 400 and response.get_json()["message"], name


def test_pki_endpoints_answer_4xx_to_huge_numbers_and_hostile_bodies(app: Flask) -> None:
    client = app.test_client()
    for url in (f"/pki/crl/{HUGE}.crl", f"/pki/crl/{HUGE}.pem", f"/pki/ca/{HUGE}.der", f"/pki/ca/{HUGE}.pem",
                f"/pki/crl/1/{HUGE}.crl", f"/pki/crl/{'9' * 5000}.crl", "/pki/crl/2147483648.crl",
                "/pki/ca/%00.der", "/pki/ocsp/%00"):
        response = client.get(url)
        assert response.status_code == 404, url
    assert client.get("/pki/crl/2147483647.crl").status_code == 404
    bodies = [(DEEP_ARRAY, "application/json"), (HOSTILE_JSON["lone_surrogate"], "application/json"),
              (b"--b\r\nbroken", "multipart/form-data; boundary=b"), (b"\x00" * 10, "application/ocsp-request"),
              (b"a=%00", "application/x-www-form-urlencoded")]
    for body, content_type in bodies:
        response = client.post("/pki/ocsp", data=body, content_type=content_type)
        assert response.status_code < 500, (body[:20], content_type)


# --- the HTML pages and form posts ----------------------------------------------------------------

def test_huge_ids_in_admin_pages_are_a_404_page(app: Flask, admin_client: FlaskClient) -> None:
    for url in (f"/admin/certificates/{HUGE}", f"/admin/certificates/{HUGE}/download/pem",
                f"/admin/t/system/staged/{HUGE}/edit", "/admin/certificates/99999999999"):
        response = admin_client.get(url)
        assert response.status_code == 404, url
        assert "404" in response.get_data(as_text=True)
    token = csrf_token(admin_client.get("/admin/").get_data(as_text=True))
    for url in (f"/admin/certificates/{HUGE}/revoke", f"/admin/t/system/staged/{HUGE}/delete",
                f"/bio/manage/system/admin/credentials/{HUGE}/delete"):
        assert admin_client.post(url, data={"csrf_token": token}).status_code == 404, url


def _form_routes(app: Flask) -> list[str]:
    return sorted({rule.rule for rule in app.url_map.iter_rules()
                   if "POST" in (rule.methods or set()) and not rule.rule.startswith(("/api/", "/pki/"))
                   and rule.endpoint not in ("auth.logout",)})


def test_hostile_form_posts_are_never_a_500(app: Flask, admin_client: FlaskClient) -> None:
    token = csrf_token(admin_client.get("/admin/").get_data(as_text=True))
    values = {"tenant_code": "system", "code": "system", "operator_id": "admin", "business_id": "05", "serial": "00",
              "fmt": "pem"}
    hostile_fields = {"name": "a\x00b", "admin_org": "x" * 5000, "operator_id": "\x00", "tenant": "\x1b",
                      "password": "\ufffe\u202e", "business_id": HUGE, "reason": "\x00", "hosts": "a\x00.example.jp",
                      "q": "\x00", "code": "x" * 300, "kind": "\x00", "csr": "-----BEGIN\x00"}
    failures = []
    for rule in _form_routes(app):
        url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: values.get(m.group(1), HUGE), rule)
        attempts: list[dict[str, Any]] = [
            {"data": dict(hostile_fields, csrf_token=token)},
            {"data": dict(hostile_fields, csrf_token=token, csr=(io.BytesIO(b"\x00\xff" * 50), "c.pem"),
                          file=(io.BytesIO(b"\xff\xfe\x00,\x00\r\n"), "x.csv")), "content_type": "multipart/form-data"},
            {"data": b"--b\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n" + token.encode(),
             "content_type": "multipart/form-data; boundary=b"},
            # A surrogate encoded in UTF-8 (invalid), and bytes that are no UTF-8 at all.
            {"data": f"csrf_token={token}&name=%ED%A0%80&operator_id=%FF%FE&tenant=%C0%80".encode(),
             "content_type": "application/x-www-form-urlencoded"},
            {"data": DEEP_ARRAY, "content_type": "application/json", "headers": {"X-CSRFToken": token}},
            {"data": HOSTILE_JSON["lone_surrogate"], "content_type": "application/json",
             "headers": {"X-CSRFToken": token}},
        ]
        for attempt in attempts:
            response = admin_client.post(url, **attempt)
            response.get_data()  # a streamed page must finish too
            if response.status_code >= 500:
                failures.append(f"POST {url} {attempt.get('content_type', 'form')}: {response.status_code}")
    assert failures == []


def test_form_fields_that_are_not_utf8_are_refused_never_stored_as_escapes(app: Flask,
                                                                           admin_client: FlaskClient) -> None:
    token = csrf_token(admin_client.get("/admin/tenants").get_data(as_text=True))
    urlencoded = "application/x-www-form-urlencoded"
    # 市 followed by a surrogate encoded in UTF-8: werkzeug kept the bad escape as the text "%ED%A0%80".
    response = admin_client.post("/admin/tenants", content_type=urlencoded,
                                 data=f"csrf_token={token}&code=walk-z&name=%E5%B8%82%ED%A0%80&kind=voluntary")
    assert response.status_code == 400
    assert "フォームの入力が正しい UTF-8 ではありません。" in response.get_data(as_text=True)
    english = admin_client.post("/admin/tenants?lang=en", content_type=urlencoded,
                                data=f"csrf_token={token}&code=walk-z&name=%E5%B8%82%ED%A0%80&kind=voluntary")
    assert english.status_code == 400 and "The form input is not valid UTF-8." in english.get_data(as_text=True)
    assert "walk-z" not in admin_client.get("/admin/tenants").get_data(as_text=True)
    # Raw bytes that are not UTF-8, and a multipart text field (werkzeug would read it as U+FFFD).
    multipart = (f'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'.encode()
                 + b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\na\xffb\r\n--b--\r\n')
    for body, content_type in ((f"csrf_token={token}&name=a%FFb".encode(), urlencoded),
                               (f"csrf_token={token}&name=a\xffb".encode("latin-1"), urlencoded),
                               (multipart, "multipart/form-data; boundary=b")):
        response = admin_client.post("/admin/t/system/register", data=body, content_type=content_type)
        assert response.status_code == 400, (body, response.status_code)
        assert "UTF-8" in response.get_data(as_text=True), body
    # The login form too: a 400, not a failed login.
    anonymous = app.test_client()
    login_token = csrf_token(anonymous.get("/login").get_data(as_text=True))
    response = anonymous.post("/login", content_type=urlencoded,
                              data=f"csrf_token={login_token}&tenant=system&operator_id=%ED%A0%80&password=x")
    assert response.status_code == 400 and "UTF-8" in response.get_data(as_text=True)
    # Percent-encoded UTF-8 is text as before.
    created = admin_client.post("/admin/tenants", content_type=urlencoded,
                                data=f"csrf_token={token}&code=walk-y&name=%E5%B8%82&kind=voluntary")
    assert created.status_code == 302
    assert "市" in admin_client.get("/admin/tenants").get_data(as_text=True)


def test_the_control_character_refusal_reads_as_japanese_and_english(app: Flask, api: FlaskClient,
                                                                     admin_client: FlaskClient) -> None:
    query = api.get("/api/v1/certificates?q=%00", headers={"Accept-Language": "ja"}).get_json()["message"]
    assert query == "クエリ文字列に使用できない文字(制御文字)が含まれています。"  # no space before に
    token = csrf_token(admin_client.get("/admin/tenants").get_data(as_text=True))
    form = admin_client.post("/admin/tenants", data={"csrf_token": token, "code": "x", "name": "a\x00"})
    assert form.status_code == 400
    assert "フォームの入力に使用できない文字(制御文字)が含まれています。" in form.get_data(as_text=True)
    english = api.get("/api/v1/certificates?q=%00", headers={"Accept-Language": "en"}).get_json()["message"]
    assert english == "The query string contains characters that are not allowed (control characters)."


def test_nul_in_the_business_system_form_is_refused(app: Flask, api: FlaskClient,
                                                    admin_client: FlaskClient) -> None:
    assert _put_business_system(api, "05").status_code == 201
    page = admin_client.get("/admin/business-systems/05/edit").get_data(as_text=True)
    response = admin_client.post("/admin/business-systems/05/edit",
                                 data=dict(BUSINESS, name="業務\x00", csrf_token=csrf_token(page)))
    assert response.status_code == 400
    assert api.get("/api/v1/business-systems/05").get_json()["name"] == BUSINESS["name"]


# --- the API and the browser's cookie -------------------------------------------------------------

def _denied_events(app: Flask, reason: str) -> int:
    with app.app_context():
        session = get_session()
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.access_denied",
                                                          AuditEvent.result == "failure")).all()
        session.rollback()
        return sum(1 for e in events if (e.detail or {}).get("reason") == reason)


def test_api_call_riding_on_the_session_cookie_needs_the_csrf_token(app: Flask, admin_client: FlaskClient,
                                                                    api: FlaskClient) -> None:
    tenant = {"code": "cookie-city", "name": "クッキー市", "kind": "municipality"}
    # Reading with the cookie is fine: a cross-site page cannot read the answer.
    assert admin_client.get("/api/v1/tenants").status_code == 200
    refused = admin_client.post("/api/v1/tenants", json=tenant)
    assert refused.status_code == 403 and refused.get_json()["error"] == "csrf"
    assert admin_client.post("/api/v1/tenants", json=tenant, headers={"X-CSRFToken": "forged"}).status_code == 403
    # A cross-site multipart upload (what an HTML form can send) is refused before anything is read.
    upload = admin_client.post("/api/v1/business-server-certificates", content_type="multipart/form-data",
                               data={**BUSINESS, "csr": (io.BytesIO(make_csr()), "c.pem")})
    assert upload.status_code == 403
    assert admin_client.put("/api/v1/business-systems/05", json=BUSINESS).status_code == 403
    assert _denied_events(app, "csrf") == 4
    assert api.get("/api/v1/tenants/cookie-city").status_code == 404
    assert api.get("/api/v1/business-systems/05").status_code == 404
    # The page's own token (as the UI's scripts send it) is accepted.
    token = csrf_token(admin_client.get("/admin/").get_data(as_text=True))
    created = admin_client.post("/api/v1/tenants", json=tenant, headers={"X-CSRFToken": token})
    assert created.status_code == 201, created.get_json()
    # Machine clients with HTTP Basic need no token.
    assert api.put("/api/v1/tenants/cookie-city", json={"name": "クッキー市役所"}).status_code == 200


def test_empty_basic_credentials_do_not_unlock_the_cookie(app: Flask, admin_client: FlaskClient) -> None:
    import base64

    empty = base64.b64encode(b"admin@system:").decode()
    response = admin_client.post("/api/v1/tenants", json={"code": "x-city", "name": "x", "kind": "municipality"},
                                 headers={"Authorization": f"Basic {empty}"})
    assert response.status_code == 403


def test_api_call_a_browser_makes_for_another_site_is_refused_whatever_it_carries(app: Flask,
                                                                                   api: FlaskClient) -> None:
    """Basic credentials a browser remembers from a login prompt are ambient too."""
    tenant = {"code": "cross-city", "name": "クロス市", "kind": "municipality"}
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "https://evil.example"}, {"Origin": "null"}):
        response = api.post("/api/v1/tenants", json=tenant, headers=headers)
        assert response.status_code == 403, headers
    assert _denied_events(app, "cross_site") == 4
    assert api.get("/api/v1/tenants/cross-city").status_code == 404
    # The app's own origin, and reading from anywhere, are fine.
    assert api.get("/api/v1/tenants", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
    response = api.post("/api/v1/tenants", json=tenant,
                        headers={"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"})
    assert response.status_code == 201, response.get_json()


def test_form_and_query_values_are_refused_when_too_long_never_cut(app: Flask, api: FlaskClient,
                                                                   admin_client: FlaskClient) -> None:
    """A value one character too long once became another, valid value by being cut."""
    assert _put_business_system(api, "05").status_code == 201
    long_code = "abcdefghij-klmnopqrs"  # 20 characters, the longest tenant code
    assert api.post("/api/v1/tenants", json={"code": long_code, "name": "長い市",
                                             "kind": "municipality"}).status_code == 201
    # 業務ID "05x" is not 05.
    assert admin_client.get("/admin/business-systems/05x/edit").status_code == 404
    # Joint use for "<code>x" is not joint use for <code>.
    page = admin_client.get("/admin/joint-use?business_id=05").get_data(as_text=True)
    response = admin_client.post("/admin/joint-use", data={"csrf_token": csrf_token(page), "business_id": "05",
                                                           "permitted": [long_code + "x"], "action": "save"})
    assert response.status_code == 400
    assert api.get("/api/v1/business-systems/05/joint-use").get_json()["tenants"] == []
    # 許可業務 "051" is not 05.
    assert api.put("/api/v1/business-systems/05/joint-use", json={"tenants": [long_code]}).status_code == 200
    page = admin_client.get(f"/admin/t/{long_code}/register").get_data(as_text=True)
    response = admin_client.post(f"/admin/t/{long_code}/register", data={
        "csrf_token": csrf_token(page), "operator_id": "OPCUT1", "name": "切詰 太郎", "gender": "unspecified",
        "auth_method": "password", "role": "operator", "business_ids": ["051"], "action": "register"})
    assert response.status_code == 400
    # A search text over its limit is refused, not shortened.
    assert admin_client.get("/admin/certificates?text=" + "x" * 101).status_code == 400
    assert admin_client.get("/admin/certificates?text=" + "x" * 100).status_code == 200
