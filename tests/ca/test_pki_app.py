"""/pki/ answers come from the lean PKI app: no cookie session, the same headers, settings from the instance."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from certs import pki_app
from config import instance as store
from db import get_session
from kernel.audit import SYSTEM_ACTOR
from operators.instance_settings import apply_changes
from tests.ca.pki_helpers import issue_leaf, revoke


def test_pki_answers_set_no_cookie_keep_the_security_headers_and_leave_the_session_alone(
        admin_client: FlaskClient) -> None:
    for path in ("/pki/ca-bundle.pem", "/pki/crl/2.crl", "/pki/ocsp"):
        response = admin_client.get(path)
        assert response.status_code == 200, path
        assert "Set-Cookie" not in response.headers, path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    missing = admin_client.get("/pki/nothing-here")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    assert admin_client.get("/pki/ca/%00.der").status_code == 404  # the request guard still runs
    home = admin_client.get("/")  # the browser's login is untouched
    assert home.status_code in (200, 302) and "/login" not in home.headers.get("Location", "")


def test_a_setting_changed_by_another_process_reaches_the_pki_answers(
        app: Flask, admin_client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pki_app, "SETTINGS_PROBE_SECONDS", 0.0)
    assert "max-age=60," in admin_client.get("/pki/crl/2.crl").headers["Cache-Control"]
    config = {key: app.config[key] for key in ("INSTANCE_DIR", "DATABASE_URL", "KEY_PASSPHRASE")}
    other = create_app(dict(config, SESSION_COOKIE_SECURE=False, TESTING=True))
    try:
        with other.app_context():
            session = get_session()
            given: Any = other.extensions[store.GIVEN]
            apply_changes(session, config=other.config, given=given, proposed={"PKI_CACHE_MAX_AGE_SECONDS": "30"},
                          actor=SYSTEM_ACTOR)
            session.commit()
    finally:
        other.extensions["opauth.engine"].dispose()
    assert "max-age=30," in admin_client.get("/pki/crl/2.crl").headers["Cache-Control"]


def test_a_pre_signed_answer_is_the_same_bytes_and_headers_as_from_the_pki_app(
        app: Flask, api: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found: list[object] = []
    lookup = pki_app.ocsp.stored_answer

    def recording(*args: Any) -> Any:
        found.append(lookup(*args))
        return found[-1]

    monkeypatch.setattr(pki_app.ocsp, "stored_answer", recording)
    leaf = issue_leaf(api, tmp_path)
    issuer = x509.load_pem_x509_certificate(leaf.issuer.read_bytes())
    body = ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, issuer, hashes.SHA256()).build().public_bytes(
        serialization.Encoding.DER)
    get_path = "/pki/ocsp/" + quote(base64.b64encode(body).decode(), safe="")
    client = app.test_client()
    assert client.post("/pki/ocsp", data=body).status_code == 200  # signs and stores the answer
    pki = app.extensions["opauth.pki_app"].test_client()  # the PKI app alone, without the pre-signed path
    for method, path, data in (("POST", "/pki/ocsp", body), ("GET", get_path, None)):
        fast, full = client.open(path, method=method, data=data), pki.open(path, method=method, data=data)
        assert fast.status_code == full.status_code == 200
        assert fast.data == full.data
        assert ocsp.load_der_ocsp_response(fast.data).certificate_status is ocsp.OCSPCertStatus.GOOD
        assert ("Date" in fast.headers) == ("Date" in full.headers), method  # its value may tick between the two
        assert sorted((k, v) for k, v in fast.headers.items() if k != "Date") == \
            sorted((k, v) for k, v in full.headers.items() if k != "Date"), method
    assert len(found) == 3 and found[0] is None and all(found[1:])  # first signed by the app, then read alone
    etag = client.get(get_path).headers["ETag"]
    assert client.get(get_path, headers={"If-None-Match": etag}).status_code == 304  # the PKI app's answer
    revoke(api, leaf.serial, "keyCompromise")
    assert ocsp.load_der_ocsp_response(client.post("/pki/ocsp", data=body).data).certificate_status is \
        ocsp.OCSPCertStatus.REVOKED  # never a stale "good"
