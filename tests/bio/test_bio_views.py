"""Biometric enrolment and login over HTTP with a software authenticator (SQLite and PostgreSQL).

Single-use and expiring server-side challenges, the counter (possible clone),
deletion, self-enrolment codes, the tenancy guard, and no 500 on garbage.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

import db
from bio.models import EnrolmentCode, WebAuthnChallenge, WebAuthnCredential, WebAuthnUser
from kernel.audit import AuditAction
from operators.login.models import OperatorLoginState
from operators.models import Operator, Role
from tests.bio.helpers import (
    OPERATOR_PASSWORD,
    add_operator,
    add_tenant,
    audit_actions,
    audit_events,
    bio_login,
    bio_login_options,
    cheapen_argon2,
    manager_enrols,
    page_csrf,
    post_login,
    register_biometric,
)
from tests.bio.softauthn import SoftAuthenticator, b64url
from tests.helpers import statements_of


@pytest.fixture(autouse=True)
def _cheap_argon2(request: pytest.FixtureRequest) -> None:
    if "app" in request.fixturenames:
        cheapen_argon2(request.getfixturevalue("app"))


@pytest.fixture
def enrolled(app: Flask, admin_client: FlaskClient) -> SoftAuthenticator:
    """Operator BIO01 (biometric mode) with one credential enrolled by the administrator."""
    register_biometric(app, "BIO01")
    authn = SoftAuthenticator()
    response = manager_enrols(admin_client, "BIO01", authn)
    assert response.status_code == 200, response.get_data(as_text=True)
    return authn


def _credentials(app: Flask) -> list[WebAuthnCredential]:
    with app.app_context():
        return list(db.get_session().scalars(select(WebAuthnCredential).order_by(WebAuthnCredential.id)))


def test_manager_enrolment_stores_the_credential_with_a_random_user_handle(
        app: Flask, enrolled: SoftAuthenticator) -> None:
    [cred] = _credentials(app)
    assert cred.credential_id == enrolled.credential_id and cred.nickname == "窓口端末1"
    assert cred.transports == ["internal"] and cred.sign_count == 0
    with app.app_context():
        handle = db.get_session().scalar(select(WebAuthnUser.user_handle))
    assert handle is not None and len(handle) == 32 and b"BIO01" not in handle
    assert audit_events(app, AuditAction.BIO_ENROLLED)[-1].target == "operator:system/BIO01"


def test_second_enrolment_excludes_the_first_credential(app: Flask, admin_client: FlaskClient,
                                                         enrolled: SoftAuthenticator) -> None:
    token = page_csrf(admin_client, "/bio/manage/system/BIO01")
    options = admin_client.post("/bio/manage/system/BIO01/register/options", json={},
                                headers={"X-CSRFToken": token}).get_json()
    assert [c["id"] for c in options["excludeCredentials"]] == [b64url(enrolled.credential_id)]
    assert options["user"]["name"] == "BIO01@system" and options["user"]["id"] != "BIO01"
    second = SoftAuthenticator()
    assert manager_enrols(admin_client, "BIO01", second, nickname="予備").status_code == 200
    assert [c.nickname for c in _credentials(app)] == ["窓口端末1", "予備"]
    # the same authenticator credential cannot be registered twice
    assert manager_enrols(admin_client, "BIO01", second).status_code == 409


def test_biometric_login_reaches_the_top_screen(app: Flask, enrolled: SoftAuthenticator) -> None:
    client = app.test_client()
    response = bio_login(client, "BIO01", enrolled)
    assert response.status_code == 200 and response.get_json()["redirect"].endswith("/top")
    assert "操作者用トップ画面" in client.get("/top").get_data(as_text=True)
    [cred] = _credentials(app)
    assert cred.sign_count == 1 and cred.last_used_at is not None
    assert audit_events(app, AuditAction.LOGIN_SUCCESS)[-1].detail["method"] == "biometric"


def test_replayed_assertion_is_refused(app: Flask, enrolled: SoftAuthenticator) -> None:
    client = app.test_client()
    token, options = bio_login_options(client, "BIO01")
    assertion = enrolled.get(options)
    assert client.post("/bio/login/verify", json={"credential": assertion},
                       headers={"X-CSRFToken": token}).status_code == 200
    thief = app.test_client()
    thief_token, _options = bio_login_options(thief, "BIO01")  # a fresh ceremony, the old assertion
    assert thief.post("/bio/login/verify", json={"credential": assertion},
                      headers={"X-CSRFToken": thief_token}).status_code == 401
    # and the very same ceremony cannot be finished twice
    client2 = app.test_client()
    token2, options2 = bio_login_options(client2, "BIO01")
    again = enrolled.get(options2)
    with client2.session_transaction() as s:
        spent = s["bio_login_challenge"]
    assert client2.post("/bio/login/verify", json={"credential": again},
                        headers={"X-CSRFToken": token2}).status_code == 200
    token3 = page_csrf(client2, "/bio/login")  # the login started a fresh session (new CSRF secret)
    with client2.session_transaction() as s:
        s["bio_login_challenge"] = spent
        s["bio_login_claim"] = ["system", "BIO01"]
    assert client2.post("/bio/login/verify", json={"credential": enrolled.get(options2)},
                        headers={"X-CSRFToken": token3}).status_code == 401


def test_expired_challenge_is_refused(app: Flask, enrolled: SoftAuthenticator) -> None:
    client = app.test_client()
    token, options = bio_login_options(client, "BIO01")
    with app.app_context():
        session = db.get_session()
        session.execute(update(WebAuthnChallenge).values(expires_at=db.utcnow() - timedelta(seconds=1)))
        session.commit()
    response = client.post("/bio/login/verify", json={"credential": enrolled.get(options)},
                           headers={"X-CSRFToken": token})
    assert response.status_code == 401
    assert "expired" in audit_events(app, AuditAction.LOGIN_FAILURE)[-1].detail["note"]


def test_uv_flag_missing_is_refused(app: Flask, enrolled: SoftAuthenticator) -> None:
    response = bio_login(app.test_client(), "BIO01", enrolled, uv=False)
    assert response.status_code == 401
    failure = audit_events(app, AuditAction.LOGIN_FAILURE)[-1]
    assert failure.target == "operator:system/BIO01" and "verification" in failure.detail["note"]


def test_wrong_origin_and_wrong_rp_id_are_refused(app: Flask, enrolled: SoftAuthenticator) -> None:
    assert bio_login(app.test_client(), "BIO01", enrolled, origin="https://phish.example").status_code == 401
    assert bio_login(app.test_client(), "BIO01", enrolled, rp_id="phish.example").status_code == 401
    assert bio_login(app.test_client(), "BIO01", enrolled).status_code == 200


def test_counter_regression_is_refused_audited_and_flags_the_credential(
        app: Flask, enrolled: SoftAuthenticator) -> None:
    assert bio_login(app.test_client(), "BIO01", enrolled, counter=5).status_code == 200
    clone = bio_login(app.test_client(), "BIO01", enrolled, counter=5)
    assert clone.status_code == 401
    [warning] = audit_events(app, AuditAction.BIO_CLONE_SUSPECTED)
    assert warning.detail == {"credential": _credentials(app)[0].id, "stored_count": 5, "presented_count": 5}
    assert _credentials(app)[0].clone_suspected_at is not None
    # the flagged credential stays refused even with a higher counter, until the manager replaces it
    assert bio_login(app.test_client(), "BIO01", enrolled, counter=50).status_code == 401


def test_manager_sees_the_clone_flag(app: Flask, admin_client: FlaskClient, enrolled: SoftAuthenticator) -> None:
    bio_login(app.test_client(), "BIO01", enrolled, counter=3)
    bio_login(app.test_client(), "BIO01", enrolled, counter=2)
    assert "複製の疑い" in admin_client.get("/bio/manage/system/BIO01").get_data(as_text=True)


def test_zero_counters_are_accepted(app: Flask, enrolled: SoftAuthenticator) -> None:
    """Authenticators that do not count (always 0) are allowed: the counter check applies when non-zero."""
    assert bio_login(app.test_client(), "BIO01", enrolled, counter=0).status_code == 200
    assert bio_login(app.test_client(), "BIO01", enrolled, counter=0).status_code == 200


def test_delete_asks_for_confirmation_first(app: Flask, admin_client: FlaskClient,
                                            enrolled: SoftAuthenticator) -> None:
    """削除 on the operator's page leads to a confirmation page (nothing deleted yet) that names the credential
    and the consequence; only its POST deletes."""
    [cred] = _credentials(app)
    confirm_url = f"/bio/manage/system/BIO01/credentials/{cred.id}/delete"
    page = admin_client.get("/bio/manage/system/BIO01").get_data(as_text=True)
    assert f'href="{confirm_url}"' in page and f'action="{confirm_url}"' not in page
    confirm = admin_client.get(confirm_url)
    assert confirm.status_code == 200
    text = confirm.get_data(as_text=True)
    assert "窓口端末1" in text and "BIO01" in text and f'action="{confirm_url}"' in text
    assert "登録し直すまで生体認証でログインできなくなります" in text
    assert [c.id for c in _credentials(app)] == [cred.id] and not audit_events(app, AuditAction.BIO_CREDENTIAL_DELETED)
    english = admin_client.get(f"{confirm_url}?lang=en").get_data(as_text=True)
    assert "cannot log in with biometrics until" in english
    # with a second credential the page says the others stay usable
    assert manager_enrols(admin_client, "BIO01", SoftAuthenticator(), nickname="予備").status_code == 200
    again = admin_client.get(f"{confirm_url}?lang=ja").get_data(as_text=True)
    assert "他の登録済み生体情報（1件）は引き続き使えます" in again
    # the POST without the CSRF token of the page is refused, and deletes nothing
    assert admin_client.post(confirm_url).status_code == 400 and len(_credentials(app)) == 2
    assert admin_client.get("/bio/manage/system/BIO01/credentials/999999/delete").status_code == 404


def test_deleted_credential_is_refused(app: Flask, admin_client: FlaskClient, enrolled: SoftAuthenticator) -> None:
    [cred] = _credentials(app)
    token = page_csrf(admin_client, f"/bio/manage/system/BIO01/credentials/{cred.id}/delete")
    response = admin_client.post(f"/bio/manage/system/BIO01/credentials/{cred.id}/delete",
                                 data={"csrf_token": token})
    assert response.status_code == 303 and _credentials(app) == []
    assert bio_login(app.test_client(), "BIO01", enrolled).status_code == 401
    assert audit_events(app, AuditAction.BIO_CREDENTIAL_DELETED)[-1].detail["credential"] == cred.id


def test_password_mode_operator_gets_decoy_options_and_cannot_log_in(app: Flask) -> None:
    add_operator(app, "PW01")
    client = app.test_client()
    _token, options = bio_login_options(client, "PW01")
    _token, unknown = bio_login_options(app.test_client(), "NOBODY")
    assert set(options) == set(unknown) and len(options["allowCredentials"]) == len(unknown["allowCredentials"]) == 1
    with app.app_context():
        assert db.get_session().scalar(select(WebAuthnChallenge.id)) is None
    assert bio_login(client, "PW01", SoftAuthenticator()).status_code == 401


def test_malformed_login_options_requests_are_a_400_a_well_formed_unknown_operator_a_decoy(app: Flask) -> None:
    client = app.test_client()
    token = page_csrf(client, "/bio/login")
    malformed: list[object] = [[1, 2], "system", {"tenant": "system", "operator_id": "x" * 100_000},
                               {"tenant": "s" * 21, "operator_id": "BIO01"}, {"tenant": "system", "operator_id": 5},
                               {"tenant": ["system"], "operator_id": "BIO01"}]
    for body in malformed:
        response = client.post("/bio/login/options", json=body, headers={"X-CSRFToken": token})
        assert response.status_code == 400 and response.get_json()["message"], str(body)[:80]
        assert "allowCredentials" not in response.get_json()
    too_long = client.post("/bio/login/options", json={"tenant": "system", "operator_id": "x" * 65},
                           headers={"X-CSRFToken": token}).get_json()["message"]
    assert too_long == "operator_id は 64 文字以内で入力してください。"  # refused, never cut to 64
    _token, unknown = bio_login_options(app.test_client(), "x" * 64)
    assert len(unknown["allowCredentials"]) == 1  # well formed but unknown: the decoy, as before


def test_biometric_failures_count_towards_the_lock(app: Flask, enrolled: SoftAuthenticator) -> None:
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        assert bio_login(app.test_client(), "BIO01", enrolled, uv=False).status_code == 401
    assert bio_login(app.test_client(), "BIO01", enrolled).status_code == 401
    assert audit_events(app, AuditAction.LOGIN_LOCKED)


@pytest.mark.parametrize("body", [None, "garbage", {"credential": "x"}, {"credential": {"id": 1}},
                                  {"credential": {"id": "AAAA", "rawId": "AAAA", "response": {}}}, []])
def test_garbage_never_causes_a_500(app: Flask, enrolled: SoftAuthenticator, admin_client: FlaskClient,
                                    body: object) -> None:
    client = app.test_client()
    token, _options = bio_login_options(client, "BIO01")
    kwargs = {"data": body, "content_type": "application/json"} if isinstance(body, str) else {"json": body}
    assert client.post("/bio/login/verify", headers={"X-CSRFToken": token}, **kwargs).status_code in (400, 401)
    admin_token = page_csrf(admin_client, "/bio/manage/system/BIO01")
    admin_client.post("/bio/manage/system/BIO01/register/options", json={}, headers={"X-CSRFToken": admin_token})
    response = admin_client.post("/bio/manage/system/BIO01/register/verify", headers={"X-CSRFToken": admin_token},
                                 **kwargs)
    assert response.status_code == 400


def test_json_endpoints_need_the_csrf_token(app: Flask, enrolled: SoftAuthenticator) -> None:
    client = app.test_client()
    assert client.post("/bio/login/options", json={"tenant": "system", "operator_id": "BIO01"}).status_code == 400


def test_enrolment_json_needs_recent_authentication(app: Flask, admin_client: FlaskClient) -> None:
    import time

    register_biometric(app, "BIO02")
    token = page_csrf(admin_client, "/bio/manage/system/BIO02")
    with admin_client.session_transaction() as s:
        s["auth_at"] = int(time.time()) - app.config["REAUTH_MINUTES"] * 60 - 5
    response = admin_client.post("/bio/manage/system/BIO02/register/options", json={},
                                 headers={"X-CSRFToken": token})
    assert response.status_code == 403
    page = admin_client.get("/bio/manage/system/BIO02")
    assert page.status_code == 302 and "/reauth" in page.headers["Location"]


def test_tenant_manager_manages_only_their_own_tenant(app: Flask) -> None:
    add_tenant(app, "nakatokyo", "中東京市")
    add_tenant(app, "minamiedo", "南江戸市")
    add_operator(app, "MGR01", tenant="nakatokyo", role=Role.TENANT_MANAGER)
    register_biometric(app, "OPN01", tenant="nakatokyo")
    register_biometric(app, "OPM01", tenant="minamiedo")
    manager = app.test_client()
    assert post_login(manager, operator_id="MGR01", password=OPERATOR_PASSWORD, tenant="nakatokyo").status_code == 302
    listing = manager.get("/bio/manage").get_data(as_text=True)
    assert "OPN01" in listing and "OPM01" not in listing
    assert manager.get("/bio/manage?tenant=minamiedo").status_code == 404
    assert manager.get("/bio/manage/minamiedo/OPM01").status_code == 404
    assert manager.get("/bio/manage/minamiedo/OPM01/credentials/1/delete").status_code == 404
    token = page_csrf(manager, "/bio/manage/nakatokyo/OPN01")
    for path in ("/bio/manage/minamiedo/OPM01/register/options", "/bio/manage/minamiedo/OPM01/register/verify",
                 "/bio/manage/minamiedo/OPM01/enrolment-code", "/bio/manage/minamiedo/OPM01/credentials/1/delete"):
        assert manager.post(path, json={}, headers={"X-CSRFToken": token}).status_code == 404, path
    assert manager_enrols(manager, "OPN01", SoftAuthenticator(), tenant="nakatokyo").status_code == 200
    plain = app.test_client()
    add_operator(app, "OPN02", tenant="nakatokyo")
    post_login(plain, operator_id="OPN02", password=OPERATOR_PASSWORD, tenant="nakatokyo")
    assert plain.get("/bio/manage").status_code == 403


def _issue_code(admin_client: FlaskClient, operator_id: str) -> str:
    token = page_csrf(admin_client, f"/bio/manage/system/{operator_id}")
    page = admin_client.post(f"/bio/manage/system/{operator_id}/enrolment-code", data={"csrf_token": token})
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    match = re.search(r"<code>([A-Z0-9-]+)</code>", page.get_data(as_text=True))
    assert match
    return match.group(1)


def _redeem(client: FlaskClient, operator_id: str, code: str) -> int:
    token = page_csrf(client, "/bio/enrol")
    return client.post("/bio/enrol", data={"csrf_token": token, "tenant": "system", "operator_id": operator_id,
                                           "code": code}).status_code


def test_self_enrolment_with_a_single_use_code(app: Flask, admin_client: FlaskClient) -> None:
    register_biometric(app, "BIO03")
    code = _issue_code(admin_client, "BIO03")
    with app.app_context():
        stored = db.get_session().scalar(select(EnrolmentCode))
    assert stored is not None and code not in stored.code_sha256
    terminal = app.test_client()
    assert _redeem(terminal, "BIO03", code) == 200
    token = page_csrf(terminal, "/bio/enrol")
    options = terminal.post("/bio/enrol/options", json={}, headers={"X-CSRFToken": token}).get_json()
    authn = SoftAuthenticator()
    done = terminal.post("/bio/enrol/verify", json={"credential": authn.create(options), "nickname": "自席"},
                         headers={"X-CSRFToken": token})
    assert done.status_code == 200
    assert terminal.post("/bio/enrol/options", json={}, headers={"X-CSRFToken": token}).status_code == 401
    assert _redeem(app.test_client(), "BIO03", code) == 400  # single use
    assert bio_login(app.test_client(), "BIO03", authn).status_code == 200
    actions = [e.action for e in audit_events(app, AuditAction.BIO_ENROLMENT_CODE_REDEEMED)]
    assert len(actions) == 2


def test_expired_or_foreign_enrolment_code_is_refused(app: Flask, admin_client: FlaskClient) -> None:
    register_biometric(app, "BIO04")
    register_biometric(app, "BIO05")
    code = _issue_code(admin_client, "BIO04")
    assert _redeem(app.test_client(), "BIO05", code) == 400  # issued for someone else
    with app.app_context():
        session = db.get_session()
        session.execute(update(EnrolmentCode).values(expires_at=db.utcnow() - timedelta(seconds=1)))
        session.commit()
    assert _redeem(app.test_client(), "BIO04", code) == 400
    assert app.test_client().post("/bio/enrol/options", json={}).status_code == 400  # no CSRF token


def test_biometric_refusals_are_japanese_with_an_english_translation(app: Flask, admin_client: FlaskClient,
                                                            enrolled: SoftAuthenticator) -> None:
    again = manager_enrols(admin_client, "BIO01", enrolled)  # the same authenticator a second time
    assert again.status_code == 409 and again.get_json()["message"] == "この認証器の生体情報は既に登録されています。"
    # The operator commands speak English: the message is the translation of the Japanese one.
    cli = app.test_cli_runner().invoke(args=["operator", "change-password", "BIO01"], input="x\ny\ny\n")
    assert cli.exit_code == 2 and "This operator logs in with biometrics and has no password." in cli.output


def test_biometric_operator_reauthenticates_with_the_authenticator(app: Flask, enrolled: SoftAuthenticator) -> None:
    import time

    client = app.test_client()
    assert bio_login(client, "BIO01", enrolled).status_code == 200
    with client.session_transaction() as s:
        s["auth_at"] = int(time.time()) - 3600
    page = client.get("/reauth?next=/top").get_data(as_text=True)
    assert "reauth-bio" in page
    token = page_csrf(client, "/reauth")
    options = client.post("/bio/reauth/options", json={}, headers={"X-CSRFToken": token}).get_json()
    response = client.post("/bio/reauth/verify?next=/top", json={"credential": enrolled.get(options)},
                           headers={"X-CSRFToken": token})
    assert response.status_code == 200 and response.get_json()["redirect"] == "/top"
    with client.session_transaction() as s:
        assert int(time.time()) - s["auth_at"] < 60
    assert audit_events(app, AuditAction.REAUTHENTICATED)[-1].detail["method"] == "reauth_biometric"


def test_a_redeemed_code_is_good_for_a_limited_time_only(app: Flask, admin_client: FlaskClient) -> None:
    register_biometric(app, "BIO06")
    terminal = app.test_client()
    assert _redeem(terminal, "BIO06", _issue_code(admin_client, "BIO06")) == 200
    with terminal.session_transaction() as s:
        pk, redeemed_at = s["bio_self_enrol_operator"]
        s["bio_self_enrol_operator"] = [pk, redeemed_at - app.config["ENROLMENT_CODE_MINUTES"] * 60 - 5]
    token = page_csrf(terminal, "/bio/enrol")
    assert terminal.post("/bio/enrol/options", json={}, headers={"X-CSRFToken": token}).status_code == 401


def test_stale_challenges_are_purged(app: Flask, enrolled: SoftAuthenticator) -> None:
    bio_login_options(app.test_client(), "BIO01")
    with app.app_context():
        session = db.get_session()
        session.execute(update(WebAuthnChallenge).values(expires_at=db.utcnow() - timedelta(days=1)))
        session.commit()
    bio_login_options(app.test_client(), "BIO01")
    with app.app_context():
        assert len(list(db.get_session().scalars(select(WebAuthnChallenge.id)))) == 1


def test_nul_bytes_are_a_refusal_not_a_500(app: Flask, admin_client: FlaskClient,
                                           enrolled: SoftAuthenticator) -> None:
    client = app.test_client()
    token = page_csrf(client, "/bio/login")
    response = client.post("/bio/login/options", json={"tenant": "sys\x00tem", "operator_id": "BIO\x0001"},
                           headers={"X-CSRFToken": token})
    # Refused where the input enters, whoever the operator is: the answer tells nothing about who exists.
    assert response.status_code == 400 and response.get_json()["message"]
    enrol_token = page_csrf(client, "/bio/enrol")
    assert client.post("/bio/enrol", data={"csrf_token": enrol_token, "tenant": "system",
                                           "operator_id": "BIO\x0001", "code": "AB\x00CD"}).status_code == 400
    before = len(_credentials(app))
    second = SoftAuthenticator()
    assert manager_enrols(admin_client, "BIO01", second, nickname="窓口\x00端末").status_code == 400
    assert manager_enrols(admin_client, "BIO01", second, nickname="窓" * 101).status_code == 400  # never cut
    assert len(_credentials(app)) == before  # refused, not stored with the NUL silently removed


# --- first login of a registered biometric operator ---------------------------------------------

def test_registered_biometric_operator_is_not_held_by_the_one_time_password(
        app: Flask, enrolled: SoftAuthenticator) -> None:
    """Registration gives every operator a one-time password; in biometric mode it is no login credential."""
    client = app.test_client()
    response = bio_login(client, "BIO01", enrolled)
    assert response.status_code == 200 and response.get_json()["redirect"].endswith("/top")
    top = client.get("/top")
    assert top.status_code == 200 and "操作者用トップ画面" in top.get_data(as_text=True)
    assert client.get("/password").status_code == 404  # no password to change in biometric mode


def test_password_login_of_a_biometric_operator_is_refused_with_a_clear_message(app: Flask) -> None:
    registered = register_biometric(app, "BIO07")
    response = post_login(app.test_client(), operator_id="BIO07", password=registered.password)
    assert response.status_code == 401
    assert "生体認証でログインします" in response.get_data(as_text=True)
    assert audit_events(app, AuditAction.LOGIN_FAILURE)[-1].detail["reason"] == "wrong_method"
    assert not audit_events(app, AuditAction.LOGIN_SUCCESS)[1:]  # only the administrator's own logins
    wrong = post_login(app.test_client(), operator_id="BIO07", password="Not-The-Password-1")
    assert wrong.status_code == 401 and "生体認証でログインします" not in wrong.get_data(as_text=True)


# --- the client certificate is part of the login -------------------------------------------------

def test_login_without_the_client_certificate_is_a_counted_failure_not_a_success(
        app: Flask, enrolled: SoftAuthenticator) -> None:
    app.config["BIOMETRIC_CLIENT_CERT_REQUIRED"] = True  # the test client presents no TLS certificate
    successes = len(audit_events(app, AuditAction.LOGIN_SUCCESS))
    response = bio_login(app.test_client(), "BIO01", enrolled)
    assert response.status_code == 403
    assert "オペレータ証明書" in response.get_json()["message"]
    assert len(audit_events(app, AuditAction.LOGIN_SUCCESS)) == successes
    failure = audit_events(app, AuditAction.LOGIN_FAILURE)[-1]
    assert failure.detail["reason"] == "client_certificate" and failure.detail["consecutive_failures"] == 1
    for _ in range(app.config["LOGIN_MAX_FAILURES"] - 1):
        bio_login(app.test_client(), "BIO01", enrolled)
    assert audit_events(app, AuditAction.LOGIN_LOCKED)
    assert len(audit_events(app, AuditAction.LOGIN_SUCCESS)) == successes
    app.config["BIOMETRIC_CLIENT_CERT_REQUIRED"] = False
    assert bio_login(app.test_client(), "BIO01", enrolled).status_code == 401  # locked now


# --- 操作者失効 is final --------------------------------------------------------------------------

def _revoke(api: FlaskClient, operator_id: str) -> None:
    response = api.post(f"/api/v1/tenants/system/operators/{operator_id}/revoke")
    assert response.status_code == 200, response.get_json()


def test_revoked_operator_gets_no_new_biometrics(app: Flask, admin_client: FlaskClient, api: FlaskClient) -> None:
    register_biometric(app, "BIO08")
    _revoke(api, "BIO08")
    base = "/bio/manage/system/BIO08"
    token = page_csrf(admin_client, base)
    options = admin_client.post(f"{base}/register/options", json={}, headers={"X-CSRFToken": token})
    assert options.status_code == 409 and "失効" in options.get_json()["message"]
    [refused] = audit_events(app, AuditAction.BIO_ENROLMENT_FAILED)
    assert refused.result == "failure" and refused.target == "operator:system/BIO08"
    assert not audit_events(app, AuditAction.BIO_ENROLLED)
    assert not _credentials(app)


def test_enrolment_started_before_the_revocation_is_refused_at_the_end(
        app: Flask, admin_client: FlaskClient, api: FlaskClient) -> None:
    register_biometric(app, "BIO09")
    base = "/bio/manage/system/BIO09"
    token = page_csrf(admin_client, base)
    options = admin_client.post(f"{base}/register/options", json={}, headers={"X-CSRFToken": token})
    assert options.status_code == 200
    _revoke(api, "BIO09")
    done = admin_client.post(f"{base}/register/verify", json={"credential": SoftAuthenticator().create(
        options.get_json()), "nickname": "窓口"}, headers={"X-CSRFToken": token})
    assert done.status_code == 409 and "失効" in done.get_json()["message"]
    assert not audit_events(app, AuditAction.BIO_ENROLLED) and not _credentials(app)
    assert audit_events(app, AuditAction.BIO_ENROLMENT_FAILED)[-1].result == "failure"


def test_revoked_operator_gets_no_enrolment_code(app: Flask, admin_client: FlaskClient, api: FlaskClient) -> None:
    register_biometric(app, "BIO10")
    token = page_csrf(admin_client, "/bio/manage/system/BIO10")
    _revoke(api, "BIO10")
    page = admin_client.post("/bio/manage/system/BIO10/enrolment-code", data={"csrf_token": token})
    assert page.status_code == 409
    html = page.get_data(as_text=True)
    assert "失効" in html and "<code>" not in html
    with app.app_context():
        assert db.get_session().scalar(select(EnrolmentCode.id)) is None
    [refused] = audit_events(app, AuditAction.BIO_ENROLMENT_CODE_ISSUED)
    assert refused.result == "failure" and "失効" in refused.detail["reason"]


def test_code_issued_before_the_revocation_cannot_be_redeemed(
        app: Flask, admin_client: FlaskClient, api: FlaskClient) -> None:
    register_biometric(app, "BIO11")
    code = _issue_code(admin_client, "BIO11")
    _revoke(api, "BIO11")
    assert _redeem(app.test_client(), "BIO11", code) == 400
    assert audit_events(app, AuditAction.BIO_ENROLMENT_CODE_REDEEMED)[-1].result == "failure"


# --- statements per verification (issue 13) -------------------------------------------------------

def _verification_statements(app: Flask, authn: SoftAuthenticator) -> tuple[Any, list[str], int]:
    """A fresh browser's login up to the verification; the verification's response, SQL and commits."""
    client = app.test_client()
    token, options = bio_login_options(client, "BIO01")
    credential = authn.get(options)
    return statements_of(app, lambda: client.post("/bio/login/verify", json={"credential": credential},
                                                  headers={"X-CSRFToken": token}))


def test_first_biometric_login_reads_the_absent_login_state_once(app: Flask, enrolled: SoftAuthenticator) -> None:
    """An operator's first login has no login-state row yet: it is read once (the lock check is told it is
    absent, the success writes it), not three times (issue 13); the row then records the login."""
    response, statements, commits = _verification_statements(app, enrolled)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len([s for s in statements if s.startswith("SELECT") and " FROM operator_login_state" in s]) == 1, \
        statements
    assert len([s for s in statements if s.startswith("INSERT INTO operator_login_state")]) == 1, statements
    assert commits == 1
    with app.app_context():
        state = db.get_session().scalar(select(OperatorLoginState).join(
            Operator, Operator.id == OperatorLoginState.operator_pk).where(Operator.operator_id == "BIO01"))
        assert state is not None and state.failed_count == 0 and state.last_login_method == "biometric"
    assert audit_actions(app)[-1] == AuditAction.LOGIN_SUCCESS


def test_one_biometric_verification_reads_each_row_once_and_commits_once(
        app: Flask, enrolled: SoftAuthenticator) -> None:
    """A regression guard on the verification request's SQL, not a timing: the challenge is spent and read
    back in one statement, the operator comes with its tenant in one query, the login state is read once,
    and the whole login (counter, login state, audit entry) is one commit."""
    assert bio_login(app.test_client(), "BIO01", enrolled).status_code == 200  # the login state row exists now
    response, statements, commits = _verification_statements(app, enrolled)
    assert response.status_code == 200, response.get_data(as_text=True)
    [cred] = _credentials(app)
    assert cred.sign_count == 2  # the counter was checked and kept
    reads = [s for s in statements if s.upper().startswith("SELECT") and "instance_setting" not in s]
    assert not [s for s in reads if s.split(" FROM ")[1].startswith("webauthn_challenge")], reads
    assert len([s for s in reads if " FROM operator_login_state" in s]) == 1, reads
    assert not [s for s in reads if " FROM tenant WHERE" in s], reads  # the tenant came with the operator
    # settings probe, operator+tenant, challenge spent (UPDATE ... RETURNING), throttle, login state,
    # credential, counter, login state update, the audit entry (head, entry, head): 11 (16 before issue 13).
    assert len(statements) <= 11, statements
    assert commits == 1
