"""カードステータス: the daily feed (CLI and upload screen; SQLite and PostgreSQL), its idempotence and all-or-nothing
rejection, the stale-feed alert on the top screen, and the service functions a business-system API would call."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask

from apdl import cardstatus, db
from apdl.app import create_app
from apdl.db import utcnow
from apdl.models import FeedStatus
from tests.apdl.app.conftest import ADMIN_TENANT, SAPPORO, Opauth, apdl_config, csrf, login, submit
from tests.apdl.app.status_feed import csv_feed, import_status, json_feed, log_entries

GOOD = csv_feed("1000000000001,lost,,2026-11-29", "1000000000002,moved,011002,2026-11-29T10:00:00+09:00",
                "1000000000003,suspended,,2026-11-29T01:00:00Z")


def _app(tmp_path: Path) -> Flask:
    app = create_app({"INSTANCE_DIR": str(tmp_path / "apdl"), "ADMIN_TENANT": ADMIN_TENANT})
    db.upgrade(app.config["DATABASE_URL"])
    return app


def _statuses(app: Flask, *cards: str) -> dict[str, str | None]:
    with app.app_context():
        session = db.get_session()
        views = {card: cardstatus.status_of(session, card, viewer=None) for card in cards}
        return {card: v.feed_status.value if v.feed_status else None for card, v in views.items()}


def test_bad_rows_are_reported_by_line_and_nothing_is_applied(tmp_path: Path) -> None:
    app = _app(tmp_path)
    bad = csv_feed("1000000000001,lost,,2026-11-29",  # line 2: good
                   "1000000000002,misplaced,,2026-11-29",  # line 3
                   "1000000000003,moved,,2026-11-29",  # line 4: a move without the new residence code
                   "1000000000004,moved,011003,2026-11-29",  # line 5: check digit wrong
                   "1000000000005,lost,131016,2026-11-29",  # line 6: a code on a non-move
                   "12345,lost,,2026-11-29",  # line 7: not a カードFID
                   "1000000000006,lost,,2026-11-29T10:00:00",  # line 8: no offset
                   "1000000000001,stolen,,2026-11-30",  # line 9: the card again
                   "1000000000007,lost",  # line 10: a column missing
                   '"1000000000008","lost","","2026-11-29"')  # line 11: quoted, good
    result = import_status(app, tmp_path, bad, "--batch-id", "20261129")
    assert result.returncode == 1
    reported = [int(n) for n in re.findall(r"^(\d+)行目", result.stderr, re.M)]
    assert reported == [3, 4, 5, 6, 7, 8, 9, 10], result.stderr
    assert "（8件）" in result.stderr and "何も反映していません" in result.stderr
    assert "最初は 2" in result.stderr  # the duplicate names the first line
    assert _statuses(app, "1000000000001", "1000000000008") == {"1000000000001": None, "1000000000008": None}
    entries = log_entries(app)
    assert [a for a, _, _ in entries] == ["status_feed_rejected"] and entries[0][2]["bad_rows"] == 8
    not_utf8 = import_status(app, tmp_path, GOOD.encode("utf-16"), "--batch-id", "x1")
    assert not_utf8.returncode == 1 and "UTF-8 ではない" in not_utf8.stderr and "0行目" not in not_utf8.stderr
    no_header = import_status(app, tmp_path, "1000000000001,lost,,2026-11-29\n", "--batch-id", "x2")
    assert no_header.returncode == 1 and "1行目: 見出し行" in no_header.stderr
    assert import_status(app, tmp_path, GOOD, "--batch-id", "bad id!").returncode == 1
    assert _statuses(app, "1000000000001")["1000000000001"] is None


def test_a_batch_is_imported_once_and_a_repeat_changes_nothing(tmp_path: Path) -> None:
    app = _app(tmp_path)
    before = utcnow() - timedelta(seconds=1)
    first = import_status(app, tmp_path, GOOD, "--batch-id", "20261129")
    assert first.returncode == 0, first.stderr
    assert "バッチ 20261129 を取り込みました: 3件、うち変更 3件。" in first.stdout
    assert _statuses(app, "1000000000001", "1000000000002", "1000000000003") == {
        "1000000000001": "lost", "1000000000002": "moved", "1000000000003": "suspended"}
    with app.app_context():
        session = db.get_session()
        moved = cardstatus.status_of(session, "1000000000002", viewer=None)
        assert moved.residence_code == SAPPORO and moved.regional_purge and not moved.blocked
        assert cardstatus.status_of(session, "1000000000001", viewer=None).blocked
        applied = {c.card_identifier: c.at for c in cardstatus.changes_since(session, before)}
    assert set(applied) == {"1000000000001", "1000000000002", "1000000000003"}

    again = import_status(app, tmp_path, GOOD, "--batch-id", "20261129")
    assert again.returncode == 0 and "取込済みです（3件）。何も変更していません。" in again.stdout
    with app.app_context():
        session = db.get_session()
        assert {c.card_identifier: c.at for c in cardstatus.changes_since(session, before)} == applied
    other = import_status(app, tmp_path, csv_feed("1000000000001,stolen,,2026-11-30"), "--batch-id", "20261129")
    assert other.returncode == 1 and "別の内容" in other.stderr
    assert _statuses(app, "1000000000001")["1000000000001"] == "lost"
    # A later batch: an older event does not overwrite a newer one, the same state is no change.
    later = csv_feed("1000000000001,active,,2026-11-28", "1000000000002,moved,011002,2026-11-29T10:00:00+09:00",
                     "1000000000003,active,,2026-11-30")
    result = import_status(app, tmp_path, later, "--batch-id", "20261130")
    assert result.returncode == 0 and "3件、うち変更 1件。" in result.stdout, result.stdout
    assert _statuses(app, "1000000000001", "1000000000003") == {"1000000000001": "lost", "1000000000003": "active"}
    # JSON: the batch id in the document; another id beside it is refused.
    records = [{"card_identifier": "1000000000009", "status": "stolen", "occurred_at": "2026-11-30T09:00:00+09:00"}]
    assert import_status(app, tmp_path, json_feed("j1", records), "--batch-id", "j2",
                         name="feed.json").returncode == 1
    result = import_status(app, tmp_path, json_feed("j1", records), name="feed.json")
    assert result.returncode == 0 and "バッチ j1 を取り込みました: 1件、うち変更 1件。" in result.stdout, result.stderr
    bad_json = import_status(app, tmp_path, json_feed("j3", [*records, {"card_identifier": 5, "status": "lost",
                                                                         "occurred_at": "2026-11-30"}]), name="f.json")
    assert bad_json.returncode == 1 and "2件目" in bad_json.stderr and "1件目" not in bad_json.stderr
    actions = [a for a, _, _ in log_entries(app)]  # one entry per batch, never per row
    assert actions == ["status_feed_imported", "status_feed_repeated", "status_feed_rejected",
                       "status_feed_imported", "status_feed_rejected", "status_feed_imported",
                       "status_feed_rejected"]


def test_the_feed_upserts_on_postgresql(pg_database: str, tmp_path: Path) -> None:
    app = create_app({"INSTANCE_DIR": str(tmp_path / "apdl"), "DATABASE_URL": pg_database,
                      "ADMIN_TENANT": ADMIN_TENANT})
    db.upgrade(pg_database)
    try:
        rows = [f"2{n:012d},{'moved' if n % 3 == 0 else 'lost'},{'011002' if n % 3 == 0 else ''},2026-11-29"
                for n in range(3000)]
        first = import_status(app, tmp_path, csv_feed(*rows), "--batch-id", "pg-1", database_url=pg_database)
        assert first.returncode == 0 and "3000件、うち変更 3000件。" in first.stdout, first.stderr
        again = import_status(app, tmp_path, csv_feed(*rows), "--batch-id", "pg-1", database_url=pg_database)
        assert "何も変更していません" in again.stdout
        changed = [r.replace(",lost,,2026-11-29", ",abolished,,2026-11-30") for r in rows[:10]]
        second = import_status(app, tmp_path, csv_feed(*changed, "1000000000001,x,,2026-11-30"), "--batch-id",
                               "pg-2", database_url=pg_database)
        assert second.returncode == 1 and "2026" not in second.stdout
        assert import_status(app, tmp_path, csv_feed(*changed), "--batch-id", "pg-2",
                             database_url=pg_database).stdout.strip().endswith("10件、うち変更 6件。")
        with app.app_context():
            session = db.get_session()
            assert cardstatus.count_rows(session) == 3000
            assert cardstatus.status_of(session, "2000000000001", viewer=None).feed_status is FeedStatus.ABOLISHED
            assert cardstatus.status_of(session, "2000000000003", viewer=None).residence_code == SAPPORO
        assert [a for a, _, _ in log_entries(app)] == ["status_feed_imported", "status_feed_repeated",
                                                       "status_feed_rejected", "status_feed_imported"]
    finally:
        app.extensions[db.ENGINE_KEY].dispose()


def test_upload_screen_and_the_stale_feed_alert(opauth: Opauth, apdl_app: Flask) -> None:
    admin = login(opauth, apdl_app, "admin")
    top = admin.get("/").get_data(as_text=True)
    assert 'id="feed-stale"' in top and "一度も取り込まれていません" in top  # never imported
    assert 'id="feed-import"' in top and 'id="feed-ask"' not in top  # who can import gets the way there
    page = admin.get("/card-status")
    assert page.status_code == 200
    token = csrf(page.get_data(as_text=True))

    def upload(content: str, batch_id: str, name: str = "feed.csv") -> tuple[int, str]:
        from io import BytesIO

        response = admin.post("/card-status/import", data={"csrf_token": token, "batch_id": batch_id,
                                                           "feed": (BytesIO(content.encode()), name)},
                              content_type="multipart/form-data")
        return response.status_code, response.get_data(as_text=True)

    status, body = upload(csv_feed("1000000000001,lost,,2026-11-29", "1000000000002,lots,,2026-11-29"), "u1")
    assert status == 400 and "3行目" in body and "2行目" not in body and "何も反映していません" in body
    assert 'id="feed-stale"' in admin.get("/").get_data(as_text=True)
    status, body = upload(GOOD, "u1")
    assert status == 302
    assert "バッチ u1 を取り込みました（3件、変更 3件）" in admin.get("/card-status").get_data(as_text=True)
    status, body = upload(GOOD, "u1")
    assert status == 302 and "取込済みです。何も変更していません" in admin.get("/card-status").get_data(as_text=True)
    assert upload(csv_feed("1000000000001,stolen,,2026-11-30"), "u1")[0] == 409
    assert 'id="feed-stale"' not in admin.get("/").get_data(as_text=True)  # imported a moment ago
    minami = login(opauth, apdl_app, "minami")  # ap.manage, but not the admin tenant
    assert minami.get("/card-status").status_code == 404
    assert submit(minami, "/", "/card-status/import", {"batch_id": "m1"}).status_code == 404
    assert [a for a, _, _ in log_entries(apdl_app) if a.startswith("status_feed")] == [
        "status_feed_rejected", "status_feed_imported", "status_feed_repeated", "status_feed_rejected"]

    strict = create_app({**apdl_config(opauth, Path(apdl_app.config["INSTANCE_DIR"])),
                         "STATUS_FEED_MAX_AGE_HOURS": 0})  # the same database, a feed older than 0 hours is stale
    try:
        stale = login(opauth, strict, "minami").get("/").get_data(as_text=True)
        assert 'id="feed-stale"' in stale and "0 時間以上取り込まれていません" in stale
        assert 'id="feed-import"' not in stale and "システム管理者へ確認してください" in stale  # minami cannot import
        english = login(opauth, strict, "minami").get("/?lang=en").get_data(as_text=True)
        assert "has not been imported for 0 hours or more" in english, english[-800:]
    finally:
        strict.extensions[db.ENGINE_KEY].dispose()


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_the_stale_feed_setting_is_checked(value: str) -> None:
    from apdl.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="APDL_STATUS_FEED_MAX_AGE_HOURS"):
        load_settings(environ={"APDL_STATUS_FEED_MAX_AGE_HOURS": value})


def test_a_row_from_the_future_is_a_bad_row_and_nothing_of_its_batch_is_applied(tmp_path: Path) -> None:
    app = _app(tmp_path)
    soon = (utcnow() + timedelta(minutes=5)).isoformat(timespec="seconds")  # within the clock skew allowed
    later = (utcnow() + timedelta(minutes=30)).isoformat(timespec="seconds")
    tomorrow = (utcnow() + timedelta(days=2)).date().isoformat()
    feed = csv_feed("1000000000001,lost,,2026-11-29", f"1000000000002,stolen,,{later}",
                    f"1000000000003,suspended,,{soon}", f"1000000000004,lost,,{tomorrow}")
    result = import_status(app, tmp_path, feed, "--batch-id", "f1")
    assert result.returncode == 1 and "（2件）" in result.stderr, result.stderr
    assert [int(n) for n in re.findall(r"^(\d+)行目: 発生日時 .* が未来です", result.stderr, re.M)] == [3, 5]
    assert _statuses(app, "1000000000001", "1000000000003") == {"1000000000001": None, "1000000000003": None}
    records = [{"card_identifier": "1000000000005", "status": "lost", "occurred_at": "2026-11-29"},
               {"card_identifier": "1000000000006", "status": "stolen", "occurred_at": later}]
    bad_json = import_status(app, tmp_path, json_feed("f2", records), name="feed.json")
    assert bad_json.returncode == 1 and "2件目: 発生日時" in bad_json.stderr and "1件目" not in bad_json.stderr
    # The future row would otherwise have frozen the card: a true change the next day must still apply.
    assert import_status(app, tmp_path, csv_feed(f"1000000000002,lost,,{soon}"), "--batch-id", "f3").returncode == 0
    assert import_status(app, tmp_path, csv_feed("1000000000002,active,,2099-01-01"),
                         "--batch-id", "f4").returncode == 1
    assert _statuses(app, "1000000000002") == {"1000000000002": "lost"}
    assert [a for a, _, _ in log_entries(app)] == ["status_feed_rejected", "status_feed_rejected",
                                                   "status_feed_imported", "status_feed_rejected"]


def test_a_file_that_cannot_be_read_is_reported_as_the_file_not_line_zero(tmp_path: Path) -> None:
    app = _app(tmp_path)
    cp932 = csv_feed("1000000000001,lost,,2026-11-29").replace("card_identifier", "カードFID").encode("cp932")
    result = import_status(app, tmp_path, cp932, "--batch-id", "e1")
    assert result.returncode == 1 and "UTF-8 ではないため読めません" in result.stderr and "行目" not in result.stderr
    for content in ("{not json", '{"records": 5}'):
        result = import_status(app, tmp_path, content, "--batch-id", "e2", name="feed.json")
        assert result.returncode == 1 and "JSON" in result.stderr and "0件目" not in result.stderr, result.stderr
    assert [a for a, _, _ in log_entries(app)] == ["status_feed_rejected"] * 3
