"""/pki/ answers come from the lean PKI app: no cookie session, the same headers, settings from the instance."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from ca import pki_app
from config import instance as store
from db import get_session
from operators.audit import SYSTEM_ACTOR
from operators.instance_settings import apply_changes


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
