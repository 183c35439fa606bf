"""An API token used the way a renewal script uses it: curl over HTTPS against the real gunicorn."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.helpers import business_payload, make_csr, run
from tests.servers import flask_cli, free_port, gunicorn, instance_env

NEW_PASSWORD = "Script-Owner-Password-2026"


def _curl(instance: Path, url: str, *args: str) -> tuple[int, dict[str, object]]:
    result = run("curl", "-sS", "--cacert", str(instance / "tls" / "ca-bundle.pem"), "-o", "-",
                 "-w", "\n%{http_code}", *args, url)
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body) if body.strip().startswith("{") else {}


def test_script_issues_with_a_token_over_https_until_it_is_revoked(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    env = instance_env(instance, OPAUTH_ARGON2_TIME_COST="1", OPAUTH_ARGON2_MEMORY_KIB="8192")
    init = flask_cli(env, "init")
    assert init.returncode == 0, init.stderr
    found = re.search(r"one-time password is in (\S+)", init.stdout)
    assert found, init.stdout
    one_time = Path(found.group(1)).read_text().strip()
    request = tmp_path / "request.json"
    request.write_text(json.dumps(business_payload(make_csr())))
    port = free_port()
    base = f"https://localhost:{port}/api/v1"
    with gunicorn(env, port):
        # The bootstrap administrator changes the one-time password first: until then no token is made.
        refused = flask_cli(env, "tokens", "create", "system", "admin", "--name", "renewal",
                            "--scope", "business_server_certificates.issue")
        assert refused.returncode != 0
        status, _body = _curl(instance, f"{base}/me/password", "-u", f"admin@system:{one_time}",
                              "-H", "Content-Type: application/json",
                              "-d", json.dumps({"new_password": NEW_PASSWORD}))
        assert status == 200
        # The administrator registers the business system; the renewal token only issues for it.
        system = {k: v for k, v in json.loads(request.read_text()).items() if k != "csr"}
        status, _body = _curl(instance, f"{base}/business-systems/05", "-X", "PUT",
                              "-u", f"admin@system:{NEW_PASSWORD}", "-H", "Content-Type: application/json",
                              "-d", json.dumps(system))
        assert status == 201, _body
        made = flask_cli(env, "tokens", "create", "system", "admin", "--name", "renewal",
                         "--scope", "business_server_certificates.issue", "--days", "7")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip().splitlines()[-1]
        assert token.startswith("opa_") and token not in made.stderr

        bearer = ("-H", f"Authorization: Bearer {token}")
        status, issued = _curl(instance, f"{base}/business-server-certificates", *bearer,
                               "-H", "Content-Type: application/json", "-d", f"@{request}")
        assert status == 201, issued
        assert issued["issued_by"] == "admin" and issued["business_id"] == "05"
        status, again = _curl(instance, f"{base}/business-server-certificates", *bearer,
                              "-H", "Content-Type: application/json", "-d", f"@{request}")
        assert status == 201 and again["replaces_id"] == issued["id"]
        status, denied = _curl(instance, f"{base}/certificates", *bearer)
        assert status == 403 and denied["error"] == "forbidden"

        listed = flask_cli(env, "tokens", "list").stdout
        token_id = listed.split("\t", 1)[0]
        assert "renewal" in listed and token not in listed
        assert flask_cli(env, "tokens", "revoke", token_id).returncode == 0
        status, gone = _curl(instance, f"{base}/business-server-certificates", *bearer,
                             "-H", "Content-Type: application/json", "-d", f"@{request}")
        assert status == 401 and gone["error"] == "invalid_token" and gone["reason"] == "revoked"
