"""端末管理: a card agent works only for a terminal registered (and enabled) in the module, bound to one tenant.

The agent is ``python -m apdl.agent`` against the module's gunicorn over mutual TLS with a terminal certificate
opauth issued; terminals are registered through the screen and the CLI. An unregistered terminal is refused;
another tenant's operator cannot pair with the code a terminal shows (and cannot tell it from a wrong one);
a disabled terminal's agent stops at its next poll; a renewed certificate of the same terminal keeps working
unless the terminal is pinned to one certificate.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from apdl import db
from apdl.emulator.stack import PcscStack
from apdl.models import OperationLog
from apdl.views.terminals import PAGE_SIZE
from tests.apdl.app.conftest import Opauth, login, submit
from tests.apdl.app.test_agent import (  # noqa: F401 - agent_world is a fixture
    Agent,
    TerminalCert,
    _post,
    _terminal_cert,
    agent_world,
    register_terminal,
)
from tests.helpers import make_csr


def _log(app: Flask, action: str) -> list[OperationLog]:
    with app.app_context():
        return list(db.get_session().scalars(select(OperationLog).where(OperationLog.action == action)
                                             .order_by(OperationLog.id)))


def _terminal_id(client, name: str, tenant: str = "") -> int:  # type: ignore[no-untyped-def]
    """The id of the terminal ``name`` (of ``tenant``, on the admin tenant's list) on the 端末管理 screen."""
    page = client.get("/terminals").get_data(as_text=True)
    for row in re.findall(r'<tr class="terminal">(.*?)</tr>', page, re.S):
        if f'<td class="name">{name}</td>' in row and (not tenant or f"<td>{tenant}</td>" in row):
            found = re.search(r"/terminals/(\d+)/(?:disable|enable)", row)
            assert found is not None, row
            return int(found.group(1))
    raise AssertionError(f"{name} is not listed: {page[-800:]}")


def _renewed(opauth: Opauth, tmp: Path, cert: TerminalCert) -> TerminalCert:
    """再発行 at opauth (same terminal, new key): the old certificate is revoked as superseded."""
    from tests.apdl.app.conftest import _key

    key_path = tmp / "renewed.key"
    (tmp / "renewed.csr").write_bytes(make_csr(_key(key_path)))
    opauth.cli("ssl", "reissue", cert.serial, "--csr", tmp / "renewed.csr", "--out", tmp / "renewed.pem")
    return TerminalCert(tmp / "renewed.pem", key_path, "")


@pytest.mark.pcsc
def test_only_a_registered_terminal_of_the_operators_tenant_serves_it(
        opauth: Opauth, agent_world: Flask, card_stack: PcscStack, tmp_path: Path) -> None:  # noqa: F811
    app = agent_world
    cert = _terminal_cert(opauth, tmp_path, "terminal21")  # 南江戸市's terminal at opauth
    status, answer = _post(opauth, cert, "/agent/pair", {})
    assert status == 403 and "登録されていない端末です" in str(answer["error"])
    refused = _log(app, "terminal_refused")[-1]
    assert refused.detail["reason"] == "not registered" and refused.detail["terminal"] == "南江戸市 / terminal21"
    assert "OU=terminal terminal21" in refused.detail["certificate"]["subject"]  # which certificate was refused
    assert _post(opauth, cert, "/agent/poll", {"wait": 0})[0] == 403
    assert _post(opauth, cert, "/agent/respond", {"exchange": 1, "response": "9000"})[0] == 403

    # 南江戸市's administrator registers it on the screen (the organization defaults to its tenant's name)
    minami = login(opauth, app, "minami")
    page = minami.get("/terminals").get_data(as_text=True)
    assert 'name="organization" value="南江戸市"' in page and 'name="tenant_code"' not in page
    added = submit(minami, "/terminals", "/terminals", {"name": "terminal21", "organization": "南江戸市"})
    assert added.status_code == 302, added.get_data(as_text=True)[-300:]
    terminal_id = _terminal_id(minami, "terminal21")
    assert [e.tenant_code for e in _log(app, "terminal_registered")] == ["minamiedo"]

    agent = Agent(opauth, card_stack, cert, tmp_path / "agent.log")
    try:
        code = agent.code()
        kita = login(opauth, app, "kita")  # another tenant's operator, with the right code
        foreign = submit(kita, "/terminal", "/terminal", {"code": code})
        wrong = submit(kita, "/terminal", "/terminal", {"code": "00000000"})
        assert foreign.status_code == wrong.status_code == 400
        assert foreign.get_data(as_text=True) == wrong.get_data(as_text=True)  # no oracle: the same answer
        assert "なし" in kita.get("/terminal").get_data(as_text=True)
        reasons = [e.detail["reason"] for e in _log(app, "refused") if e.tenant_code == "kitaedo"]
        assert reasons == ["pairing code of a terminal not registered to this tenant",
                           "pairing code unknown, used or expired"]
        assert submit(minami, "/terminal", "/terminal", {"code": code}).status_code == 302  # its own tenant's
        assert "terminal21" in minami.get("/terminal").get_data(as_text=True)

        # disabling asks first, then stops the agent at its next poll and ends the pairing
        confirm = minami.get(f"/terminals/{terminal_id}/disable")
        assert confirm.status_code == 200 and "次の問い合わせで停止" in confirm.get_data(as_text=True)
        unconfirmed = submit(minami, f"/terminals/{terminal_id}/disable", f"/terminals/{terminal_id}/disable", {})
        assert unconfirmed.status_code == 400 and agent.proc.poll() is None
        disabled = submit(minami, f"/terminals/{terminal_id}/disable", f"/terminals/{terminal_id}/disable",
                          {"confirm": "yes"})
        assert disabled.status_code == 302
        assert agent.proc.wait(timeout=60) == 3, agent.output()
        assert "STOPPED" in agent.output()
        assert "なし" in minami.get("/terminal").get_data(as_text=True)
    finally:
        agent.stop()
    last = _log(app, "terminal_refused")[-1]
    assert (last.tenant_code, last.detail["reason"]) == ("minamiedo", "disabled")
    assert [e.tenant_code for e in _log(app, "terminal_disabled")] == ["minamiedo"]

    # enabled again; a renewed certificate of the same terminal works, the superseded one is revoked
    enabled = submit(minami, "/terminals", f"/terminals/{terminal_id}/enable", {})
    assert enabled.status_code == 302
    renewed = _renewed(opauth, tmp_path, cert)
    assert _post(opauth, renewed, "/agent/pair", {})[0] == 200
    assert _post(opauth, cert, "/agent/pair", {})[0] == 403
    # pinned to another certificate, the renewed one is refused; pinned to it, it works
    cli = app.test_cli_runner()
    pinned = cli.invoke(args=["apdl", "terminal", "pin", "--tenant", "minamiedo", "--name", "terminal21",
                              "--fingerprint", "ab" * 32])
    assert pinned.exit_code == 0, pinned.output
    status, answer = _post(opauth, renewed, "/agent/pair", {})
    assert status == 403 and "登録された証明書ではありません" in str(answer["error"])
    from cryptography import x509

    from apdl.clientcert import fingerprint
    own = fingerprint(x509.load_pem_x509_certificate(renewed.cert.read_bytes()))
    assert cli.invoke(args=["apdl", "terminal", "pin", "--tenant", "minamiedo", "--name", "terminal21",
                            "--fingerprint", own.upper()]).exit_code == 0
    assert _post(opauth, renewed, "/agent/pair", {})[0] == 200


def test_the_terminal_screen_is_per_tenant_and_refuses_bad_input(opauth: Opauth, apdl_app: Flask) -> None:
    app = apdl_app
    assert login(opauth, app, "kita").get("/terminals").status_code == 403  # no ap.manage
    minami, admin = login(opauth, app, "minami"), login(opauth, app, "admin")
    form = {"name": "desk-1", "organization": "南江戸市"}
    assert submit(minami, "/terminals", "/terminals", form).status_code == 302
    assert submit(minami, "/terminals", "/terminals", form).status_code == 409  # unique per tenant and name
    # the admin tenant manages every tenant's terminals
    assert 'name="tenant_code"' in admin.get("/terminals").get_data(as_text=True)
    kita_form = {"tenant_code": "kitaedo", "name": "desk-1", "organization": "北江戸市"}
    assert submit(admin, "/terminals", "/terminals", kita_form).status_code == 302
    kita_terminal = _terminal_id(admin, "desk-1", "kitaedo")
    listed = admin.get("/terminals").get_data(as_text=True)
    assert "minamiedo" in listed and "kitaedo" in listed
    assert "北江戸市" not in minami.get("/terminals").get_data(as_text=True)
    assert minami.get(f"/terminals/{kita_terminal}/disable").status_code == 404
    assert submit(minami, "/terminals", f"/terminals/{kita_terminal}/disable", {"confirm": "yes"}).status_code == 404
    assert submit(minami, "/terminals", "/terminals", {**kita_form, "name": "desk-2"}).status_code == 404
    assert admin.get(f"/terminals/{kita_terminal}/disable").status_code == 200

    for bad in ({"name": "a\x00b", "organization": "南江戸市"}, {"name": "x" * 64, "organization": "南江戸市"},
                {"name": "端末", "organization": "南江戸市"}, {"name": "", "organization": "南江戸市"},
                {"name": "desk-3", "organization": "南江戸\x00市"}, {"name": "desk-3", "organization": "南" * 201},
                {"name": "desk-3", "organization": ""},
                {"name": "desk-3", "organization": "南江戸市", "pinned_fingerprint": "xyz"},
                {"name": "desk-3", "organization": "南江戸市", "tenant_code": "Bad Code\x00"}):
        answer = submit(minami, "/terminals", "/terminals", bad)
        assert answer.status_code == 400, (bad, answer.status_code)
    for page in ("0", "abc", "%00", "9" * 7, "-1"):
        assert minami.get(f"/terminals?page={page}").status_code == 400, page
    assert minami.get("/terminals/99999999999/disable").status_code == 404

    # the CLI: a page and a half of terminals, disable and enable, errors on exit code 1
    cli = app.test_cli_runner()
    for n in range(PAGE_SIZE):
        result = cli.invoke(args=["apdl", "terminal", "register", "--tenant", "minamiedo", "--name", f"t{n:03d}",
                                  "--organization", "南江戸市"])
        assert result.exit_code == 0, result.output
    first, second = minami.get("/terminals").get_data(as_text=True), minami.get("/terminals?page=2")
    assert first.count('class="terminal"') == PAGE_SIZE and "?page=2" in first
    assert second.get_data(as_text=True).count('class="terminal"') == 1  # 51 terminals: desk-1, t000..t049
    assert "（2 / 2ページ）" in second.get_data(as_text=True)
    past = minami.get("/terminals?page=7").get_data(as_text=True)  # past the end: the last page, not an empty one
    assert past.count('class="terminal"') == 1 and "（2 / 2ページ）" in past
    assert cli.invoke(args=["apdl", "terminal", "disable", "--tenant", "minamiedo", "--name", "t001"]).exit_code == 0
    listing = cli.invoke(args=["apdl", "terminal", "list", "--tenant", "minamiedo"]).output
    assert "t001\t南江戸市\tdisabled" in listing and "t002\t南江戸市\tenabled" in listing
    assert cli.invoke(args=["apdl", "terminal", "enable", "--tenant", "minamiedo", "--name", "t001"]).exit_code == 0
    unknown = cli.invoke(args=["apdl", "terminal", "disable", "--tenant", "kitaedo", "--name", "t001"])
    assert unknown.exit_code == 1
    duplicate = cli.invoke(args=["apdl", "terminal", "register", "--tenant", "minamiedo", "--name", "t001",
                                 "--organization", "南江戸市"])
    assert duplicate.exit_code == 1 and "すでに登録されています" in duplicate.output
    actors = {e.actor.split(":")[0] for e in _log(app, "terminal_disabled") + _log(app, "terminal_enabled")}
    assert actors == {"cli"}
    assert len(_log(app, "terminal_registered")) == PAGE_SIZE + 2


def test_register_terminal_reads_the_certificate(opauth: Opauth, apdl_app: Flask, tmp_path: Path) -> None:
    cert = _terminal_cert(opauth, tmp_path, "terminal22", "kitaedo")
    output = register_terminal(apdl_app, cert, "kitaedo", "--pin")
    assert "利用機関 kitaedo の端末 terminal22 を登録しました（O=北江戸市、証明書を固定）。" in output
