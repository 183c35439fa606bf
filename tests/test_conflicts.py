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
from operators.models import AuditEvent
from tests.helpers import BUSINESS

WAIT_SECONDS = 120  # how long the test waits for the racers to block (a bound, not an assertion on timing)


def _racers(api: FlaskClient, business_id: str, count: int) -> tuple[list[threading.Thread], list[Any]]:
    results: list[Any] = []
    barrier = threading.Barrier(count)
    payload = dict(BUSINESS, business_id=business_id, name="同時登録")

    def put() -> None:
        client = api.application.test_client()
        client.environ_base.update(api.environ_base)
        barrier.wait()
        response = client.put(f"/api/v1/business-systems/{business_id}", json=payload)
        results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=put) for _ in range(count)]
    return threads, results


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
    engine = create_engine(database_url)
    try:
        with engine.connect() as lock:
            lock.execute(text("LOCK TABLE business_system IN EXCLUSIVE MODE"))  # reads pass, inserts wait
            threads, results = _racers(api, "43", racers)
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + WAIT_SECONDS
            waiting = 0
            while time.monotonic() < deadline:
                waiting = lock.execute(text(
                    "select count(*) from pg_locks where relation = 'business_system'::regclass "
                    "and not granted")).scalar_one()
                if waiting >= racers:
                    break
                time.sleep(0.05)
            assert waiting >= racers, "the racers never reached their insert"
            lock.rollback()  # release: all of them insert now
        for thread in threads:
            thread.join()
    finally:
        engine.dispose()
    statuses = sorted(status for status, _body in results)
    assert statuses == [201] + [409] * (racers - 1), results
    assert all(body["error"] == "conflict" and "43" in body["message"] for status, body in results if status == 409)
    assert _rejections(app) == racers - 1
    assert api.get("/api/v1/business-systems/43").get_json()["name"] == "同時登録"


def test_many_requests_creating_one_business_id_never_fail(app: Flask, api: FlaskClient) -> None:
    assert api.get("/api/v1/business-systems").status_code == 200
    threads, results = _racers(api, "44", 8)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = [status for status, _body in results]
    assert statuses.count(201) == 1 and set(statuses) <= {200, 201, 409}, results
