"""操作ログ on screen and on the command line: a tenant's administrator reads its own 利用機関's entries, the admin
tenant every tenant's and whether the hash chain is intact; filters, pages, refusals and hostile queries; the
operators named as 業務内ID@利用機関 here and on the diagnosis and terminal screens."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select, update

from apdl import db, oplog
from apdl.emulator.stack import PcscStack
from apdl.models import OperationLog
from apdl.oplog_search import PAGE_SIZE
from apdl.residents import LOCAL_TZ
from tests.apdl.app.conftest import Opauth, login, submit

MINAMI, KITAMGR, ADMIN = "U-OP0601@minamiedo", "U-OP0702@kitaedo", "U-AD0001@apdlcenter"


ENGLISH = {"LC_ALL": "", "LC_MESSAGES": "", "LANG": "en_US.UTF-8"}  # the commands speak the shell's language
JAPANESE = {"LC_ALL": "", "LC_MESSAGES": "", "LANG": "ja_JP.UTF-8"}

def _page(client: FlaskClient, query: str = "") -> str:
    response = client.get(f"/oplog{query}")
    assert response.status_code == 200, (query, response.status_code, response.get_data(as_text=True)[-400:])
    return html.unescape(response.get_data(as_text=True))


def _column(page: str, name: str) -> list[str]:
    return re.findall(rf'<td class="{name}"[^>]*>(.*?)</td>', page, re.S)


def _ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="entry" id="entry-(\d+)">', page)]


def _register_terminal(client: FlaskClient, name: str, organization: str, tenant: str = "") -> None:
    form = {"name": name, "organization": organization, **({"tenant_code": tenant} if tenant else {})}
    assert submit(client, "/terminals", "/terminals", form).status_code == 302


def test_every_action_has_words_on_the_screen() -> None:
    assert set(oplog.Action) == set(oplog.ACTION_LABELS)
    assert oplog.action_label("no_longer_known") == "no_longer_known"


def test_a_tenant_reads_its_own_entries_and_the_admin_tenant_all_with_the_chain(opauth: Opauth,
                                                                                  apdl_app: Flask) -> None:
    minami, kitamgr, admin = (login(opauth, apdl_app, who) for who in ("minami", "kitamgr", "admin"))
    _register_terminal(minami, "minami-desk", "南江戸市")
    _register_terminal(kitamgr, "kita-desk", "北江戸市")

    own = _page(minami)
    assert set(_column(own, "actor")) == {MINAMI}  # its login and its terminal, nobody else's
    assert "端末登録" in _column(own, "action") and "ログイン" in _column(own, "action")
    assert KITAMGR not in own and "kitaedo" not in own and 'id="chain"' not in own  # no chain status for a tenant
    with apdl_app.app_context():
        login_detail = db.get_session().scalars(select(OperationLog.detail).where(
            OperationLog.action == "login", OperationLog.tenant_code == "minamiedo")).one()
    assert str(login_detail["sid"]) not in own and '"sid"' not in own  # kept in the log, not shown
    assert "acr" in "".join(_column(own, "detail"))  # the rest of the detail is
    assert _ids(own) == sorted(_ids(own), reverse=True)  # newest first
    kita_own = _page(kitamgr)
    assert set(_column(kita_own, "actor")) == {KITAMGR} and MINAMI not in kita_own
    assert _page(kitamgr, "?tenant=minamiedo").count('class="entry"') == 0  # another tenant's code finds nothing

    everything = _page(admin)
    assert {MINAMI, KITAMGR, ADMIN} <= set(_column(everything, "actor"))
    assert {"minamiedo", "kitaedo", "apdlcenter"} <= set(_column(everything, "tenant"))
    assert 'id="chain"' not in everything and 'id="chain-check"' in everything  # checked when asked, not per view
    assert 'id="chain-check"' not in own
    assert set(_column(_page(admin, "?tenant=kitaedo"), "actor")) == {KITAMGR}
    with apdl_app.app_context():
        entries = db.get_session().scalar(select(func.count()).select_from(OperationLog))
    intact = _page(admin, "/chain")
    assert "操作ログの連鎖（ハッシュ）は正常です" in intact and f"{entries} 件の記録を検証しました" in intact
    english = _page(admin, "?lang=en")
    assert "Terminal registered" in english and "Check the operation log's hash chain" in english
    assert "The operation log's hash chain is intact" in _page(admin, "/chain?lang=en")
    assert all(not re.search(r"\(|[0-9a-f]{16}", actor) for actor in _column(english, "actor"))  # no sub
    for tenant_manager in (minami, kitamgr):
        assert tenant_manager.get("/oplog/chain").status_code == 403  # the chain spans every tenant

    # the chain broken in the database (the one direct write: nothing in the product may change an entry)
    with apdl_app.app_context():
        session = db.get_session()
        victim = session.scalars(select(OperationLog.id).where(OperationLog.action == "terminal_registered",
                                                               OperationLog.tenant_code == "kitaedo")).one()
        session.execute(update(OperationLog).where(OperationLog.id == victim).values(target="terminal:999"))
        session.commit()
    broken = _page(admin, "/chain?lang=ja")
    assert f"ID {victim} の記録で一致しません" in broken and 'class="error chain-broken"' in broken
    assert 'id="chain"' not in _page(admin)  # the log itself still reads
    cli = apdl_app.test_cli_runner()
    verified = cli.invoke(args=["apdl", "oplog", "verify"], env=ENGLISH)
    assert verified.exit_code == 1 and f"broken at entry {victim}" in verified.output
    japanese = cli.invoke(args=["apdl", "oplog", "verify"], env=JAPANESE)
    assert japanese.exit_code == 1 and f"ID {victim} の記録で一致しません" in japanese.output


def test_removing_the_newest_entries_is_detected(opauth: Opauth, apdl_app: Flask) -> None:
    """Every entry links to the one before, so cutting the newest off leaves a chain that still links: only
    the head, written with each entry, shows the end is missing."""
    admin = login(opauth, apdl_app, "admin")
    cli = apdl_app.test_cli_runner()
    assert cli.invoke(args=["apdl", "oplog", "verify"], env=ENGLISH).exit_code == 0
    with apdl_app.app_context():  # the tamper: the newest entry deleted in the database
        session = db.get_session()
        newest = session.scalar(select(func.max(OperationLog.id)))
        session.execute(delete(OperationLog).where(OperationLog.id == newest))
        session.commit()
    page = _page(admin, "/chain")
    assert 'class="error chain-broken"' in page and "最新の記録が削除された可能性があります" in page
    assert "may have been removed" in _page(admin, "/chain?lang=en")
    verified = cli.invoke(args=["apdl", "oplog", "verify"], env=ENGLISH)
    assert verified.exit_code == 1 and "may have been removed" in verified.output


def test_filters_pages_and_the_command_line(opauth: Opauth, apdl_app: Flask) -> None:
    minami = login(opauth, apdl_app, "minami")
    _register_terminal(minami, "desk-0", "南江戸市")
    cli = apdl_app.test_cli_runner()
    for n in range(PAGE_SIZE):  # the command line registers the rest: 51 terminal entries in all
        result = cli.invoke(args=["apdl", "terminal", "register", "--tenant", "minamiedo", "--name", f"t{n:03d}",
                                  "--organization", "南江戸市"])
        assert result.exit_code == 0, result.output

    first = _page(minami)
    assert first.count('class="entry"') == PAGE_SIZE and "（1 / 2ページ）" in first
    older = re.search(r'id="older" href="([^"]+)"', first)
    assert older is not None
    second = _page(minami, older.group(1).replace("&amp;", "&").removeprefix("/oplog"))
    assert second.count('class="entry"') == 2 and "（2 / 2ページ）" in second  # the 51st terminal and the login
    assert not set(_ids(first)) & set(_ids(second)) and min(_ids(first)) > max(_ids(second))
    past = _page(minami, "?page=99")  # past the end: the last page, its 前へ link to the page before it
    assert _ids(past) == _ids(second) and "（2 / 2ページ）" in past and 'id="older"' not in past
    assert 'id="newer" href="/oplog?page=1"' in past
    assert _column(second, "action")[-1] == "ログイン"
    assert "コマンド（" in "".join(_column(first, "actor"))  # the CLI as コマンド（user）

    registered = _page(minami, "?action=terminal_registered&page=2")
    assert registered.count('class="entry"') == 1 and "（2 / 2ページ）" in registered
    assert 'href="/oplog?page=1&action=terminal_registered"' in registered  # the filter kept in the links
    logins = _page(minami, "?action=login")
    assert _column(logins, "action") == ["ログイン"] and _column(logins, "actor") == [MINAMI]
    target = _column(first, "target")[0]  # the newest terminal, e.g. terminal:51
    by_target = _page(minami, f"?q={target}")
    assert _column(by_target, "target") == [target]
    assert _page(minami, "?q=100%25").count('class="entry"') == 0  # % is a character, not a wildcard
    # _ is a character too (the terminal entries hold none; a login's detail keeps a random sid that may)
    assert _page(minami, "?action=terminal_registered&q=_").count('class="entry"') == 0

    today = datetime.now(LOCAL_TZ).date()
    assert _page(minami, f"?from={today}&to={today}").count('class="entry"') == PAGE_SIZE
    assert _page(minami, f"?to={today - timedelta(days=1)}").count('class="entry"') == 0
    assert _page(minami, f"?from={today + timedelta(days=1)}").count('class="entry"') == 0

    listed = cli.invoke(args=["apdl", "oplog", "list", "--tenant", "minamiedo", "--limit", "3"], env=ENGLISH)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 3 and all(line.split("\t")[2] == "minamiedo" for line in lines)
    assert [int(line.split("\t")[0]) for line in lines] == _ids(first)[:3]
    assert lines[0].split("\t")[3].startswith("command line (") and lines[0].split("\t")[4] == "terminal_registered"
    in_japanese = cli.invoke(args=["apdl", "oplog", "list", "--limit", "1"], env=JAPANESE).output.split("\t")
    assert in_japanese[3].startswith("コマンド（") and in_japanese[4] == "terminal_registered"
    everyone = cli.invoke(args=["apdl", "oplog", "list"]).output.splitlines()
    assert len(everyone) == PAGE_SIZE
    assert cli.invoke(args=["apdl", "oplog", "list", "--tenant", "Bad Code"]).exit_code == 2
    assert cli.invoke(args=["apdl", "oplog", "list", "--limit", "0"]).exit_code == 2
    verified = cli.invoke(args=["apdl", "oplog", "verify"], env=ENGLISH)
    assert verified.exit_code == 0 and "intact (52 entries)" in verified.output, verified.output
    assert "正常です（52件）" in cli.invoke(args=["apdl", "oplog", "verify"], env=JAPANESE).output


def test_only_ap_manage_reads_the_log_and_hostile_queries_are_a_400(opauth: Opauth, apdl_app: Flask) -> None:
    kita, reader = login(opauth, apdl_app, "kita"), login(opauth, apdl_app, "reader")
    for client in (kita, reader):  # ap.download / user.register only
        assert client.get("/oplog").status_code == 403
        assert 'href="/oplog"' not in client.get("/").get_data(as_text=True)
    assert apdl_app.test_client().get("/oplog").status_code == 302  # not logged in: to the login
    with apdl_app.app_context():
        refused = db.get_session().scalars(select(OperationLog).where(OperationLog.action == "refused")).all()
    assert {r.target for r in refused} == {"/oplog"} and len(refused) == 2

    minami = login(opauth, apdl_app, "minami")
    assert 'href="/oplog"' in minami.get("/").get_data(as_text=True)
    for query in ("page=0", "page=abc", "page=%00", "page=-1", "page=" + "9" * 7, "page=" + "9" * 40,
                  "from=2026-13-01", "from=%00", "from=99999-01-01", "to=0001-01-01", "from=2026-1-1",
                  "from=２０２６-０１-０１", "from=2026-12-02&to=2026-12-01", "action=nosuch", "action=%00",
                  "q=%00", "q=" + "x" * 101, "q=a%E2%80%AEb", "tenant=Bad%00"):
        response = minami.get(f"/oplog?{query}")
        assert response.status_code == 400, (query, response.status_code)
        message = re.search(r'<p class="error" id="message">(.*?)</p>', response.get_data(as_text=True))
        assert message is not None and any(w in message.group(1) for w in (
            "正しくありません", "指定してください", "終了日より後")), (query, message)
    for query in ("q=%FF", "q=%C3%28", "action=%E3%81", "tenant=%C0%AF"):  # not UTF-8: never searched as U+FFFD
        response = minami.get(f"/oplog?{query}")
        assert response.status_code == 400 and "UTF-8" in response.get_data(as_text=True), query
    assert minami.get("/oplog?q=%E5%8D%97").status_code == 200  # 南, percent-encoded UTF-8
    assert minami.get("/oplog?page=99999").status_code == 200  # past the last page: the last page
    assert minami.get("/oplog?unknown=1&q=").status_code == 200


@pytest.mark.pcsc
def test_diagnosis_and_terminal_screens_name_the_operator_not_the_sub(opauth: Opauth, apdl_app: Flask,
                                                                       card_stack: PcscStack) -> None:
    minami = login(opauth, apdl_app, "minami")
    response = submit(minami, "/diagnosis", "/diagnosis", {})
    assert response.status_code == 302, response.get_data(as_text=True)[-400:]
    run = html.unescape(minami.get(response.headers["Location"]).get_data(as_text=True))
    assert re.search(r'<dd id="actor">(.*?)</dd>', run).group(1) == MINAMI  # type: ignore[union-attr]
    history = html.unescape(minami.get("/diagnosis").get_data(as_text=True))
    assert _column(history, "actor") == [MINAMI]

    _register_terminal(minami, "desk-1", "南江戸市")
    listing = html.unescape(minami.get("/terminals").get_data(as_text=True))
    assert _column(listing, "registered-by") == [MINAMI]
    terminal = re.search(r"/terminals/(\d+)/disable", listing).group(1)  # type: ignore[union-attr]
    assert submit(minami, f"/terminals/{terminal}/disable", f"/terminals/{terminal}/disable",
                  {"confirm": "yes"}).status_code == 302
    assert submit(minami, "/terminals", f"/terminals/{terminal}/enable", {}).status_code == 302
    confirm = html.unescape(minami.get(f"/terminals/{terminal}/disable").get_data(as_text=True))
    assert re.search(r'<dd id="registered-by">([^（<]*)', confirm).group(1) == MINAMI  # type: ignore[union-attr]
    assert re.search(r'<dd id="changed-by">([^（<]*)', confirm).group(1) == MINAMI  # type: ignore[union-attr]
    with apdl_app.app_context():  # what the screens hid: the log keeps the pairwise sub beside the 業務内ID
        actor = db.get_session().scalars(select(OperationLog.actor).where(
            OperationLog.action == "terminal_registered")).one()
    assert actor.startswith(MINAMI + " (") and actor not in listing + confirm + run + history


def test_actors_other_than_operators_are_named_never_raw(apdl_app: Flask) -> None:
    from apdl.tenancy import actor_label

    with apdl_app.test_request_context("/?lang=ja"):
        assert actor_label("business:05 (図書館システム)") == "業務システム 05（図書館システム）"
        assert actor_label("terminal:desk-1") == "端末 desk-1"
        assert actor_label("terminal:") == actor_label("business:05") == actor_label("0f3a9c") == "-"
    with apdl_app.test_request_context("/?lang=en"):
        assert actor_label("business:05 (図書館システム)") == "business system 05 (図書館システム)"
        assert actor_label("terminal:desk-1") == "terminal desk-1"
