"""失効: revoking and releasing holds through the API, the CLI and the web UI; refusals change nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from ca.models import Certificate, CertificateProfile
from db import get_session
from kernel.audit import AuditEvent
from tests.ca.pki_helpers import issue_leaf, revoke
from tests.conftest import csrf_token


def _row(app: Flask, serial: str) -> tuple[object, ...]:
    with app.app_context():
        cert = get_session().scalar(select(Certificate).where(Certificate.serial == serial))
        assert cert is not None
        return cert.revoked_at, cert.revocation_reason, cert.invalidity_date


def _audit(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        return list(get_session().scalars(select(AuditEvent).where(AuditEvent.action == action)
                                          .order_by(AuditEvent.id)))


def test_revoke_through_the_api_records_reason_invalidity_date_and_audit(
        app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    body = revoke(api, leaf.serial, "keyCompromise", invalidity_date="2026-11-20T10:00:00+09:00")
    assert body["status"] == "revoked" and body["revocation_reason"] == "keyCompromise"
    assert body["invalidity_date"] == "2026-11-20T01:00:00+00:00"
    events = _audit(app, "certificate.revoked")
    assert events[-1].target == f"certificate:{leaf.serial}" and events[-1].detail["reason"] == "keyCompromise"
    assert events[-1].actor == "admin"


def test_revoking_twice_is_409_and_changes_nothing(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    revoke(api, leaf.serial, "superseded")
    before = _row(app, leaf.serial)
    response = api.post(f"/api/v1/certificates/{leaf.serial}/revoke", json={"reason": "keyCompromise"})
    assert response.status_code == 409 and "既に失効しています" in response.get_json()["message"]
    assert _row(app, leaf.serial) == before
    rejected = _audit(app, "certificate.revocation_rejected")
    assert rejected[-1].target == f"certificate:{leaf.serial}" and rejected[-1].result == "failure"


@pytest.mark.parametrize("serial", ["abcdef0123", "not-hex", "0" * 60])
def test_unknown_serial_is_404_and_audited(app: Flask, api: FlaskClient, serial: str) -> None:
    response = api.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"})
    assert response.status_code == 404
    assert _audit(app, "certificate.revocation_rejected")[-1].detail["error"] == "not_found"
    assert api.post(f"/api/v1/certificates/{serial}/release-hold").status_code == 404


@pytest.mark.parametrize("body", [
    {"reason": "compromised"}, {"reason": None}, {}, {"reason": 1},
    {"reason": "keyCompromise", "invalidity_date": "yesterday"},
    {"reason": "keyCompromise", "invalidity_date": "2026-01-01T00:00:00"},  # no time zone
    {"reason": "keyCompromise", "invalidity_date": "2999-01-01T00:00:00Z"},  # in the future
    {"reason": "certificateHold", "invalidity_date": "2026-01-01T00:00:00Z"},
    {"reason": "removeFromCRL", "invalidity_date": "2026-01-01T00:00:00Z"},
])
def test_bad_input_is_400_and_changes_nothing(app: Flask, api: FlaskClient, tmp_path: Path, body: dict) -> None:
    leaf = issue_leaf(api, tmp_path)
    response = api.post(f"/api/v1/certificates/{leaf.serial}/revoke", json=body)
    assert response.status_code == 400, response.get_json()
    assert _row(app, leaf.serial) == (None, None, None)
    assert api.post(f"/api/v1/certificates/{leaf.serial}/revoke", data="x").status_code == 415  # not JSON


def test_hold_release_and_final_revocation(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    assert revoke(api, leaf.serial, "certificateHold")["status"] == "on_hold"
    again = api.post(f"/api/v1/certificates/{leaf.serial}/revoke", json={"reason": "certificateHold"})
    assert again.status_code == 409 and "既に保留中です" in again.get_json()["message"]
    released = api.post(f"/api/v1/certificates/{leaf.serial}/release-hold")
    assert released.status_code == 200 and released.get_json()["status"] == "valid"
    assert _row(app, leaf.serial) == (None, None, None)
    assert _audit(app, "certificate.hold_released")[-1].target == f"certificate:{leaf.serial}"
    not_held = api.post(f"/api/v1/certificates/{leaf.serial}/release-hold")
    assert not_held.status_code == 409 and "保留中ではありません（失効していません）" in not_held.get_json()["message"]
    # A hold may become final; a final revocation may not be released.
    revoke(api, leaf.serial, "certificateHold")
    assert revoke(api, leaf.serial, "cessationOfOperation")["status"] == "revoked"
    before = _row(app, leaf.serial)
    final = api.post(f"/api/v1/certificates/{leaf.serial}/release-hold")
    assert final.status_code == 409 and "cessationOfOperation) で失効済み" in final.get_json()["message"]
    assert api.post(f"/api/v1/certificates/{leaf.serial}/revoke",
                    json={"reason": "removeFromCRL"}).status_code == 409
    assert _row(app, leaf.serial) == before


def test_remove_from_crl_as_a_reason_releases_the_hold(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    revoke(api, leaf.serial, "certificateHold")
    assert revoke(api, leaf.serial, "removeFromCRL")["status"] == "valid"


def test_root_ca_cannot_be_revoked(app: Flask, api: FlaskClient) -> None:
    with app.app_context():
        root = get_session().scalar(select(Certificate).where(Certificate.profile == CertificateProfile.ROOT_CA))
        assert root is not None
        serial = root.serial
    response = api.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"})
    assert response.status_code == 409 and _row(app, serial) == (None, None, None)


def test_revocation_needs_authentication(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    anonymous = app.test_client()
    assert anonymous.post(f"/api/v1/certificates/{leaf.serial}/revoke",
                          json={"reason": "keyCompromise"}).status_code == 401
    assert anonymous.post(f"/api/v1/certificates/{leaf.serial}/release-hold").status_code == 401
    assert _row(app, leaf.serial) == (None, None, None)


def test_cli_revoke_and_release(app: Flask, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    runner = app.test_cli_runner(env={"LANG": "ja_JP.UTF-8", "LC_ALL": None, "LC_MESSAGES": None})
    held = runner.invoke(args=["cert", "revoke", leaf.serial, "--reason", "certificateHold"])
    assert held.exit_code == 0 and "on_hold" in held.output, held.output
    released = runner.invoke(args=["cert", "release-hold", leaf.serial])
    assert released.exit_code == 0 and "valid" in released.output, released.output
    again = runner.invoke(args=["cert", "release-hold", leaf.serial])
    assert again.exit_code == 2 and "保留中ではありません" in again.output
    revoked = runner.invoke(args=["cert", "revoke", leaf.serial, "--reason", "keyCompromise",
                                  "--invalidity-date", "2026-11-01T00:00:00Z"])
    assert revoked.exit_code == 0 and "revoked (keyCompromise)" in revoked.output, revoked.output
    twice = runner.invoke(args=["cert", "revoke", leaf.serial, "--reason", "keyCompromise"])
    assert twice.exit_code == 2 and "既に失効しています" in twice.output
    unknown = runner.invoke(args=["cert", "revoke", "abc123", "--reason", "keyCompromise"])
    assert unknown.exit_code == 2 and "指定された証明書はありません" in unknown.output
    bad = runner.invoke(args=["cert", "revoke", leaf.serial, "--reason", "lost"])
    assert bad.exit_code == 2 and "失効理由 (reason) は次のいずれか" in bad.output
    assert _audit(app, "certificate.revoked")[-1].actor.startswith("cli:")


def test_web_ui_revokes_only_after_confirmation(app: Flask, admin_client: FlaskClient, api: FlaskClient,
                                                tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    with app.app_context():
        cert_id = get_session().scalar(select(Certificate.id).where(Certificate.serial == leaf.serial))
    detail = admin_client.get(f"/admin/certificates/{cert_id}").get_data(as_text=True)
    assert "失効理由" in detail and 'value="keyCompromise"' in detail
    token = csrf_token(detail)
    confirm = admin_client.post(f"/admin/certificates/{cert_id}/revoke/confirm",
                                data={"csrf_token": token, "reason": "keyCompromise",
                                      "invalidity_date": "2026-11-01T09:30"})
    page = confirm.get_data(as_text=True)
    assert confirm.status_code == 200 and "失効の確認" in page and leaf.serial in page
    assert _row(app, leaf.serial) == (None, None, None)  # nothing happens before confirmation
    done = admin_client.post(f"/admin/certificates/{cert_id}/revoke",
                             data={"csrf_token": csrf_token(page), "reason": "keyCompromise",
                                   "invalidity_date": re.search(r'name="invalidity_date" value="([^"]*)"',
                                                                page).group(1)})  # type: ignore[union-attr]
    assert done.status_code == 302
    after = admin_client.get(f"/admin/certificates/{cert_id}").get_data(as_text=True)
    assert "証明書を失効しました" in after and "keyCompromise" in after and "2026-11-01 09:30:00" in after
    assert _row(app, leaf.serial)[1] == "keyCompromise"
    twice = admin_client.post(f"/admin/certificates/{cert_id}/revoke",
                              data={"csrf_token": token, "reason": "superseded"})
    assert twice.status_code == 409 and "既に失効しています" in twice.get_data(as_text=True)
    no_csrf = admin_client.post(f"/admin/certificates/{cert_id}/revoke/confirm", data={"reason": "superseded"})
    assert no_csrf.status_code == 400


def test_web_ui_releases_a_hold(app: Flask, admin_client: FlaskClient, api: FlaskClient, tmp_path: Path) -> None:
    leaf = issue_leaf(api, tmp_path)
    revoke(api, leaf.serial, "certificateHold")
    with app.app_context():
        cert_id = get_session().scalar(select(Certificate.id).where(Certificate.serial == leaf.serial))
    detail = admin_client.get(f"/admin/certificates/{cert_id}").get_data(as_text=True)
    assert "保留解除" in detail
    confirm = admin_client.post(f"/admin/certificates/{cert_id}/revoke/confirm",
                                data={"csrf_token": csrf_token(detail), "reason": "removeFromCRL"})
    page = confirm.get_data(as_text=True)
    assert "保留解除の確認" in page
    done = admin_client.post(f"/admin/certificates/{cert_id}/revoke",
                             data={"csrf_token": csrf_token(page), "reason": "removeFromCRL"})
    assert done.status_code == 302
    assert _row(app, leaf.serial) == (None, None, None)
