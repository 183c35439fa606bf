"""ID+password login: same answer for unknown operators, lockout, unlock, throttle, sessions, re-auth."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

import db
from kernel.audit import AuditAction, verify_chain
from operators.login.models import OperatorLoginState
from operators.models import Operator, Role
from tests.bio.helpers import (
    CHEAP_ARGON2,
    OPERATOR_PASSWORD,
    add_operator,
    audit_actions,
    audit_events,
    bio_login,
    cheapen_argon2,
    manager_enrols,
    post_login,
    register_biometric,
)
from tests.bio.softauthn import SoftAuthenticator
from tests.conftest import ADMIN_PASSWORD, csrf_token, initialise, make_app
from tests.operators.conftest import World, register

FAILED_TEXT = "現在ログインできません"


@pytest.fixture(autouse=True)
def _cheap_argon2(request: pytest.FixtureRequest) -> None:
    if "app" in request.fixturenames:
        cheapen_argon2(request.getfixturevalue("app"))


def _state(app: Flask, operator_pk: int) -> OperatorLoginState | None:
    with app.app_context():
        return db.get_session().get(OperatorLoginState, operator_pk)


def test_password_login_lands_on_the_operator_top_screen(app: Flask) -> None:
    add_operator(app, "OP0601")
    client = app.test_client()
    response = post_login(client, operator_id="OP0601", password=OPERATOR_PASSWORD)
    assert response.status_code == 302 and response.headers["Location"].endswith("/top")
    page = client.get("/top").get_data(as_text=True)
    assert "操作者用トップ画面" in page and "OP0601" in page
    event = audit_events(app, AuditAction.LOGIN_SUCCESS)[-1]
    assert event.detail["method"] == "password" and event.actor == "OP0601"


def test_login_page_has_the_seed_buttons_and_csrf(app: Flask) -> None:
    page = app.test_client().get("/login").get_data(as_text=True)
    for label in ("ログイン", "訂正", "終了", "市町村・任意団体", "オペレータID", "パスワード"):
        assert label in page
    assert 'name="csrf_token"' in page
    response = app.test_client().post("/login", data={"tenant": "system", "operator_id": "admin",
                                                     "password": "x"})
    assert response.status_code == 400  # no CSRF token


def test_unknown_operator_and_wrong_password_get_the_same_answer(app: Flask) -> None:
    add_operator(app, "OP0602")
    client = app.test_client()
    wrong = post_login(client, operator_id="OP0602", password="not-the-password")
    unknown = post_login(client, operator_id="NOBODY", password="not-the-password")
    wrong_tenant = post_login(client, operator_id="OP0602", password=OPERATOR_PASSWORD, tenant="elsewhere")
    assert wrong.status_code == unknown.status_code == wrong_tenant.status_code == 401
    bodies = {r.get_data(as_text=True).replace("OP0602", "X").replace("NOBODY", "X")
              .split('name="csrf_token" value="')[0] for r in (wrong, unknown)}
    assert len(bodies) == 1 and FAILED_TEXT in bodies.pop()
    failures = audit_events(app, AuditAction.LOGIN_FAILURE)
    assert [e.detail["reason"] for e in failures] == ["bad_credentials", "unknown_operator", "unknown_operator"]


def test_unknown_operator_costs_a_password_verification_too(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    import operators.login.service as service

    calls: list[str | None] = []
    real = service.verify_password

    def counting(stored: str | None, password: str) -> bool:
        calls.append(stored)
        return real(stored, password)

    monkeypatch.setattr(service, "verify_password", counting)
    post_login(app.test_client(), operator_id="NOBODY", password="whatever-password")
    assert calls == [None]  # verify_password burns the dummy hash for a missing operator


def test_operator_is_locked_after_max_failures_even_with_the_right_password(app: Flask) -> None:
    pk = add_operator(app, "OP0603")
    client = app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        assert post_login(client, operator_id="OP0603", password="wrong-password").status_code == 401
    response = post_login(client, operator_id="OP0603", password=OPERATOR_PASSWORD)
    assert response.status_code == 401 and FAILED_TEXT in response.get_data(as_text=True)
    state = _state(app, pk)
    assert state is not None and state.locked_until is not None
    locks = audit_events(app, AuditAction.LOGIN_LOCKED)
    assert len(locks) == 1 and locks[0].target == "operator:system/OP0603"
    assert audit_events(app, AuditAction.LOGIN_FAILURE)[-1].detail["reason"] == "locked"


def test_lock_ends_when_its_time_has_passed(app: Flask) -> None:
    pk = add_operator(app, "OP0604")
    client = app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        post_login(client, operator_id="OP0604", password="wrong-password")
    with app.app_context():
        session = db.get_session()
        state = session.get(OperatorLoginState, pk)
        assert state is not None and state.locked_until is not None
        state.locked_until = state.locked_until - timedelta(minutes=app.config["LOGIN_LOCK_MINUTES"] + 1)
        session.commit()
    assert post_login(client, operator_id="OP0604", password=OPERATOR_PASSWORD).status_code == 302
    state = _state(app, pk)
    assert state is not None and state.failed_count == 0 and state.locked_until is None


def test_a_success_resets_the_consecutive_failure_count(app: Flask) -> None:
    add_operator(app, "OP0605")
    client = app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"] - 1):
        post_login(client, operator_id="OP0605", password="wrong-password")
    assert post_login(app.test_client(), operator_id="OP0605", password=OPERATOR_PASSWORD).status_code == 302
    for _ in range(app.config["LOGIN_MAX_FAILURES"] - 1):
        post_login(client, operator_id="OP0605", password="wrong-password")
    assert post_login(app.test_client(), operator_id="OP0605", password=OPERATOR_PASSWORD).status_code == 302


def _lock(app: Flask, operator_id: str) -> None:
    client = app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        post_login(client, operator_id=operator_id, password="wrong-password")


def test_administrator_unlocks_in_the_web_ui(app: Flask, admin_client: FlaskClient) -> None:
    add_operator(app, "OP0606")
    _lock(app, "OP0606")
    page = admin_client.get("/admin/locked-operators").get_data(as_text=True)
    assert "<td>OP0606</td>" in page
    response = admin_client.post("/admin/locked-operators/unlock", data={
        "csrf_token": csrf_token(page), "tenant": "system", "operator_id": "OP0606"})
    assert response.status_code == 303
    after = admin_client.get("/admin/locked-operators").get_data(as_text=True)
    assert "のロックを解除しました" in after and "<td>OP0606</td>" not in after
    assert post_login(app.test_client(), operator_id="OP0606", password=OPERATOR_PASSWORD).status_code == 302
    unlocked = audit_events(app, AuditAction.LOGIN_UNLOCKED)
    assert unlocked[-1].actor == "admin" and unlocked[-1].detail["was_locked"] is True


def test_plain_operator_cannot_unlock(app: Flask) -> None:
    add_operator(app, "OP0607")
    client = app.test_client()
    post_login(client, operator_id="OP0607", password=OPERATOR_PASSWORD)
    assert client.get("/admin/locked-operators").status_code == 403


def test_administrator_unlocks_through_the_api(app: Flask, api: FlaskClient) -> None:
    add_operator(app, "OP0608")
    _lock(app, "OP0608")
    response = api.post("/api/v1/operators/system/OP0608/unlock")
    assert response.status_code == 200 and response.get_json()["was_locked"] is True
    assert api.post("/api/v1/operators/system/NOBODY/unlock").status_code == 404
    assert post_login(app.test_client(), operator_id="OP0608", password=OPERATOR_PASSWORD).status_code == 302


def test_unlock_command(app: Flask) -> None:
    add_operator(app, "OP0609")
    _lock(app, "OP0609")
    result = app.test_cli_runner().invoke(args=["login", "unlock", "system", "OP0609"])
    assert result.exit_code == 0 and "unlocked" in result.output
    assert post_login(app.test_client(), operator_id="OP0609", password=OPERATOR_PASSWORD).status_code == 302
    missing = app.test_cli_runner().invoke(args=["login", "unlock", "system", "NOBODY"])
    assert missing.exit_code != 0


def test_lock_ends_the_operators_open_sessions(app: Flask) -> None:
    add_operator(app, "OP0610")
    logged_in = app.test_client()
    post_login(logged_in, operator_id="OP0610", password=OPERATOR_PASSWORD)
    assert logged_in.get("/top").status_code == 200
    _lock(app, "OP0610")
    response = logged_in.get("/top")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_api_basic_failures_count_towards_the_lock(app: Flask) -> None:
    add_operator(app, "OP0611")
    client = app.test_client()
    bad = base64.b64encode(b"OP0611@system:wrong-password").decode()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        assert client.get("/api/v1/certificates", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    assert post_login(client, operator_id="OP0611", password=OPERATOR_PASSWORD).status_code == 401


@pytest.fixture
def throttled_app(tmp_path: Path, database_url: str) -> Iterator[Flask]:
    application = make_app(tmp_path / "instance", database_url, LOGIN_THROTTLE_FAILURES=3, **CHEAP_ARGON2)
    application.config["BOOTSTRAP_PASSWORD"] = initialise(application)
    yield application
    application.extensions["opauth.engine"].dispose()


def test_source_address_is_throttled_across_operator_ids(throttled_app: Flask) -> None:
    add_operator(throttled_app, "OP0612")
    client = throttled_app.test_client()
    for name in ("A1", "A2", "A3"):
        assert post_login(client, operator_id=name, password="guess-password").status_code == 401
    response = post_login(client, operator_id="OP0612", password=OPERATOR_PASSWORD)
    assert response.status_code == 429
    assert AuditAction.LOGIN_THROTTLED in audit_actions(throttled_app)
    other = throttled_app.test_client()
    other.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert post_login(other, operator_id="OP0612", password=OPERATOR_PASSWORD).status_code == 302


def test_biometric_mode_operator_cannot_use_a_password(app: Flask) -> None:
    registered = register_biometric(app, "OP0613")
    response = post_login(app.test_client(), operator_id="OP0613", password=registered.password)
    assert response.status_code == 401
    assert audit_events(app, AuditAction.LOGIN_FAILURE)[-1].detail["reason"] == "wrong_method"
    assert _state(app, registered.pk).failed_count == 1  # type: ignore[union-attr]


def test_idle_timeout_ends_the_session(app: Flask) -> None:
    add_operator(app, "OP0614")
    client = app.test_client()
    post_login(client, operator_id="OP0614", password=OPERATOR_PASSWORD)
    with client.session_transaction() as s:
        s["seen_at"] = int(time.time()) - app.config["SESSION_IDLE_MINUTES"] * 60 - 5
    response = client.get("/top")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/top").status_code == 302
    assert audit_events(app, AuditAction.SESSION_EXPIRED)[-1].detail["reason"] == "idle"


def test_absolute_timeout_ends_an_active_session(app: Flask) -> None:
    add_operator(app, "OP0615")
    client = app.test_client()
    post_login(client, operator_id="OP0615", password=OPERATOR_PASSWORD)
    with client.session_transaction() as s:
        s["auth_at"] = int(time.time()) - app.config["SESSION_ABSOLUTE_MINUTES"] * 60 - 5
    assert client.get("/top").status_code == 302
    assert audit_events(app, AuditAction.SESSION_EXPIRED)[-1].detail["reason"] == "absolute"


def test_session_cookie_flags(app: Flask) -> None:
    secure = make_app(Path(app.instance_path), app.config["DATABASE_URL"], SESSION_COOKIE_SECURE=True)
    assert secure.config["SESSION_COOKIE_SECURE"] is True
    assert secure.config["SESSION_COOKIE_HTTPONLY"] is True and secure.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    secure.extensions["opauth.engine"].dispose()


def test_certificate_issuance_requires_recent_authentication(app: Flask, admin_client: FlaskClient) -> None:
    assert admin_client.get("/admin/business-server-certificates/new").status_code == 200
    with admin_client.session_transaction() as s:
        s["auth_at"] = int(time.time()) - app.config["REAUTH_MINUTES"] * 60 - 5
    response = admin_client.get("/admin/business-server-certificates/new")
    assert response.status_code == 302 and "/reauth" in response.headers["Location"]
    page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    wrong = admin_client.post("/reauth", data={"csrf_token": csrf_token(page), "password": "wrong-password",
                                               "next": "/admin/business-server-certificates/new"})
    assert wrong.status_code == 401
    ok = admin_client.post("/reauth", data={"csrf_token": csrf_token(page), "password": ADMIN_PASSWORD,
                                            "next": "/admin/business-server-certificates/new"})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/admin/business-server-certificates/new")
    assert admin_client.get("/admin/business-server-certificates/new").status_code == 200
    assert AuditAction.REAUTHENTICATED in audit_actions(app)


def test_reauth_refuses_offsite_next(app: Flask, admin_client: FlaskClient) -> None:
    page = admin_client.get("/reauth").get_data(as_text=True)
    ok = admin_client.post("/reauth", data={"csrf_token": csrf_token(page), "password": ADMIN_PASSWORD,
                                            "next": "https://evil.example/"})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/top")


def test_audit_chain_stays_intact_through_login_traffic(app: Flask) -> None:
    add_operator(app, "OP0616")
    _lock(app, "OP0616")
    post_login(app.test_client(), operator_id="NOBODY", password="x" * 12)
    with app.app_context():
        assert verify_chain(db.get_session()).ok


def test_revoked_operator_is_logged_out_and_cannot_log_in(app: Flask) -> None:
    pk = add_operator(app, "OP0617")
    client = app.test_client()
    post_login(client, operator_id="OP0617", password=OPERATOR_PASSWORD)
    with app.app_context():
        session = db.get_session()
        session.execute(update(Operator).where(Operator.id == pk).values(revoked_at=db.utcnow()))
        session.commit()
    assert client.get("/top").status_code == 302
    assert post_login(app.test_client(), operator_id="OP0617", password=OPERATOR_PASSWORD).status_code == 401


def test_top_screen_shows_admin_menus_by_role(app: Flask, admin_client: FlaskClient) -> None:
    admin_page = admin_client.get("/top").get_data(as_text=True)
    for label in ("オペレータ証明書", "オペレータ管理", "生体情報管理", "業務サーバ証明書", "SSL通信証明書",
                  "運用環境設定"):
        assert label in admin_page
    for href in ("/bio/manage", "/admin/business-server-certificates/new", "/admin/locked-operators"):
        assert f'href="{href}"' in admin_page
    add_operator(app, "OP0618")
    client = app.test_client()
    post_login(client, operator_id="OP0618", password=OPERATOR_PASSWORD)
    page = client.get("/top").get_data(as_text=True)
    assert 'id="admin-menu"' not in page and "業務サーバ証明書" not in page
    add_operator(app, "MGR01", role=Role.TENANT_MANAGER)
    manager = app.test_client()
    post_login(manager, operator_id="MGR01", password=OPERATOR_PASSWORD)
    page = manager.get("/top").get_data(as_text=True)
    assert "生体情報管理" in page and "オペレータ管理" in page and "業務サーバ証明書" not in page


def test_state_rows_are_per_operator(app: Flask) -> None:
    a = add_operator(app, "OP0619")
    b = add_operator(app, "OP0620")
    post_login(app.test_client(), operator_id="OP0619", password="wrong-password")
    with app.app_context():
        rows = list(db.get_session().scalars(select(OperatorLoginState)))
    assert {r.operator_pk for r in rows} == {a} and b not in {r.operator_pk for r in rows}


def test_tenant_manager_cannot_unlock(app: Flask) -> None:
    add_operator(app, "OP0621")
    add_operator(app, "MGR02", role=Role.TENANT_MANAGER)
    _lock(app, "OP0621")
    manager = app.test_client()
    post_login(manager, operator_id="MGR02", password=OPERATOR_PASSWORD)
    assert manager.get("/admin/locked-operators").status_code == 403
    token = csrf_token(manager.get("/top").get_data(as_text=True))
    assert manager.post("/admin/locked-operators/unlock", data={"csrf_token": token, "tenant": "system",
                                                                "operator_id": "OP0621"}).status_code == 403
    basic = base64.b64encode(f"MGR02@system:{OPERATOR_PASSWORD}".encode()).decode()
    assert app.test_client().post("/api/v1/operators/system/OP0621/unlock",
                                  headers={"Authorization": f"Basic {basic}"}).status_code == 403
    assert post_login(app.test_client(), operator_id="OP0621", password=OPERATOR_PASSWORD).status_code == 401


def test_nul_bytes_and_huge_fields_are_a_refusal_not_a_500(app: Flask) -> None:
    client = app.test_client()
    # Control characters are refused where form input enters (webinput), before any login rule runs.
    for operator_id, tenant in (("a\x00b", "system"), ("admin", "sys\x00tem")):
        assert post_login(client, operator_id=operator_id, password="p\x00w" * 10, tenant=tenant).status_code == 400
    assert post_login(client, operator_id="x" * 5000, password="pw" * 10, tenant="y" * 5000).status_code == 401
    basic = base64.b64encode(b"ad\x00min@system:pass\x00word").decode()
    assert client.get("/api/v1/certificates", headers={"Authorization": f"Basic {basic}"}).status_code == 401
    assert app.test_cli_runner().invoke(args=["login", "unlock", "system", "a\x00b"]).exit_code != 0


def test_safe_next_allows_only_paths_on_this_site(app: Flask) -> None:
    from operators.login.auth import safe_next

    with app.test_request_context("/", base_url="http://localhost"):
        assert safe_next("/admin/certificates?page=2") == "/admin/certificates?page=2"
        assert safe_next("http://localhost/top") == "/top"
        for bad in ("https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil", "javascript:alert(1)",
                    "/top\r\nX: y", "", None, "top"):
            assert safe_next(bad) is None, bad


def test_argon2id_parameters_come_from_the_settings_and_old_hashes_are_upgraded(app: Flask) -> None:
    app.config.update(ARGON2_MEMORY_KIB=65536, ARGON2_TIME_COST=3, ARGON2_PARALLELISM=4)
    pk = add_operator(app, "OP0630")
    with app.app_context():
        operator = db.get_session().get(Operator, pk)
        assert operator is not None and operator.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    app.config.update(ARGON2_MEMORY_KIB=8192, ARGON2_TIME_COST=2, ARGON2_PARALLELISM=1)
    assert post_login(app.test_client(), operator_id="OP0630", password=OPERATOR_PASSWORD).status_code == 302
    with app.app_context():
        operator = db.get_session().get(Operator, pk)
        assert operator is not None and operator.password_hash.startswith("$argon2id$v=19$m=8192,t=2,p=1$")


def test_password_change_policy(app: Flask) -> None:
    add_operator(app, "OP0631")
    client = app.test_client()
    post_login(client, operator_id="OP0631", password=OPERATOR_PASSWORD)
    other_session = app.test_client()
    post_login(other_session, operator_id="OP0631", password=OPERATOR_PASSWORD)

    def change(current: str, new: str, confirm: str | None = None) -> tuple[int, str]:
        page = client.get("/password").get_data(as_text=True)
        response = client.post("/password", data={"csrf_token": csrf_token(page), "current_password": current,
                                                  "new_password": new, "confirm_password": confirm or new})
        return response.status_code, response.get_data(as_text=True)

    assert "現在のパスワードが正しくありません" in change("wrong-password", "Fresh-Password-2027")[1]
    assert "一致しません" in change(OPERATOR_PASSWORD, "Fresh-Password-2027", "Other-Password-2027")[1]
    assert "12文字以上" in change(OPERATOR_PASSWORD, "Short-1")[1]
    assert "オペレータIDを含める" in change(OPERATOR_PASSWORD, "my-op0631-password")[1]
    assert "以前に使用したパスワード" in change(OPERATOR_PASSWORD, OPERATOR_PASSWORD)[1]
    history = [OPERATOR_PASSWORD]
    for n in range(app.config["PASSWORD_HISTORY"] + 1):
        new = f"Rotating-Password-{n:02d}"
        assert change(history[-1], new)[0] == 302
        history.append(new)
    # every one of the last PASSWORD_HISTORY passwords (and the current one) is refused...
    for old in history[-app.config["PASSWORD_HISTORY"] - 1:-1]:
        assert "以前に使用したパスワード" in change(history[-1], old)[1], old
    # ...and the oldest, now beyond the history, may be chosen again
    assert change(history[-1], history[0])[0] == 302
    # each change ended the other session
    assert other_session.get("/top").status_code == 302
    assert AuditAction.PASSWORD_CHANGED in audit_actions(app)


def test_bulk_password_change_keeps_the_old_password_in_the_history(app: Flask, api: FlaskClient) -> None:
    """パスワード一括変更 goes through set_password: the previous password cannot come back at the forced change."""
    from tests.bio.helpers import OPERATOR_PASSWORD, add_operator, post_login
    from tests.conftest import csrf_token

    add_operator(app, "OPBULK")
    response = api.post("/api/v1/tenants/system/passwords", json={"operator_ids": ["OPBULK"]})
    assert response.status_code == 200, response.get_json()
    one_time = response.get_json()["items"][0]["password"]
    client = app.test_client()
    assert post_login(client, operator_id="OPBULK", password=OPERATOR_PASSWORD).status_code == 401
    assert post_login(client, operator_id="OPBULK", password=one_time).headers["Location"].endswith("/password")
    page = client.get("/password").get_data(as_text=True)
    refused = client.post("/password", data={"csrf_token": csrf_token(page), "current_password": one_time,
                                             "new_password": OPERATOR_PASSWORD, "confirm_password": OPERATOR_PASSWORD})
    assert refused.status_code == 400


@pytest.mark.parametrize("url", ["/admin/joint-use", "/admin/ssl-certificates/new",
                                 "/admin/t/system/operators/admin/edit"])
def test_permission_changes_and_ssl_issuance_require_recent_authentication(app: Flask, admin_client: FlaskClient,
                                                                         url: str) -> None:
    assert admin_client.get(url).status_code == 200
    with admin_client.session_transaction() as s:
        s["auth_at"] = int(time.time()) - app.config["REAUTH_MINUTES"] * 60 - 5
    response = admin_client.get(url)
    assert response.status_code == 302 and "/reauth" in response.headers["Location"]


# --- first login of biometric operators registered through each of the product's paths ------------

def _biometric_first_login(world: World, manager: FlaskClient, tenant: str, operator_id: str) -> str:
    """The manager enrols the operator's authenticator; the operator logs in. Returns the top screen."""
    authn = SoftAuthenticator()
    enrolled = manager_enrols(manager, operator_id, authn, tenant=tenant)
    assert enrolled.status_code == 200, enrolled.get_data(as_text=True)
    terminal = world.app.test_client()
    response = bio_login(terminal, operator_id, authn, tenant=tenant)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["redirect"].endswith("/top")  # not the password page
    top = terminal.get("/top")
    assert top.status_code == 200
    assert terminal.get("/top").status_code == 200  # and it stays there
    return top.get_data(as_text=True)


