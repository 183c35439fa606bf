"""CLI list commands: a header line over tab-separated rows, or ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

from flask import Flask
from flask.testing import FlaskCliRunner

from tests.helpers import BUSINESS, make_csr


def _setup(runner: FlaskCliRunner, tmp_path: Path) -> str:
    assert runner.invoke(args=["tenant", "create", "--code", "higashi", "--name", "東市"]).exit_code == 0
    csr = tmp_path / "server.csr"
    csr.write_bytes(make_csr())
    args = ["cert", "issue-business-server", "--csr", str(csr), "--out", str(tmp_path / "server.pem")]
    for key, value in BUSINESS.items():
        args += [f"--{key.replace('_', '-')}", value]
    issued = runner.invoke(args=args)
    assert issued.exit_code == 0, issued.output
    assert runner.invoke(args=["tenant", "joint-use", "05", "higashi"]).exit_code == 0
    ssl = runner.invoke(args=["ssl", "issue", "--tenant", "higashi", "--terminal", "madoguchi-01",
                              "--host", "madoguchi-01.city.example.jp", "--p12-out", str(tmp_path / "t.p12"),
                              "--out", str(tmp_path / "t.pem")])
    assert ssl.exit_code == 0, ssl.output
    return ssl.stderr.split("issued serial ")[1].split()[0]


def _table(output: str) -> list[dict[str, str]]:
    header, *lines = output.splitlines()
    columns = header.split("\t")
    rows = [line.split("\t") for line in lines]
    assert all(len(r) == len(columns) for r in rows), output
    return [dict(zip(columns, r, strict=True)) for r in rows]


def test_list_commands_print_a_header_and_json(sqlite_app: Flask, tmp_path: Path) -> None:
    runner = sqlite_app.test_cli_runner()
    ssl_serial = _setup(runner, tmp_path)

    tenants = _table(runner.invoke(args=["tenant", "list"]).stdout)
    higashi = next(t for t in tenants if t["code"] == "higashi")
    assert higashi["name"] == "東市" and higashi["joint_use"] == "05"
    as_json = json.loads(runner.invoke(args=["tenant", "list", "--json"]).stdout)
    assert {"code": "higashi", "joint_use": ["05"], "kind": "municipality", "name": "東市"}.items() <= next(
        t for t in as_json if t["code"] == "higashi").items()

    systems = _table(runner.invoke(args=["business-system", "list"]).stdout)
    assert systems == [{"business_id": "05", "name": BUSINESS["name"], "top_url": BUSINESS["top_url"]}]
    assert json.loads(runner.invoke(args=["business-system", "list", "--json"]).stdout)[0]["business_id"] == "05"

    certificates = _table(runner.invoke(args=["cert", "list", "--profile", "business_server"]).stdout)
    assert len(certificates) == 1 and certificates[0]["profile"] == "business_server"
    listed = json.loads(runner.invoke(args=["cert", "list", "--profile", "business_server", "--json"]).stdout)
    assert listed[0]["serial"] == certificates[0]["serial"] and listed[0]["not_after"].startswith("20")

    ssl = _table(runner.invoke(args=["ssl", "list"]).stdout)
    assert [(c["serial"], c["binding"]) for c in ssl] == [(ssl_serial, "madoguchi-01")]
    assert json.loads(runner.invoke(args=["ssl", "list", "--json"]).stdout)[0]["status"] == ssl[0]["status"]
