"""環境基本設定: settings kept with the instance, changed through one service (screen, API), on SQLite and PostgreSQL.

"Another process" is a second app built on the same instance directory and
database, as a CLI command or another gunicorn worker would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import create_app
from config import INSTANCE_SETTINGS, PINNED, SETTINGS
from config import instance as store
from db import get_session
from kernel.audit import SYSTEM_ACTOR, AuditAction, AuditEvent
from kernel.errors import SettingsConflict
from operators.instance_settings import SettingsInvalid, apply_changes, plan_changes
from tests.conftest import TEST_PKI_BASE, csrf_token
from tests.helpers import business_payload, make_csr


def other_process(app: Flask, **overrides: Any) -> Flask:
    """An app on the same instance as ``app`` whose environment gives only what a bare CLI would have."""
    config = {key: app.config[key] for key in ("INSTANCE_DIR", "DATABASE_URL", "KEY_PASSPHRASE")}
    config.update(SESSION_COOKIE_SECURE=False, BIOMETRIC_CLIENT_CERT_REQUIRED=False, TESTING=True)
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def bare(app: Flask) -> Iterator[Flask]:
    other = other_process(app)
    yield other
    other.extensions["opauth.engine"].dispose()


def audit_events(app: Flask, action: AuditAction) -> list[AuditEvent]:
    with app.app_context():
        return list(get_session().scalars(select(AuditEvent).where(AuditEvent.action == str(action))
                                          .order_by(AuditEvent.id)))


def change(app: Flask, **proposed: Any) -> list[Any]:
    with app.app_context():
        session = get_session()
        changes = apply_changes(session, config=app.config, given=app.extensions[store.GIVEN], proposed=proposed,
                                actor=SYSTEM_ACTOR)
        session.commit()
    return changes


def pki_urls_of(pem: str) -> list[str]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    cdp = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    aia = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    return [str(n.value) for p in cdp for n in (p.full_name or [])] + \
        [str(d.access_location.value) for d in aia]


def test_every_instance_setting_is_a_declared_setting() -> None:
    keys = {s.key for s in SETTINGS}
    assert set(INSTANCE_SETTINGS) <= keys and set(INSTANCE_SETTINGS) >= PINNED
    assert not {"INSTANCE_DIR", "DATABASE_URL", "SECRET_KEY", "KEY_PASSPHRASE"} & set(INSTANCE_SETTINGS)


def test_init_stores_the_urls_that_go_into_certificates(app: Flask) -> None:
    with app.app_context():
        stored = store.stored_values(get_session())
    assert stored["PKI_BASE_URL"] == TEST_PKI_BASE
    assert stored["PUBLIC_BASE_URL"] == "https://localhost:8443" and stored["ORGANIZATION"] == "opauth"
    # Overrides given at init are kept too (here the tests' own choice for mutual TLS on biometric logins).
    assert stored["BIOMETRIC_CLIENT_CERT_REQUIRED"] is False
    [event] = audit_events(app, AuditAction.SETTINGS_INITIALISED)
    assert event.detail["PKI_BASE_URL"] == TEST_PKI_BASE


def test_a_process_without_the_environment_uses_the_instance_urls(app: Flask, bare: Flask) -> None:
    assert bare.config["PKI_BASE_URL"] == TEST_PKI_BASE
    with bare.app_context():
        rows = {r.key: r for r in store.effective(bare.config, bare.extensions[store.GIVEN],
                                                   store.stored_values(get_session()))}
    assert rows["PKI_BASE_URL"].source is store.Source.INSTANCE
    assert rows["CERT_EXPIRY_WARNING_DAYS"].source is store.Source.DEFAULT
    assert rows["DATABASE_URL"].source is store.Source.ENVIRONMENT and not rows["DATABASE_URL"].instance


def test_a_change_reaches_another_process_before_its_next_request(app: Flask, bare: Flask) -> None:
    assert app.test_client().get("/login").status_code == 200  # warmed up with the old values
    change(bare, CERT_EXPIRY_WARNING_DAYS="45", PKI_BASE_URL="http://pki2.opauth.example.jp/")
    assert bare.config["CERT_EXPIRY_WARNING_DAYS"] == 30  # the service stores; the caller applies
    app.test_client().get("/login")
    assert app.config["CERT_EXPIRY_WARNING_DAYS"] == 45
    assert app.config["PKI_BASE_URL"] == "http://pki2.opauth.example.jp"  # the instance's, not its environment's
    assert app.config["PINNED_CONFLICTS"]  # ... which now disagrees, so ``app`` refuses to issue


def test_restart_settings_wait_for_the_restart(app: Flask, bare: Flask) -> None:
    change(bare, PUBLIC_BASE_URL="https://opauth.city.example.jp")
    bare.test_client().get("/login")
    assert bare.config["PUBLIC_BASE_URL"] == "https://localhost:8443"
    with bare.app_context():
        rows = {r.key: r for r in store.effective(bare.config, {}, store.stored_values(get_session()))}
    assert rows["PUBLIC_BASE_URL"].pending == "https://opauth.city.example.jp"
    restarted = other_process(app)
    assert restarted.config["PUBLIC_BASE_URL"] == "https://opauth.city.example.jp"
    assert restarted.config["WEBAUTHN_RP_ID"] == "opauth.city.example.jp"
    restarted.extensions["opauth.engine"].dispose()


@pytest.mark.parametrize(("proposed", "key", "reason"), [
    ({"PKI_BASE_URL": "ftp://pki.example.jp"}, "PKI_BASE_URL", "http:// または https://"),
    ({"PKI_BASE_URL": "http://pki.example.jp/?x=1"}, "PKI_BASE_URL", "?"),
    ({"CERT_EXPIRY_WARNING_DAYS": "abc"}, "CERT_EXPIRY_WARNING_DAYS", "整数"),
    ({"CERT_EXPIRY_WARNING_DAYS": 0}, "CERT_EXPIRY_WARNING_DAYS", "1 以上 365 以下"),
    ({"PASSWORD_MIN_LENGTH": True}, "PASSWORD_MIN_LENGTH", "整数"),
    ({"CRL_REFRESH_HOURS": "24"}, "CRL_REFRESH_HOURS", "より小さく"),
    ({"WEBAUTHN_ATTESTATION": "indirect"}, "WEBAUTHN_ATTESTATION", "none, direct"),
    ({"WEBAUTHN_ALLOWED_AAGUIDS": "not-a-uuid"}, "WEBAUTHN_ALLOWED_AAGUIDS", "AAGUID"),
    ({"DATABASE_URL": "sqlite://"}, "DATABASE_URL", "環境変数"),
    ({"SESSION_COOKIE_SECURE": "true"}, "SESSION_COOKIE_SECURE", "環境変数"),
])
def test_bad_values_are_refused_with_a_reason_and_nothing_is_stored(app: Flask, proposed: dict[str, Any], key: str,
                                                                    reason: str) -> None:
    with app.app_context():
        before = store.current_version(get_session())
        with pytest.raises(SettingsInvalid) as caught:
            apply_changes(get_session(), config=app.config, given={}, proposed=proposed, actor=SYSTEM_ACTOR)
        get_session().rollback()
        assert reason in caught.value.errors[key]
        assert store.current_version(get_session()) == before


def test_a_value_the_environment_sets_cannot_be_changed_here(app: Flask) -> None:
    with app.app_context(), pytest.raises(SettingsInvalid, match="OPAUTH_PKI_BASE_URL"):
        plan_changes(get_session(), config=app.config, given=app.extensions[store.GIVEN],
                     proposed={"PKI_BASE_URL": "http://elsewhere.example.jp"})


def test_changes_are_audited_with_old_and_new_value(app: Flask) -> None:
    changes = change(app, CERT_EXPIRY_WARNING_DAYS="60", LOGIN_MAX_FAILURES=5)
    assert [c.key for c in changes] == ["CERT_EXPIRY_WARNING_DAYS"]  # 5 is what is in effect already
    [event] = audit_events(app, AuditAction.SETTING_CHANGED)
    assert event.detail == {"key": "CERT_EXPIRY_WARNING_DAYS", "old": "30", "new": "60", "restart_required": False}
    assert event.actor == "system"


def test_an_environment_that_disagrees_about_pinned_urls_cannot_issue(app: Flask) -> None:
    rogue = other_process(app, PKI_BASE_URL="https://other-host.example.jp")
    try:
        assert rogue.config["PKI_BASE_URL"] == TEST_PKI_BASE  # the instance's value is the one in effect
        assert "OPAUTH_PKI_BASE_URL" in rogue.config["PINNED_CONFLICTS"][0]
        from ca.authority import CaSettings
        from certs.business_server import issue_business_server_certificate
        from operators.business_systems import BusinessSystemData

        payload = business_payload(make_csr())
        with rogue.app_context(), pytest.raises(SettingsConflict, match="OPAUTH_PKI_BASE_URL"):
            issue_business_server_certificate(
                get_session(), settings=CaSettings.from_config(rogue.config),
                data=BusinessSystemData.from_mapping(payload), csr_bytes=payload["csr"].encode(),
                actor=SYSTEM_ACTOR, may_change_system=True)
        # Revocation information keeps flowing from such a process.
        assert rogue.test_client().get("/pki/crl/2.crl").status_code == 200
    finally:
        rogue.extensions["opauth.engine"].dispose()


# --- the screen --------------------------------------------------------------------------------------

def test_screen_changes_a_setting_after_confirmation(app: Flask, admin_client: FlaskClient) -> None:
    page = admin_client.get("/admin/settings").get_data(as_text=True)
    assert "環境基本設定" in page and "OPAUTH_KEY_PASSPHRASE" in page and "test-passphrase" not in page
    confirm = admin_client.post("/admin/settings/confirm", data={
        "csrf_token": csrf_token(page), "CERT_EXPIRY_WARNING_DAYS": "45",
        "PASSWORD_MIN_LENGTH": str(app.config["PASSWORD_MIN_LENGTH"])})
    text = confirm.get_data(as_text=True)
    assert confirm.status_code == 200 and "環境基本設定の確認" in text and "45" in text
    assert "PASSWORD_MIN_LENGTH" not in text  # unchanged fields are not proposed
    assert app.config["CERT_EXPIRY_WARNING_DAYS"] == 30  # nothing applied before 登録
    done = admin_client.post("/admin/settings/apply", data={"csrf_token": csrf_token(text),
                                                            "keys": "CERT_EXPIRY_WARNING_DAYS",
                                                            "new_CERT_EXPIRY_WARNING_DAYS": "45"})
    assert done.status_code == 303
    assert app.config["CERT_EXPIRY_WARNING_DAYS"] == 45
    assert "有効期限警告（日前） を変更しました。" in admin_client.get("/admin/settings").get_data(as_text=True)


def test_screen_shows_a_refused_value_with_its_reason(admin_client: FlaskClient) -> None:
    page = admin_client.get("/admin/settings").get_data(as_text=True)
    response = admin_client.post("/admin/settings/confirm", data={"csrf_token": csrf_token(page),
                                                                  "SESSION_IDLE_MINUTES": "ten"})
    assert response.status_code == 400
    assert 'id="error-SESSION_IDLE_MINUTES">整数を入力してください。' in response.get_data(as_text=True)


def test_top_menu_leads_to_the_settings_screen(admin_client: FlaskClient) -> None:
    assert 'href="/admin/settings"' in admin_client.get("/top").get_data(as_text=True)


# --- the API -----------------------------------------------------------------------------------------

def test_api_lists_values_with_their_source_and_never_secrets(api: FlaskClient) -> None:
    items = {i["key"]: i for i in api.get("/api/v1/settings").get_json()["items"]}
    assert items["PKI_BASE_URL"] == {**items["PKI_BASE_URL"], "value": TEST_PKI_BASE, "pinned": True}
    assert items["KEY_PASSPHRASE"]["value"] == "(set)" and items["KEY_PASSPHRASE"]["environment"] == "(set)"
    assert items["PUBLIC_BASE_URL"]["restart_required"] is True
    assert api.get("/api/v1/settings/page_size").get_json()["value"] == 50
    assert api.get("/api/v1/settings/NOPE").status_code == 404


def test_api_patch_is_all_or_nothing(app: Flask, api: FlaskClient) -> None:
    refused = api.patch("/api/v1/settings", json={"PAGE_SIZE": 20, "LOGIN_LOCK_MINUTES": -1})
    assert refused.status_code == 400 and set(refused.get_json()["errors"]) == {"LOGIN_LOCK_MINUTES"}
    assert app.config["PAGE_SIZE"] == 50
    assert audit_events(app, AuditAction.SETTINGS_REJECTED)
    done = api.patch("/api/v1/settings", json={"PAGE_SIZE": 20, "LOGIN_LOCK_MINUTES": 15})
    assert done.status_code == 200, done.get_json()
    assert {c["key"] for c in done.get_json()["changed"]} == {"PAGE_SIZE", "LOGIN_LOCK_MINUTES"}
    assert app.config["PAGE_SIZE"] == 20 and app.config["LOGIN_LOCK_MINUTES"] == 15


def test_api_issues_with_the_url_changed_on_the_screen(app: Flask, bare: Flask, api: FlaskClient) -> None:
    # A process without OPAUTH_PKI_BASE_URL (``bare``) may change it; ``app`` still has the variable.
    bare_admin = bare.test_client()
    bare_admin.environ_base["HTTP_AUTHORIZATION"] = api.environ_base["HTTP_AUTHORIZATION"]
    response = bare_admin.patch("/api/v1/settings", json={"PKI_BASE_URL": "http://pki.city.example.jp"})
    assert response.status_code == 200, response.get_json()
    issued = bare_admin.post("/api/v1/business-server-certificates", json=business_payload(make_csr()))
    assert issued.status_code == 201, issued.get_json()
    pem = bare_admin.get(f"/api/v1/certificates/{issued.get_json()['serial']}/pem").get_data(as_text=True)
    assert all(url.startswith("http://pki.city.example.jp/pki/") for url in pki_urls_of(pem))
    # ``app``'s environment (the tests' OPAUTH_PKI_BASE_URL) now disagrees: it refuses instead of signing.
    refused = api.post("/api/v1/business-server-certificates", json=business_payload(make_csr()))
    assert refused.status_code == 409 and refused.get_json()["error"] == "settings_conflict"


def test_only_system_administrators_reach_the_settings(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    assert app.test_client().get("/api/v1/settings").status_code == 401
    assert app.test_client().get("/admin/settings").status_code in (302, 401)
