"""Reading the audit log: the 監査ログ screen, GET /api/v1/audit-events and ``audit list``.

The entries listed are made by real actions (a failed login, an issued certificate, a refused request).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import csrf_token
from tests.helpers import business_payload, make_csr
from tests.operators.conftest import web_client
from tests.operators.test_api_tokens import MANAGER_PASSWORD, add_manager, bearer, new_token

AUDIT = "/api/v1/audit-events"


def _failed_login(client: FlaskClient) -> None:
    anonymous = client.application.test_client()
    page = anonymous.get("/login").get_data(as_text=True)
    response = anonymous.post("/login", data={"csrf_token": csrf_token(page), "tenant": "system",
                                              "operator_id": "admin", "password": "not-the-password"})
    assert response.status_code == 401


@pytest.fixture
def activity(api: FlaskClient) -> str:
    """A failed login and an issued business server certificate; returns the certificate's serial."""
    _failed_login(api)
    issued = api.post("/api/v1/business-server-certificates", json=business_payload(make_csr()))
    assert issued.status_code == 201, issued.get_json()
    serial: str = issued.get_json()["serial"]
    return serial


@pytest.fixture
def auditor(api: FlaskClient) -> FlaskClient:
    """A reader with an API token of scope audit.view (HTTP Basic would add a login entry on every call)."""
    return bearer(api.application, new_token(api, "audit.view", name="auditor")["token"])


def _events(api: FlaskClient, **args: Any) -> dict[str, Any]:
    response = api.get(AUDIT, query_string=args)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _actions(body: dict[str, Any]) -> list[str]:
    return [item["action"] for item in body["items"]]


def test_api_lists_real_actions_newest_first_with_filters(auditor: FlaskClient, activity: str) -> None:
    everything = _events(auditor, per_page=500)
    ids = [item["id"] for item in everything["items"]]
    assert ids == sorted(ids, reverse=True) and everything["total"] == len(ids)
    assert {"auth.login_failure", "certificate.issued", "business_system.created"} <= set(_actions(everything))

    failed = _events(auditor, action="auth.login_failure")
    assert failed["total"] == 1
    entry = failed["items"][0]
    assert entry["result"] == "failure" and entry["target"] == "operator:system/admin"
    assert entry["actor"] == "admin" and entry["tenant"] == "system" and entry["detail"]["reason"]
    assert entry["created_at"].endswith("+00:00") and len(entry["entry_hash"]) == 64

    certificates = _events(auditor, action="certificate.")
    assert set(_actions(certificates)) == {"certificate.issued"}
    assert certificates["items"][0]["target"] == f"certificate:{activity}"  # initialisation issued the others
    assert [i["target"] for i in _events(auditor, action="certificate.", actor="admin")["items"]] == [
        f"certificate:{activity}"]
    assert _events(auditor, action="certificate")["total"] == 0  # no dot: the exact action, which does not exist

    assert _events(auditor, q=activity[:12])["items"][0]["action"] == "certificate.issued"
    assert {i["result"] for i in _events(auditor, result="failure", per_page=500)["items"]} == {"failure"}
    assert "certificate.issued" not in _actions(_events(auditor, result="failure", per_page=500))
    by_admin = _events(auditor, actor="DMI", per_page=500)  # a part of the name, any case
    assert by_admin["total"] > 0 and {i["actor"] for i in by_admin["items"]} == {"admin"}
    assert _events(auditor, tenant="system", action="auth.login_failure")["total"] == 1
    assert _events(auditor, tenant="syst", action="auth.login_failure")["total"] == 0  # tenant is exact

    newest = everything["items"][0]
    day = date.fromisoformat(newest["created_at"][:10])
    on_the_day = _events(auditor, since=day.isoformat(), until=day.isoformat(), per_page=500)
    assert newest["id"] in [i["id"] for i in on_the_day["items"]]
    before = _events(auditor, until=(day - timedelta(days=1)).isoformat(), per_page=500)
    assert newest["id"] not in [i["id"] for i in before["items"]]
    assert _events(auditor, since=(day + timedelta(days=1)).isoformat())["total"] == 0
    # LIKE wildcards and the escape character are searched for literally (no 500 on PostgreSQL either)
    assert _events(auditor, q="%_\\", actor="%")["total"] == 0


