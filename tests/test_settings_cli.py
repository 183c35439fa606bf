"""`flask --app app settings` and the instance's settings across real processes (each command its own process)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from tests.helpers import BUSINESS, make_csr
from tests.servers import BIN, ROOT, flask_cli, instance_env

FIRST_PKI = "http://pki.one.example.jp"


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An instance initialised the way `make run` does, with a PKI URL given in the environment."""
    path = tmp_path_factory.mktemp("cli") / "instance"
    result = flask_cli(instance_env(path, OPAUTH_PKI_BASE_URL=FIRST_PKI), "init")
    assert result.returncode == 0, result.stderr
    return path


def issue(instance: Path, tmp_path: Path, name: str, **env: str) -> tuple[int, str, list[str]]:
    """Issue a business server certificate with the CLI; exit code, stderr and the certificate's PKI URLs."""
    csr = tmp_path / f"{name}.csr"
    csr.write_bytes(make_csr())
    out = tmp_path / f"{name}.pem"
    fields = [f"--{key.replace('_', '-')}={value}" for key, value in BUSINESS.items()]
    result = flask_cli(instance_env(instance, **env), "cert", "issue-business-server", *fields, "--csr", csr,
                       "--out", out)
    if result.returncode != 0:
        return result.returncode, result.stderr, []
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    cdp = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    aia = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    urls = [str(n.value) for p in cdp for n in (p.full_name or [])] + [str(d.access_location.value) for d in aia]
    return 0, result.stderr, urls


def test_a_command_without_the_variable_reads_the_instance_url(instance: Path, tmp_path: Path) -> None:
    result = flask_cli(instance_env(instance), "settings", "get", "PKI_BASE_URL")
    assert result.returncode == 0 and result.stdout.strip() == FIRST_PKI
    assert "source: instance" in result.stderr
    code, stderr, urls = issue(instance, tmp_path, "bare")
    assert code == 0, stderr
    assert urls and all(u.startswith(FIRST_PKI + "/pki/") for u in urls)


def test_a_command_with_another_url_cannot_issue(instance: Path, tmp_path: Path) -> None:
    env = {"OPAUTH_PKI_BASE_URL": "https://somewhere-else.example.jp"}
    code, stderr, _urls = issue(instance, tmp_path, "rogue", **env)
    assert code != 0
    assert "OPAUTH_PKI_BASE_URL=https://somewhere-else.example.jp differs" in stderr
    listed = flask_cli(instance_env(instance, **env), "settings", "list")
    assert "CONFLICT" in listed.stdout and "does not issue certificates" in listed.stderr
    rerun = flask_cli(instance_env(instance, **env), "init")  # `make run` with the other URL stops at once
    assert rerun.returncode == 2 and "OPAUTH_PKI_BASE_URL" in rerun.stderr
    # The same value as the instance's is no conflict.
    assert issue(instance, tmp_path, "same", OPAUTH_PKI_BASE_URL=FIRST_PKI + "/")[0] == 0


def test_set_checks_stores_and_audits(instance: Path, tmp_path: Path) -> None:
    env = instance_env(instance)
    refused = flask_cli(env, "settings", "set", "CERT_EXPIRY_WARNING_DAYS", "soon")
    assert refused.returncode == 2 and "整数を入力してください" in refused.stderr
    refused = flask_cli(env, "settings", "set", "DATABASE_URL", "sqlite://")
    assert refused.returncode == 2 and "環境変数で指定します" in refused.stderr
    done = flask_cli(env, "settings", "set", "CERT_EXPIRY_WARNING_DAYS", "45")
    assert done.returncode == 0 and done.stdout.strip() == "CERT_EXPIRY_WARNING_DAYS: 30 -> 45", done.stderr
    items = {i["key"]: i for i in json.loads(flask_cli(env, "settings", "list", "--json").stdout)}
    assert items["CERT_EXPIRY_WARNING_DAYS"]["value"] == 45
    assert items["CERT_EXPIRY_WARNING_DAYS"]["source"] == "instance"
    assert items["KEY_PASSPHRASE"]["value"] == "(empty)"  # generated and kept in the instance, never shown
    table = flask_cli(env, "settings", "list").stdout.splitlines()
    assert table[0] == "KEY\tVALUE\tSOURCE\tKEPT\tNOTE"
    assert flask_cli(env, "audit", "verify").returncode == 0


def test_a_changed_url_is_the_one_the_next_certificate_carries(instance: Path, tmp_path: Path) -> None:
    env = instance_env(instance)
    asked = subprocess.run([str(BIN / "flask"), "--app", "app", "settings", "set", "PKI_BASE_URL",
                            "http://pki.two.example.jp/"], cwd=ROOT, env=env, input="n\n", capture_output=True,
                           text=True, timeout=120)
    assert asked.returncode != 0 and "written into certificates" in asked.stdout
    done = flask_cli(env, "settings", "set", "PKI_BASE_URL", "http://pki.two.example.jp/", "--yes")
    assert done.returncode == 0, done.stderr
    code, stderr, urls = issue(instance, tmp_path, "after")
    assert code == 0, stderr
    assert all(u.startswith("http://pki.two.example.jp/pki/") for u in urls)
    # The variable `init` was given once now disagrees: a process started with it refuses to issue.
    assert issue(instance, tmp_path, "stale", OPAUTH_PKI_BASE_URL=FIRST_PKI)[0] != 0
    flask_cli(env, "settings", "set", "PKI_BASE_URL", FIRST_PKI, "--yes")  # back, for the other tests of the module


def test_markdown_prints_the_readme_table(instance: Path) -> None:
    result = flask_cli(instance_env(instance), "settings", "markdown")
    assert result.stdout.startswith("| variable | default | kept in | meaning |")