def _listed(html: str) -> list[str]:
    return re.findall(r'data-business-id="(\d+)"', html)


def test_api_registered_biometric_operator_lands_on_the_top_screen(world: World, api_a: FlaskClient,
                                                                    web_a: FlaskClient) -> None:
    register(api_a, operator_id="OP0801", auth_method="biometric", business_ids=["05"])
    assert _listed(_biometric_first_login(world, web_a, world.tenant_a, "OP0801")) == ["05"]


def test_csv_imported_biometric_operator_lands_on_the_top_screen(world: World, api_a: FlaskClient,
                                                                  web_a: FlaskClient) -> None:
    data = "オペレータID,氏名・組織名,認証方式,許可業務\r\nOP0802,一括 一郎,生体認証,05;07\r\n"
    assert api_a.post("/api/v1/tenants/minamiedo/operators/import", data=data.encode(),
                      content_type="text/csv").status_code == 201
    assert _listed(_biometric_first_login(world, web_a, world.tenant_a, "OP0802")) == ["05", "07"]


def test_migrated_biometric_operator_lands_on_the_top_screen(world: World, api_a: FlaskClient, api_b: FlaskClient,
                                                              web_b: FlaskClient) -> None:
    register(api_a, operator_id="OP0803", auth_method="biometric", business_ids=["05", "07"])
    exported = api_a.get("/api/v1/tenants/minamiedo/operators/export.csv?operator_id=OP0803")
    assert exported.status_code == 200
    moved = api_b.post("/api/v1/tenants/musashino/operators/import?drop_unpermitted=1", data=exported.data,
                       content_type="text/csv")
    assert moved.status_code == 201, moved.get_json()
    assert _listed(_biometric_first_login(world, web_b, world.tenant_b, "OP0803")) == ["05"]  # 07: no joint use
