"""操作者用トップ画面: permitted to the operator AND to the tenant by joint use AND enabled."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import insert, select

import db
from operators.models import JointUse, Operator, Tenant, operator_business_system
from tests.bio.helpers import (
    OPERATOR_PASSWORD,
    add_business_system,
    add_operator,
    add_tenant,
    cheapen_argon2,
    post_login,
)


@pytest.fixture(autouse=True)
def _cheap_argon2(request: pytest.FixtureRequest) -> None:
    if "app" in request.fixturenames:
        cheapen_argon2(request.getfixturevalue("app"))


def _permit(app: Flask, operator_pk: int, tenant_code: str, *, operator: list[int], joint_use: list[int]) -> None:
    with app.app_context():
        session = db.get_session()
        tenant = session.scalar(select(Tenant).where(Tenant.code == tenant_code))
        assert tenant is not None
        for pk in operator:
            session.execute(insert(operator_business_system).values(operator_id=operator_pk, business_system_id=pk))
        for pk in joint_use:
            session.add(JointUse(tenant_id=tenant.id, business_system_id=pk))
        session.commit()


def test_top_screen_lists_only_usable_business_systems(app: Flask) -> None:
    add_tenant(app, "nakatokyo", "中東京市")
    usable = add_business_system(app, "05", "利用環境設定")
    no_joint_use = add_business_system(app, "06", "共同利用なし")
    disabled = add_business_system(app, "07", "停止中", enabled=False)
    not_permitted = add_business_system(app, "08", "許可なし")
    pk = add_operator(app, "OP9999", tenant="nakatokyo")
    _permit(app, pk, "nakatokyo", operator=[usable, no_joint_use, disabled],
            joint_use=[usable, disabled, not_permitted])
    client = app.test_client()
    assert post_login(client, operator_id="OP9999", password=OPERATOR_PASSWORD, tenant="nakatokyo").status_code == 302
    page = client.get("/top").get_data(as_text=True)
    assert "利用環境設定" in page and 'href="https://biz05.example.jp/"' in page
    for name in ("共同利用なし", "停止中", "許可なし"):
        assert name not in page
    image = client.get("/top/business-image/05.svg")
    assert image.status_code == 200 and image.mimetype == "image/svg+xml" and b">05<" in image.data
    assert client.get("/top/business-image/06.svg").status_code == 404  # not usable: no image either


def test_revoked_operator_sees_nothing(app: Flask) -> None:
    from operators.tenancy import usable_business_systems

    usable = add_business_system(app, "05", "利用環境設定")
    pk = add_operator(app, "OP9998")
    _permit(app, pk, "system", operator=[usable], joint_use=[usable])
    with app.app_context():
        session = db.get_session()
        operator = session.get(Operator, pk)
        assert operator is not None and [s.business_id for s in usable_business_systems(session, operator)] == ["05"]
        operator.revoked_at = db.utcnow()
        assert usable_business_systems(session, operator) == []


def test_top_screen_needs_a_login(app: Flask) -> None:
    response = app.test_client().get("/top")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert app.test_client().get("/").headers["Location"].endswith("/top")