def test_api_pages(auditor: FlaskClient, activity: str) -> None:
    total = _events(auditor)["total"]
    assert total >= 4
    first, second = _events(auditor, per_page=2), _events(auditor, per_page=2, page=2)
    assert first["pages"] == second["pages"] == -(-total // 2) and first["per_page"] == 2
    assert len(first["items"]) == len(second["items"]) == 2
    assert first["items"][-1]["id"] > second["items"][0]["id"]
    beyond = _events(auditor, per_page=2, page=first["pages"] + 1)
    assert beyond["items"] == [] and beyond["total"] == total


@pytest.mark.parametrize("args", [
    {"since": "2026-13-01"}, {"until": "2026-02-30"}, {"since": "yesterday"}, {"since": "20260101"},
    {"since": "2026-06-02", "until": "2026-06-01"}, {"result": "maybe"}, {"per_page": "0"}, {"per_page": "501"},
    {"page": "abc"}, {"page": "0"}, {"actor": "x" * 201}, {"q": "x" * 101}, {"action": "a" * 65},
])
def test_bad_filters_are_400(api: FlaskClient, admin_client: FlaskClient, args: dict[str, str]) -> None:
    response = api.get(AUDIT, query_string=args)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_input"
    if "page" not in args and "per_page" not in args:
        assert admin_client.get("/admin/audit", query_string=args).status_code == 400


def test_extreme_days_are_accepted(api: FlaskClient) -> None:
    assert _events(api, since="0001-01-01", until="9999-12-31")["total"] > 0


def test_screen_lists_filters_and_pages(admin_client: FlaskClient, activity: str) -> None:
    page = admin_client.get("/admin/audit").get_data(as_text=True)
    assert "<h1>監査ログ</h1>" in page
    for shown in ("<code>auth.login_failure</code>", "<code>certificate.issued</code>", f"certificate:{activity}",
                  "operator:system/admin", "失敗", "成功"):
        assert shown in page

    certificates = admin_client.get("/admin/audit?action=certificate.&result=success").get_data(as_text=True)
    assert "<code>certificate.issued</code>" in certificates and "<code>auth.login_failure</code>" not in certificates
    assert "&#34;business_id&#34;:&#34;05&#34;" in certificates  # the detail, compactly

    admin_client.application.config["PAGE_SIZE"] = 2
    first = admin_client.get("/admin/audit?actor=admin").get_data(as_text=True)
    assert 'href="/admin/audit?page=2&amp;actor=admin"' in first
    second = admin_client.get("/admin/audit?actor=admin&page=2").get_data(as_text=True)
    assert 'href="/admin/audit?page=1&amp;actor=admin"' in second

    none = admin_client.get("/admin/audit?action=no.such").get_data(as_text=True)
    assert "該当する記録はありません。" in none


def test_screen_in_english(admin_client: FlaskClient) -> None:
    page = admin_client.get("/admin/audit?lang=en").get_data(as_text=True)
    assert "Audit log" in page and "監査ログ" not in page


def test_linked_from_the_admin_menus(admin_client: FlaskClient) -> None:
    assert 'href="/admin/audit"' in admin_client.get("/top").get_data(as_text=True)
    assert 'href="/admin/audit"' in admin_client.get("/admin/").get_data(as_text=True)


def test_tenant_manager_is_refused_on_screen_and_api(api: FlaskClient) -> None:
    app = api.application
    app.config.update(ARGON2_TIME_COST=1, ARGON2_MEMORY_KIB=8192, ARGON2_PARALLELISM=1)
    manager_api = add_manager(api, "higashi", "mgr01")
    assert manager_api.get(AUDIT).status_code == 403
    manager_web = web_client(app, "mgr01", "higashi", password=MANAGER_PASSWORD)
    assert manager_web.get("/admin/audit").status_code == 403
    assert 'href="/admin/audit"' not in manager_web.get("/top").get_data(as_text=True)
    refused = _events(api, action="auth.access_denied", actor="mgr01", tenant="higashi")
    assert {i["target"] for i in refused["items"]} == {AUDIT, "/admin/audit"}


def test_api_tokens_need_the_audit_view_scope(api: FlaskClient) -> None:
    app = api.application
    without = bearer(app, new_token(api, "certificates.view", name="reader")["token"])
    refused = without.get(AUDIT)
    assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    with_scope = bearer(app, new_token(api, "audit.view", name="auditor")["token"])
    listed = with_scope.get(AUDIT, query_string={"action": "api_token.created"})
    assert listed.status_code == 200 and listed.get_json()["total"] == 2


def test_cli_lists_with_filters(api: FlaskClient, activity: str) -> None:
    runner = api.application.test_cli_runner()
    result = runner.invoke(args=["audit", "list", "--action", "auth.login_failure", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["target"] == "operator:system/admin" and rows[0]["detail"]["reason"]

    text = runner.invoke(args=["audit", "list", "--action", "certificate.", "--actor", "adm", "--limit", "5"])
    assert text.exit_code == 0, text.output
    header, *lines = text.stdout.splitlines()
    assert header.split("\t") == ["id", "created_at", "actor", "tenant", "source", "action", "target", "result",
                                  "detail"]
    assert len(lines) == 1 and f"certificate:{activity}" in lines[0] and '"business_id":"05"' in lines[0]

    today = date.today().isoformat()
    limited = json.loads(runner.invoke(args=["audit", "list", "--limit", "2", "--json"]).stdout)
    assert len(limited) == 2 and limited[0]["id"] > limited[1]["id"]
    assert runner.invoke(args=["audit", "list", "--until", "2000-01-01", "--json"]).stdout.strip() == "[]"
    assert runner.invoke(args=["audit", "list", "--since", today, "--until", "2100-01-01"]).exit_code == 0

    bad = runner.invoke(args=["audit", "list", "--since", "2026-02-30"])
    assert bad.exit_code == 2 and "since" in bad.stderr
