"""環境基本設定 belongs to system administrators: tenant managers reach neither the screen nor the API."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from tests.operators.conftest import World


def test_tenant_manager_cannot_read_or_change_settings(world: World, api_a: FlaskClient, web_a: FlaskClient,
                                                       sys_api: FlaskClient) -> None:
    app: Flask = world.app
    assert api_a.get("/api/v1/settings").status_code == 403
    assert api_a.get("/api/v1/settings/PKI_BASE_URL").status_code == 403
    assert api_a.patch("/api/v1/settings", json={"PAGE_SIZE": 10}).status_code == 403
    assert web_a.get("/admin/settings").status_code == 403
    assert web_a.post("/admin/settings/apply", data={"keys": "PAGE_SIZE", "new_PAGE_SIZE": "10"}).status_code in (
        400, 403)  # without a CSRF token it never gets that far either
    assert app.config["PAGE_SIZE"] == 50
    assert sys_api.get("/api/v1/settings").status_code == 200
