"""カードステータス on screen: what the feed page says when nothing was imported yet, when no file or a file it
cannot read or one too large is sent, the result after the redirect (a reload posts nothing), who imported each
batch in words a person reads, and counts in English in the right plural form."""

from __future__ import annotations

from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from flask import Flask, render_template
from flask.testing import FlaskClient

from apdl import db
from apdl.app import create_app
from apdl.cardstatus import FeedState
from apdl.diagnosis import describe
from apdl.permissions import Permission
from apdl.tenancy import Operator
from tests.apdl.app.conftest import Opauth, csrf, login
from tests.apdl.app.status_feed import csv_feed, import_status, log_entries


def _upload(client: FlaskClient, content: bytes | None, batch_id: str, name: str = "feed.csv",
            lang: str = "?lang=ja") -> tuple[int, str, str]:
    """Post the feed form as the page offers it; (status, body, Location)."""
    token = csrf(client.get("/card-status").get_data(as_text=True))
    data: dict[str, object] = {"csrf_token": token, "batch_id": batch_id}
    if content is not None:
        data["feed"] = (BytesIO(content), name)
    response = client.post(f"/card-status/import{lang}", data=data, content_type="multipart/form-data")
    return response.status_code, response.get_data(as_text=True), response.headers.get("Location", "")


def test_the_feed_page_says_when_nothing_was_ever_imported(opauth: Opauth, apdl_app: Flask) -> None:
    admin = login(opauth, apdl_app, "admin")
    page = admin.get("/card-status").get_data(as_text=True)
    assert "カードステータスがまだ一度も取り込まれていません。" in page and "取込が遅れています" not in page
    assert '<span id="last-import">まだ取り込まれていません</span>' in page and "None" not in page
    english = admin.get("/card-status?lang=en").get_data(as_text=True)
    assert "has never been imported" in english and "Never imported" in english, english[-1500:]
    top = admin.get("/?lang=en").get_data(as_text=True)
    assert 'id="feed-stale"' in top and "has never been imported" in top and "None" not in top


def test_no_file_an_unreadable_file_and_a_file_too_large_are_said_plainly(opauth: Opauth, apdl_app: Flask) -> None:
    admin = login(opauth, apdl_app, "admin")
    status, body, _ = _upload(admin, None, "n1")
    assert status == 400 and "ファイルを選択してください。" in body and 'id="batches"' in body
    status, body, _ = _upload(admin, None, "n1", lang="?lang=en")
    assert status == 400 and "Choose a file." in body
    cp932 = csv_feed("1000000000001,lost,,2026-11-29").replace("card_identifier", "カードFID").encode("cp932")
    status, body, _ = _upload(admin, cp932, "n2")
    assert status == 400 and "UTF-8 ではないため読めません" in body and "行目" not in body
    status, body, _ = _upload(admin, b"{nope", "n3", name="feed.json")
    assert status == 400 and "JSON として読めません" in body and "件目" not in body
    big = csv_feed(*[f"{n:013d},lost,,2026-11-29" for n in range(1_000_000_000_000, 1_000_000_040_000)]).encode()
    assert len(big) > 1024 * 1024
    status, body, _ = _upload(admin, big, "n4")
    assert status == 413 and "ファイルが大きすぎます（上限 1 MiB）" in body and "import-status" in body
    assert 'id="batches"' in body  # the feed page itself, not a bare error
    status, body, _ = _upload(admin, big, "n4", lang="?lang=en")
    assert status == 413 and "The file is too large (the limit is 1 MiB)" in body
    assert [a for a, _, _ in log_entries(apdl_app) if a.startswith("status_feed")] == ["status_feed_rejected"] * 2


