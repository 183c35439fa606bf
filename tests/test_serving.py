"""`make run`'s path, end to end: `flask init` twice (idempotent), then gunicorn serving HTTPS to curl and openssl."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import BUSINESS, make_csr, run
from tests.servers import flask_cli, free_port, gunicorn, instance_env


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("served") / "instance"


@pytest.fixture(scope="module")
def first_init(instance: Path) -> str:
    result = flask_cli(instance_env(instance), "init")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def server(instance: Path, first_init: str) -> Iterator[str]:
    port = free_port()
    with gunicorn(instance_env(instance), port):
        yield f"https://localhost:{port}"


def test_first_init_writes_the_one_time_password_to_a_0600_file_not_to_the_log(instance: Path,
                                                                                 first_init: str) -> None:
    password_file = instance / "initial-admin-password"
    assert "CA hierarchy created" in first_init and str(password_file) in first_init
    assert password_file.stat().st_mode & 0o077 == 0
    assert password_file.read_text().strip() not in first_init  # stdout here is no terminal
    again = flask_cli(instance_env(instance), "init")
    assert again.returncode == 0, again.stderr
    assert "already present: reused" in again.stdout and "Bootstrap administrator" not in again.stdout
    keys = sorted(p.name for p in (instance / "keys").iterdir())
    assert len([k for k in keys if k.endswith(".key.pem") and "-ca-" in k]) == 2, keys  # no second CA
    assert all(p.stat().st_mode & 0o077 == 0 for p in (instance / "keys").iterdir())
    assert b"ENCRYPTED PRIVATE KEY" in (instance / "keys" / keys[0]).read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in (instance / "tls" / "server.key").read_bytes()


def test_https_is_served_and_verifies_against_the_ca_bundle(instance: Path, server: str) -> None:
    bundle = instance / "tls" / "ca-bundle.pem"
    result = run("curl", "-sS", "--fail", "--cacert", bundle, f"{server}/pki/ca-bundle.pem")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("BEGIN CERTIFICATE") == 2
    login = run("curl", "-sS", "--cacert", bundle, f"{server}/login")
    assert "操作者用ポータルメニューログイン" in login.stdout


def test_old_tls_versions_are_refused(instance: Path, server: str) -> None:
    host, port = server.removeprefix("https://").split(":")
    result = run("openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_1", "-servername", host)
    assert "Cipher is (NONE)" in result.stdout or result.returncode != 0
    ok = run("openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-servername", host,
             "-CAfile", instance / "tls" / "ca-bundle.pem")
    assert "Verify return code: 0 (ok)" in ok.stdout


def test_cli_issues_lists_and_shows_a_business_server_certificate(instance: Path, first_init: str,
                                                                    tmp_path: Path) -> None:
    env = instance_env(instance)
    csr = tmp_path / "certreq.pem"
    csr.write_bytes(make_csr())
    out = tmp_path / "cert.pem"
    args = ["cert", "issue-business-server", "--csr", csr, "--out", out, "--format", "chain.pem"]
    for field, value in BUSINESS.items():
        args += [f"--{field.replace('_', '-')}", value]
    result = flask_cli(env, *args)
    assert result.returncode == 0, result.stderr
    serial = result.stderr.split("issued serial ")[1].split()[0]
    verify = run("openssl", "verify", "-CAfile", instance / "tls" / "ca-bundle.pem", "-untrusted", out, out)
    assert verify.returncode == 0, verify.stderr
    listing = flask_cli(env, "cert", "list", "--profile", "business_server")
    assert serial in listing.stdout
    shown = flask_cli(env, "cert", "show", serial)
    assert shown.returncode == 0 and "BEGIN CERTIFICATE" in shown.stdout
    assert flask_cli(env, "business-system", "list").stdout.splitlines()[1].startswith("05\t")
    bad = tmp_path / "bad.csr"
    bad.write_bytes(b"junk")
    args[args.index(csr)] = bad
    refused = flask_cli(env, *args)
    assert refused.returncode == 2 and "error: not a CSR" in refused.stderr
    assert flask_cli(env, "cert", "show", "ffff").returncode == 2
    assert flask_cli(env, "audit", "verify").stdout.startswith("audit chain OK")
