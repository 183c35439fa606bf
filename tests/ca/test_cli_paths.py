"""CLI paths are checked before any work: a missing input or an unwritable output is exit 2 with a clear message,
never a traceback, and nothing is issued, committed or changed (a certificate issued and then not written would
be lost, with its PKCS#12 password or new passwords)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner

from tests.helpers import BUSINESS, make_csr


def _business_args(csr: Path | str, *extra: str) -> list[str]:
    args = ["cert", "issue-business-server", "--csr", str(csr), *extra]
    for key, value in BUSINESS.items():
        args += [f"--{key.replace('_', '-')}", value]
    return args


def _refused(result: Result, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


def _count(runner: FlaskCliRunner, *args: str) -> int:
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return len(json.loads(result.stdout))


@pytest.fixture
def runner(sqlite_app: Flask) -> FlaskCliRunner:
    return sqlite_app.test_cli_runner()


def test_business_server_certificate_paths_are_checked_before_issuing(runner: FlaskCliRunner,
                                                                      tmp_path: Path) -> None:
    csr = tmp_path / "server.csr"
    csr.write_bytes(make_csr())
    before = _count(runner, "cert", "list")
    _refused(runner.invoke(args=_business_args(tmp_path / "nonexistent.csr")), "--csr", "does not exist")
    _refused(runner.invoke(args=_business_args(tmp_path)), "--csr", "is a directory")
    _refused(runner.invoke(args=_business_args(csr, "--out", str(tmp_path / "no" / "dir" / "x.pem"))),
             "--out", "does not exist")
    _refused(runner.invoke(args=_business_args(csr, "--out", str(tmp_path))), "--out", "is a directory")
    assert _count(runner, "cert", "list") == before and _count(runner, "business-system", "list") == 0
    out = tmp_path / "server.pem"
    assert runner.invoke(args=_business_args(csr, "--out", str(out))).exit_code == 0
    assert out.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    _refused(runner.invoke(args=["cert", "show", "00", "--out", str(tmp_path / "no" / "x.pem")]), "--out")


def test_ssl_certificate_paths_are_checked_before_issuing(runner: FlaskCliRunner, tmp_path: Path) -> None:
    issue = ["ssl", "issue", "--tenant", "system", "--terminal", "madoguchi-01", "--host", "m1.city.example.jp"]
    missing = str(tmp_path / "no" / "dir" / "x")
    _refused(runner.invoke(args=[*issue, "--csr", missing]), "--csr", "does not exist")
    _refused(runner.invoke(args=[*issue, "--out", missing, "--p12-out", str(tmp_path / "k.p12")]),
             "--out", "does not exist")
    _refused(runner.invoke(args=[*issue, "--out", str(tmp_path / "c.pem"), "--p12-out", missing]),
             "--p12-out", "does not exist")
    assert _count(runner, "ssl", "list") == 0
    loose = tmp_path / "k.p12"
    loose.write_bytes(b"an older file anyone may read")
    loose.chmod(0o644)
    assert runner.invoke(args=[*issue, "--out", str(tmp_path / "c.pem"), "--p12-out", str(loose)]).exit_code == 0
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600 and loose.read_bytes().startswith(b"0\x82")  # the new key
    [serial] = [c["serial"] for c in json.loads(runner.invoke(args=["ssl", "list", "--json"]).stdout)]
    _refused(runner.invoke(args=["ssl", "reissue", serial, "--out", missing]), "--out", "does not exist")
    assert _count(runner, "ssl", "list") == 1  # the old one is still the active one


def test_operator_paths_are_checked_before_registering_or_changing(runner: FlaskCliRunner, tmp_path: Path) -> None:
    assert runner.invoke(args=["tenant", "create", "--code", "higashi", "--name", "東市"]).exit_code == 0
    register = ["operator", "register", "--tenant", "higashi", "--operator-id", "OP01", "--name", "東 一郎"]
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    _refused(runner.invoke(args=[*register, "--p12-out", str(taken)]), "--p12-out", "already exists")
    _refused(runner.invoke(args=[*register, "--csr", str(tmp_path / "none.csr")]), "--csr", "does not exist")
    _refused(runner.invoke(args=[*register, "--p12-out", str(tmp_path / "op.p12"),
                                 "--cert-out", str(tmp_path / "no" / "c.pem")]), "--cert-out", "does not exist")
    assert taken.read_text() == "keep me" and not (tmp_path / "op.p12").exists()
    # nothing was registered: OP01 is still free
    assert runner.invoke(args=[*register, "--p12-out", str(tmp_path / "op.p12")]).exit_code == 0
    audit_before = runner.invoke(args=["audit", "list", "--action", "operator.", "--json"]).stdout
    _refused(runner.invoke(args=["operator", "passwords", "--tenant", "higashi", "--out", str(taken), "OP01"]),
             "--out", "already exists")
    _refused(runner.invoke(args=["operator", "export", "--tenant", "higashi", "--out",
                                 str(tmp_path / "no" / "e.csv")]), "--out", "does not exist")
    _refused(runner.invoke(args=["operator", "issue-pending", "--tenant", "higashi", "--out-dir",
                                 str(taken / "sub")]), "--out-dir", "is not a directory")
    _refused(runner.invoke(args=["operator", "import", "--tenant", "higashi", str(tmp_path / "none.csv")]),
             "does not exist")
    assert runner.invoke(args=["audit", "list", "--action", "operator.", "--json"]).stdout == audit_before
    assert taken.read_text() == "keep me"


def test_audit_checkpoint_directory_is_checked_before_the_entry_is_committed(runner: FlaskCliRunner,
                                                                             tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    _refused(runner.invoke(args=["audit", "checkpoint", "--dir", str(blocker / "checkpoints")]),
             "--dir", "is not a directory")
    listed = runner.invoke(args=["audit", "list", "--action", "audit.checkpoint", "--json"])
    assert json.loads(listed.stdout) == []
