"""API calls with a token (``Authorization: Bearer opa_...``) are served by the lean API app.

No cookie session is read or set for them, the token is checked against the database on every call, the
refusal of calls a browser marks as cross-site still applies, and one issuance stays a handful of statements.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import instance as store
from db import get_session
from kernel.audit import SYSTEM_ACTOR
from operators.instance_settings import apply_changes
from tests.helpers import business_payload, make_csr, statements_of, writes_of
from tests.operators.test_api_tokens import ISSUE, audit_actions, bearer, new_token, register_system


def test_every_api_path_is_served_for_tokens_by_the_lean_app_and_nothing_else(app: Flask) -> None:
    machine: Flask = app.extensions["opauth.bearer_api_app"]

    def rules(of: Flask, prefix: str) -> set[tuple[str, frozenset[str]]]:
        return {(r.rule, frozenset(r.methods or ())) for r in of.url_map.iter_rules() if r.rule.startswith(prefix)}

    assert rules(machine, "/api/") == rules(app, "/api/")
    assert rules(machine, "/") == rules(machine, "/api/")  # no page, no static files
    assert not hasattr(machine, "login_manager")


def test_a_token_call_with_a_browser_session_neither_uses_nor_touches_the_session(
        admin_client: FlaskClient, api: FlaskClient) -> None:
    app = admin_client.application
    register_system(api)
    created = new_token(api, ISSUE)
    secret, token_id = created["token"], created["id"]

    headers = {"Authorization": f"Bearer {secret}"}
    issued = admin_client.post("/api/v1/business-server-certificates", json=business_payload(make_csr()),
                               headers=headers)
    assert issued.status_code == 201, issued.get_json()
    assert "Set-Cookie" not in issued.headers  # the session's idle timer is not even refreshed
    assert issued.headers["X-Content-Type-Options"] == "nosniff" and issued.headers["X-Frame-Options"] == "DENY"
    target = f"certificate:{issued.get_json()['serial']}"
    entry = [e for e in audit_actions(app, "certificate.issued") if e.target == target]
    assert len(entry) == 1 and f"api_token:{token_id}" in entry[0].source
    # The token's scope, not the administrator's session, decides what the call may do.
    assert admin_client.get("/api/v1/business-systems", headers=headers).status_code == 403
    assert admin_client.get("/api/v1/business-systems").status_code == 200  # the session is alive and well

    assert api.post(f"/api/v1/api-tokens/{token_id}/revoke").status_code == 200
    refused = admin_client.post("/api/v1/business-server-certificates", json=business_payload(make_csr()),
                                headers=headers)
    assert refused.status_code == 401 and refused.get_json()["reason"] == "revoked"  # no fallback to the session
    assert "Set-Cookie" not in refused.headers


def test_a_token_call_a_browser_marks_cross_site_is_refused_and_audited(api: FlaskClient) -> None:
    app = api.application
    secret = new_token(api, ISSUE)["token"]
    before = len(audit_actions(app, "auth.access_denied"))
    refused = bearer(app, secret).post("/api/v1/business-server-certificates", json=business_payload(make_csr()),
                                       headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403 and refused.get_json()["error"] == "csrf"
    assert len(audit_actions(app, "auth.access_denied")) == before + 1
    assert bearer(app, secret).post("/api/v1/business-server-certificates", json=business_payload(make_csr()),
                                    headers={"Origin": "https://elsewhere.example"}).status_code == 403


def test_bad_input_with_a_token_is_a_clear_4xx_in_the_callers_language(api: FlaskClient) -> None:
    app = api.application
    register_system(api)
    machine = bearer(app, new_token(api, ISSUE)["token"])
    bad = machine.post("/api/v1/business-server-certificates", json=dict(business_payload(make_csr()), top_url="x"),
                       headers={"Accept-Language": "en"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_input"
    assert "top_url" in bad.get_json()["message"] and "https://" in bad.get_json()["message"]
    assert machine.get("/api/v1/nothing-here").status_code == 404
    assert machine.get("/api/v1/certificates/%00").status_code in (400, 404)  # the request guard still runs
    assert machine.post("/api/v1/business-server-certificates", data=b"{not json",
                        content_type="application/json").status_code == 400


def test_hostile_json_with_a_token_on_every_api_route_is_a_400(api: FlaskClient) -> None:
    from tests.test_hostile_input import hostile_json_failures

    app = api.application
    assert hostile_json_failures(app, bearer(app, new_token(api, ISSUE)["token"]), no_cookie=True) == []


def test_settings_changed_with_a_token_apply_to_the_whole_process(api: FlaskClient) -> None:
    app = api.application
    machine = bearer(app, new_token(api, "settings.manage")["token"])
    listed = machine.get("/api/v1/settings")
    assert listed.status_code == 200, listed.get_json()
    assert listed.get_json() == api.get("/api/v1/settings").get_json()  # the same sources as for a person
    changed = machine.patch("/api/v1/settings", json={"PKI_CACHE_MAX_AGE_SECONDS": 30})
    assert changed.status_code == 200, changed.get_json()
    assert app.config["PKI_CACHE_MAX_AGE_SECONDS"] == 30
    assert "max-age=30," in api.get("/pki/crl/2.crl").headers["Cache-Control"]


def test_a_setting_changed_by_another_process_reaches_token_calls(
        api: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import app as app_module

    monkeypatch.setattr(app_module, "API_SETTINGS_PROBE_SECONDS", 0.0)
    app = api.application
    machine = bearer(app, new_token(api, "settings.manage")["token"])
    assert machine.get("/api/v1/settings/PKI_CACHE_MAX_AGE_SECONDS").get_json()["value"] == 60
    config = {key: app.config[key] for key in ("INSTANCE_DIR", "DATABASE_URL", "KEY_PASSPHRASE")}
    other = app_module.create_app(dict(config, SESSION_COOKIE_SECURE=False, TESTING=True))
    try:
        with other.app_context():
            session = get_session()
            apply_changes(session, config=other.config, given=other.extensions[store.GIVEN],
                          proposed={"PKI_CACHE_MAX_AGE_SECONDS": "30"}, actor=SYSTEM_ACTOR)
            session.commit()
    finally:
        other.extensions["opauth.engine"].dispose()
    assert machine.get("/api/v1/settings/PKI_CACHE_MAX_AGE_SECONDS").get_json()["value"] == 30


def test_one_token_issuance_reads_each_row_once_and_commits_once(api: FlaskClient,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The token (its revocation, expiry and owner's lock) read fresh; certificate and audit entry in one commit."""
    import app as app_module

    # The stored settings are re-read at most once a second (tested above); on a slow machine the warm-up can
    # take longer, so the probe is kept out of this count, which is about the issuance's own statements.
    monkeypatch.setattr(app_module, "API_SETTINGS_PROBE_SECONDS", 3600.0)
    app = api.application
    register_system(api)
    machine = bearer(app, new_token(api, ISSUE)["token"])
    for _ in range(2):  # warm: the business system exists, the token's last use is recorded
        assert machine.post("/api/v1/business-server-certificates",
                            json=business_payload(make_csr())).status_code == 201
    response, statements, commits = statements_of(app, lambda: machine.post(
        "/api/v1/business-server-certificates", json=business_payload(make_csr())))
    assert response.status_code == 201, response.get_json()
    assert [s for s in statements if s.startswith("SELECT api_token.") and "api_token.revoked_at" in s
            and "operator_login_state" in s], statements
    assert writes_of(statements) == ["INSERT certificate", "UPDATE audit_head", "INSERT audit_event",
                                     "UPDATE audit_head"], statements
    # token, business system, its latest certificate, the active CA, the serial's freedom: 5 reads, 4 writes
    # (no per-request probe of the stored settings)
    assert len(statements) <= 9, "\n".join(statements)
    assert commits == 1
