"""Schemathesis over the served OpenAPI document: no operation answers 5xx, whatever it is sent.

Every operation of /api/v1/openapi.json is called as the system administrator (HTTP Basic)
with schema-conforming and schema-violating data, once with generated path parameters and
once with the identifiers of real objects (created through the API first), on SQLite and on
PostgreSQL. Generation is derandomised, so a failure reproduces; the example count keeps the
run within a few minutes.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import ADMIN_PASSWORD
from tests.helpers import BUSINESS, business_payload, make_csr
from tests.operators.conftest import operator_payload

EXAMPLES = 8  # per operation, generation mode and kind of path parameters
AUTH = {"Authorization": "Basic " + base64.b64encode(f"admin@system:{ADMIN_PASSWORD}".encode()).decode()}


def _real_objects(api: FlaskClient) -> dict[str, str]:
    """A tenant with joint use of a business system, an operator and certificates, made through the API."""
    assert api.post("/api/v1/tenants", json={"code": "fuzz-city", "name": "ファズ市",
                                             "kind": "municipality"}).status_code == 201
    issued = api.post("/api/v1/business-server-certificates", json=business_payload(make_csr()))
    assert issued.status_code == 201, issued.get_json()
    assert api.put("/api/v1/business-systems/05/joint-use", json={"tenants": ["fuzz-city"]}).status_code == 200
    registered = api.post("/api/v1/tenants/fuzz-city/operators",
                          json=operator_payload("OPFUZZ1", business_ids=["05"]))
    assert registered.status_code == 201, registered.get_json()
    return {"code": "fuzz-city", "tenant_code": "fuzz-city", "operator_id": "OPFUZZ1",
            "business_id": BUSINESS["business_id"], "serial": registered.get_json()["certificate"]["serial"],
            "fmt": "pem"}


def _server_errors(operation: Any, strategy: Any) -> list[str]:
    found: list[str] = []

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def call(case: Any) -> None:
        response = case.call(headers=AUTH)
        if response.status_code >= 500:
            found.append(f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.200}: "
                         f"{response.status_code}")

    with contextlib.suppress(Unsatisfiable):  # nothing to vary in this mode (e.g. no parameter to make invalid)
        call()
    return found


def test_no_operation_answers_5xx(app: Flask, api: FlaskClient) -> None:
    # Cheap argon2: every API call verifies the password (re-hashed at the next login with these parameters).
    app.config.update(ARGON2_TIME_COST=1, ARGON2_MEMORY_KIB=8192, ARGON2_PARALLELISM=1)
    real = _real_objects(api)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        names = [p.name for p in operation.path_parameters]
        known = {name: real[name] for name in names if name in real}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies = [operation.as_strategy(mode, headers=AUTH)]
            if known:
                strategies.append(operation.as_strategy(mode, headers=AUTH, path_parameters=known))
            for strategy in strategies:
                failures += _server_errors(operation, strategy)
    assert operations >= 30
    assert failures == []
