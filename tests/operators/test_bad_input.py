"""No bad input ends in a 500: every tenancy route, called by the system administrator with garbage."""

from __future__ import annotations

import io
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import csrf_token
from tests.operators.conftest import World, register

BLUEPRINTS = ("operators_admin", "tenants_admin", "operators_api")
GARBAGE_PATH = ["%00", "x" * 300, "..%2F..%E2%80%AE"]
GARBAGE_FORM = {"operator_id": "\x00", "name": "\x00" * 3, "password": "\x00", "business_ids": ["\x00", "5"],
                "gender": "\x00", "code": "\x00", "kind": "\x00", "permitted": ["\x00"], "add": ["x" * 500],
                "action": "save", "operator_ids": ["\x00", "x" * 100], "in_business_id": "\x00",
                "permissions": "\x00", "reason": "\x00", "delivery": "csr", "order-system": "\x00",
                "confirmed": "1", "drop_unpermitted": "1"}
GARBAGE_JSON: list[object] = [
    {"operator_id": 5, "name": ["x"], "business_ids": "zz", "password": 7, "csr": 1},
    {"operator_id": "\x00", "name": "\x00", "tenants": [1, 2], "codes": "x", "in_business_id": None,
     "permissions": {"a": 1}, "operator_ids": "x", "reason": ["x"], "kind": 3, "code": None},
    "a string",
]


def _routes(app: Flask) -> list[tuple[str, str]]:
    return [(rule.rule, method) for rule in app.url_map.iter_rules()
            if rule.endpoint.split(".")[0] in BLUEPRINTS
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})]


@pytest.mark.parametrize("value", GARBAGE_PATH)
def test_garbage_in_urls_and_bodies_is_never_a_500(world: World, sys_web: FlaskClient, sys_api: FlaskClient,
                                                   value: str) -> None:
    token = csrf_token(sys_web.get("/admin/tenants").get_data(as_text=True))
    failures = []
    for rule, method in _routes(world.app):
        url = re.sub(r"<(?:int|id):[a-z_]+>", "999999", rule)
        url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", value, url)
        if rule.startswith("/api/"):
            bodies: list[object] = GARBAGE_JSON if method != "GET" else [None]
            for body in bodies:
                response = sys_api.open(url, method=method, json=body)
                if response.status_code >= 500:
                    failures.append(f"{method} {url} {body!r}: {response.status_code}")
        else:
            data = dict(GARBAGE_FORM, csrf_token=token,
                        file=(io.BytesIO(b"\x00\xff\xfe" * 100), "x.csv"), csr=(io.BytesIO(b"\x00"), "c.pem"))
            response = (sys_web.get(url + "?page=-1&q=%00&download=1&encoding=%00&status=%00")
                        if method == "GET" else
                        sys_web.open(url, method=method, data=data, content_type="multipart/form-data"))
            response.get_data()  # a streamed page must finish too
            if response.status_code >= 500:
                failures.append(f"{method} {url}: {response.status_code}")
    assert failures == []


def test_garbage_against_real_objects_is_never_a_500(world: World, sys_web: FlaskClient,
                                                      sys_api: FlaskClient, api_a: FlaskClient) -> None:
    serial = register(api_a)["certificate"]["serial"]
    values = {"code": "minamiedo", "operator_id": "OP0601", "serial": serial, "business_id": "05", "fmt": "%00",
              "staged_id": "1"}
    token = csrf_token(sys_web.get("/admin/tenants").get_data(as_text=True))
    failures = []
    for rule, method in _routes(world.app):
        url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: values[m.group(1)], rule)
        if rule.startswith("/api/"):
            for body in (GARBAGE_JSON if method != "GET" else [None]):
                response = sys_api.open(url, method=method, json=body)
                if response.status_code >= 500:
                    failures.append(f"{method} {url} {body!r}: {response.status_code}")
        elif method != "GET":
            data = dict(GARBAGE_FORM, csrf_token=token, file=(io.BytesIO(b"\x00,\x00\r\n"), "x.csv"))
            response = sys_web.open(url, method=method, data=data, content_type="multipart/form-data")
            response.get_data()
            if response.status_code >= 500:
                failures.append(f"{method} {url}: {response.status_code}")
    assert failures == []
