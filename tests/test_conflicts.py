"""Requests racing to create the same thing: the loser gets 409 and an audited refusal, never a 500.

Everything is created through the API, as business-system administrators' clients do.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select, text

from db import get_session
from kernel.audit import AuditEvent
from tests.helpers import BUSINESS

WAIT_SECONDS = 120  # how long the test waits for the racers to block (a bound, not an assertion on timing)


def _racers(api: FlaskClient, method: str, url: str, payload: dict[str, Any],
            count: int) -> tuple[list[threading.Thread], list[Any]]:
    results: list[Any] = []
    barrier = threading.Barrier(count)

    def call() -> None:
        client = api.application.test_client()
        client.environ_base.update(api.environ_base)
        barrier.wait()
        response = client.open(url, method=method, json=payload)
        results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=call) for _ in range(count)]
    return threads, results


def _line_up_and_release(database_url: str, table: str, threads: list[threading.Thread], racers: int) -> None:
    """Hold an EXCLUSIVE lock on ``table`` (reads pass, inserts wait) until every racer waits on it."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as lock:
            lock.execute(text(f'LOCK TABLE "{table}" IN EXCLUSIVE MODE'))
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + WAIT_SECONDS
            waiting = 0
            while time.monotonic() < deadline:
                waiting = lock.execute(text(
                    "select count(*) from pg_locks where relation = cast(:t as regclass) and not granted"),
                    {"t": table}).scalar_one()
                if waiting >= racers:
                    break
                time.sleep(0.05)
            assert waiting >= racers, "the racers never reached their insert"
            lock.rollback()  # release: all of them insert now
        for thread in threads:
            thread.join()
    finally:
        engine.dispose()


def _rejections(app: Flask) -> int:
    with app.app_context():
        session = get_session()
        count = session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "business_system.rejected")) or 0
        session.rollback()
        return count


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_same_new_business_id_at_once_is_one_201_and_409s(app: Flask, api: FlaskClient, database_url: str) -> None:
    """Every racer reads "not there" and then inserts: a table lock held by the test lines them up."""
    racers = 4
    assert api.get("/api/v1/business-systems").status_code == 200  # the admin's password re-hash happens now
    threads, results = _racers(api, "PUT", "/api/v1/business-systems/43",
                               dict(BUSINESS, business_id="43", name="同時登録"), racers)
    _line_up_and_release(database_url, "business_system", threads, racers)
    statuses = sorted(status for status, _body in results)
    assert statuses == [201] + [409] * (racers - 1), results
    assert all(body["error"] == "conflict" and "43" in body["message"] for status, body in results if status == 409)
    assert _rejections(app) == racers - 1
    assert api.get("/api/v1/business-systems/43").get_json()["name"] == "同時登録"


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_same_new_tenant_at_once_is_one_201_and_409s(app: Flask, api: FlaskClient, database_url: str) -> None:
    """Any unique constraint the database enforces is a 409 with the transaction rolled back, never a 500."""
    racers = 3
    assert api.get("/api/v1/tenants").status_code == 200
    threads, results = _racers(api, "POST", "/api/v1/tenants",
                               {"code": "race-city", "name": "競争市", "kind": "municipality"}, racers)
    _line_up_and_release(database_url, "tenant", threads, racers)
    statuses = sorted(status for status, _body in results)
    assert statuses == [201] + [409] * (racers - 1), results
    assert all(body["error"] == "conflict" for status, body in results if status == 409)
    assert api.get("/api/v1/tenants/race-city").status_code == 200


def test_many_requests_creating_one_business_id_never_fail(app: Flask, api: FlaskClient) -> None:
    assert api.get("/api/v1/business-systems").status_code == 200
    threads, results = _racers(api, "PUT", "/api/v1/business-systems/44",
                               dict(BUSINESS, business_id="44", name="同時登録"), 8)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = [status for status, _body in results]
    assert statuses.count(201) == 1 and set(statuses) <= {200, 201, 409}, results
