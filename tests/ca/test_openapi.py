"""static/openapi.json documents exactly the /api/v1 routes the app serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

from flask import Flask

SPEC = json.loads((Path(__file__).resolve().parents[2] / "static" / "openapi.json").read_text())


def _app_routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule[len("/api/v1"):])
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((path, method.lower()))
    return routes


def _spec_routes() -> set[tuple[str, str]]:
    return {(path, method) for path, item in SPEC["paths"].items() for method in item
            if method in ("get", "post", "put", "patch", "delete")}


def test_every_api_route_is_documented_and_every_documented_route_exists(sqlite_app: Flask) -> None:
    served, documented = _app_routes(sqlite_app), _spec_routes()
    assert served - documented == set(), "routes missing from static/openapi.json"
    assert documented - served == set(), "static/openapi.json documents routes the app does not serve"


def test_spec_is_served(sqlite_app: Flask) -> None:
    response = sqlite_app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.get_json()["openapi"].startswith("3.")
