"""The audit log: hash-chained, append-only, and the CLI finds the first tampered entry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from db import get_session
from kernel.audit import SYSTEM_ACTOR, AuditAction, AuditEvent, record_event, verify_chain


def _add_events(app: Flask, n: int) -> list[int]:
    with app.app_context():
        session = get_session()
        ids = [record_event(session, action=AuditAction.AUDIT_VERIFIED, actor=SYSTEM_ACTOR,
                            target=f"test:{i}", detail={"i": i, "名前": "テスト"}).id for i in range(n)]
        session.commit()
        return ids


@pytest.fixture(autouse=True)
def guard_restored(app: Flask) -> Iterator[None]:
    """The PostgreSQL test database outlives the test: put back the trigger the attacker disabled."""
    yield
    with app.app_context():
        session = get_session()
        if session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
            session.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_no_change"))
            session.commit()


def _drop_guard(session: object, dialect: str) -> None:
    """What an attacker with database rights would do first: remove the append-only triggers."""
    if dialect == "postgresql":
        session.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_change"))  # type: ignore[attr-defined]
    else:
        session.execute(text("DROP TRIGGER audit_event_no_update"))  # type: ignore[attr-defined]
        session.execute(text("DROP TRIGGER audit_event_no_delete"))  # type: ignore[attr-defined]


def test_chain_verifies_after_normal_activity(app: Flask) -> None:
    _add_events(app, 5)
    with app.app_context():
        verdict = verify_chain(get_session())
    assert verdict.ok and verdict.checked >= 5


def test_database_refuses_update_and_delete(app: Flask) -> None:
    ids = _add_events(app, 1)
    with app.app_context():
        session = get_session()
        with pytest.raises(DBAPIError):
            session.execute(text("UPDATE audit_event SET actor='mallory' WHERE id=:i"), {"i": ids[0]})
        session.rollback()
        with pytest.raises(DBAPIError):
            session.execute(text("DELETE FROM audit_event WHERE id=:i"), {"i": ids[0]})
        session.rollback()


def test_edited_entry_is_reported_by_the_cli(app: Flask) -> None:
    ids = _add_events(app, 4)
    with app.app_context():
        session = get_session()
        _drop_guard(session, session.bind.dialect.name)  # type: ignore[union-attr]
        session.execute(text("UPDATE audit_event SET target='test:forged' WHERE id=:i"), {"i": ids[2]})
        session.commit()
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert f"BROKEN at entry {ids[2]}" in result.output and "edited" in result.output


def test_removed_entry_breaks_the_link(app: Flask) -> None:
    ids = _add_events(app, 4)
    with app.app_context():
        session = get_session()
        _drop_guard(session, session.bind.dialect.name)  # type: ignore[union-attr]
        session.execute(text("DELETE FROM audit_event WHERE id=:i"), {"i": ids[1]})
        session.commit()
        verdict = verify_chain(session)
    assert not verdict.ok and verdict.first_broken_id == ids[2] and "link" in verdict.reason


def test_truncated_tail_is_detected(app: Flask) -> None:
    ids = _add_events(app, 3)
    with app.app_context():
        session = get_session()
        _drop_guard(session, session.bind.dialect.name)  # type: ignore[union-attr]
        session.execute(text("DELETE FROM audit_event WHERE id=:i"), {"i": ids[-1]})
        session.commit()
        verdict = verify_chain(session)
    assert not verdict.ok and "head" in verdict.reason


def test_cli_reports_ok_on_intact_chain(app: Flask) -> None:
    _add_events(app, 2)
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 0 and "audit chain OK" in result.output


def test_entries_carry_actor_tenant_source_action_target_result(app: Flask) -> None:
    with app.app_context():
        session = get_session()
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    actions = [e.action for e in events]
    assert "ca.initialised" in actions and "operator.bootstrap_created" in actions
    for e in events:
        assert e.actor and e.action and e.result in ("success", "failure") and e.created_at.tzinfo is not None
        assert len(e.entry_hash) == 64 and len(e.prev_hash) == 64