def test_an_import_redirects_with_its_result_and_a_reload_posts_nothing(opauth: Opauth, apdl_app: Flask,
                                                                        tmp_path: Path) -> None:
    admin = login(opauth, apdl_app, "admin")
    status, _, location = _upload(admin, csv_feed("1000000000001,lost,,2026-11-29").encode(), "r1")
    assert status == 302 and location == "/card-status"
    page = admin.get(location).get_data(as_text=True)
    assert '<p id="import-result">バッチ r1 を取り込みました（1件、変更 1件）。</p>' in page
    again = admin.get(location).get_data(as_text=True)  # the reload: a GET, the message shown once
    assert 'id="import-result"' not in again
    status, _, location = _upload(admin, csv_feed("1000000000001,lost,,2026-11-29").encode(), "r1")
    assert status == 302
    assert "バッチ r1 は取込済みです。何も変更していません。" in admin.get(location).get_data(as_text=True)
    status, _, _ = _upload(admin, csv_feed("1000000000001,lost,,2026-11-29", "1000000000002,lost,,2026-11-29")
                           .encode(), "r2", lang="?lang=en")
    assert status == 302
    assert "Batch r2 imported (2 rows, 1 changed)." in admin.get("/card-status").get_data(as_text=True)
    _upload(admin, csv_feed("1000000000003,lost,,2026-11-29").encode(), "r3", lang="?lang=en")
    assert "Batch r3 imported (1 row, 1 changed)." in admin.get("/card-status").get_data(as_text=True)
    assert [a for a, _, _ in log_entries(apdl_app) if a.startswith("status_feed")] == [
        "status_feed_imported", "status_feed_repeated", "status_feed_imported", "status_feed_imported"]

    assert import_status(apdl_app, tmp_path, csv_feed("1000000000004,lost,,2026-11-29"), "--batch-id",
                         "c1").returncode == 0
    page = admin.get("/card-status?lang=ja").get_data(as_text=True)
    importers = [cell.split("<")[0] for cell in page.split('class="importer">')[1:]]
    assert importers[0].startswith("コマンド（") and importers[0].endswith("）"), importers
    in_business_id = admin.get("/").get_data(as_text=True).split('id="in-business-id">')[1].split("<")[0]
    assert importers[1:] == [f"{in_business_id}@apdlcenter"] * 3 and "AD0001" in in_business_id
    session_cookie = admin.get_cookie("apdl_session")
    assert session_cookie is not None
    with apdl_app.app_context():
        from apdl.models import OperatorSession

        session_ids = [s.id for s in db.get_session().query(OperatorSession)]
        subs = [s.sub for s in db.get_session().query(OperatorSession)]
    assert session_ids and not any(i in page for i in session_ids)
    assert not any(s[:16] in page for s in subs)  # the pairwise sub stays in the operation log


def test_the_stale_alert_counts_hours_in_the_right_plural_form(tmp_path: Path) -> None:
    app = create_app({"INSTANCE_DIR": str(tmp_path / "apdl"), "ADMIN_TENANT": "apdlcenter"})
    operator = Operator(session_id="s", sub="x", sid="x", name="南 花子", tenant_code="minami", tenant_name="南市",
                        in_business_id="MI0001", permissions=frozenset(), is_admin_tenant=False)
    at = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    for hours, words in ((1, "for 1 hour or more (last import 2026-11-29 10:00 JST)"), (2, "for 2 hours or more")):
        with app.test_request_context("/?lang=en"):
            page = render_template("top.html", operator=operator, Permission=Permission, max_age=hours,
                                   feed=FeedState(at, "b1", stale=True))
        assert words in page, page[-800:]
    with app.test_request_context("/?lang=en"):
        assert describe({"code": "apps", "params": {"count": 1, "aids": "A1"}}) == "1 card AP (A1)"
        assert describe({"code": "apps", "params": {"count": 2, "aids": "A1, A2"}}) == "2 card APs (A1, A2)"
        assert describe({"code": "recent", "params": {"count": 1}}) == "1 operation by this organisation"
        assert describe({"code": "pin_left", "params": {"name": "P", "n": 1}}) == "PIN of P: 1 try left"
        assert describe({"code": "free", "params": {"area": "extended", "free": 512, "apps": 1}}) == (
            "Extended area: 512 bytes free, 1 card AP")
    app.extensions[db.ENGINE_KEY].dispose()
