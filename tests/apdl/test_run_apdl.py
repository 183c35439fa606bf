"""`make run-apdl` alone (scripts/apdl_demo.py, its second half): starts opauth's deployment and the module,
registered, from fresh instances; SIGTERM stops both, leaving no process behind; a second run reuses both
instances (the same operator, CA and certificates).

The script runs as a subprocess on free ports and temporary instance directories (the environment variables
it honours); its output goes to a file, read only when something fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apdl.emulator.stack import missing_parts
from tests.apdl.conftest import IN_CI
from tests.servers import ROOT, flask_cli, free_port, serve_env

START_SECONDS = 300


def _curl(url: str, ca: Path) -> tuple[str, str]:
    """Status code and redirect target of one GET (curl, opauth's CA trusted, no redirect followed)."""
    result = subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "10", "--cacert", str(ca),
                             "-w", "%{http_code} %{redirect_url}", url], capture_output=True, text=True, timeout=30,
                            check=False)
    code, _, location = result.stdout.partition(" ")
    return code, location


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_run_apdl_passes_the_users_apdl_settings_to_the_module_under_its_own_wiring(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("apdl_demo_env", ROOT / "scripts" / "apdl_demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    given = {"APDL_PAIRING_CODE_SECONDS": "20", "APDL_STATUS_FEED_MAX_AGE_HOURS": "48", "APDL_SESSION_HOURS": "2",
             "APDL_CLIENT_ID": "biz-99", "APDL_NOT_A_SETTING": "x", "PATH": "/bin"}
    env = demo.apdl_env(tmp_path, given)
    assert {k: env[k] for k in ("APDL_PAIRING_CODE_SECONDS", "APDL_STATUS_FEED_MAX_AGE_HOURS",
                                "APDL_SESSION_HOURS")} == {"APDL_PAIRING_CODE_SECONDS": "20",
                                                           "APDL_STATUS_FEED_MAX_AGE_HOURS": "48",
                                                           "APDL_SESSION_HOURS": "2"}
    assert env["APDL_CLIENT_ID"] == "biz-01"  # the demo's registration wins
    assert env["APDL_CLIENT_CERT"] == str(tmp_path / "client.pem")
    assert "APDL_NOT_A_SETTING" not in env and "PATH" not in env


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    missing = missing_parts()
    if missing:
        message = "PC/SC stack unavailable, missing: " + ", ".join(missing)
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    env = {k: v for k, v in serve_env(tmp_path / "opauth").items() if not k.startswith("APDL_")}
    env.update(APDL_INSTANCE_DIR=str(tmp_path / "apdl"), APDL_BIND=f"127.0.0.1:{free_port()}")
    return env


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The script's processes started by the test; whatever is still running at the end is stopped."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:  # the test failed before stopping it: stop everything it started
            family = _descendants(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pid in family:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _run(env: dict[str, str], log: Path, started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Start the script (output to ``log``) and wait until opauth and the module's login redirect answer."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "apdl_demo.py")], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    started.append(proc)
    opauth = env["OPAUTH_PUBLIC_BASE_URL"]
    module = f"https://localhost:{env['APDL_BIND'].rsplit(':', 1)[1]}"
    ca = Path(env["OPAUTH_INSTANCE_DIR"]) / "tls" / "ca-bundle.pem"
    deadline = time.monotonic() + START_SECONDS
    discovery = login = ("", "")
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"apdl_demo.py exited early ({proc.returncode}):\n{log.read_text()}"
        if ca.exists():
            discovery = _curl(f"{opauth}/oidc/.well-known/openid-configuration", ca)
            login = _curl(f"{module}/login", ca)
            if discovery[0] == "200" and login[0] == "302":
                break
        time.sleep(1)
    assert discovery[0] == "200", f"opauth did not answer: {discovery}\n{log.read_text()}"
    assert login[0] == "302" and login[1].startswith(f"{opauth}/oidc/"), f"{login}\n{log.read_text()}"
    assert "client_id=biz-01" in login[1]  # the module is registered as business system 01
    return proc


def _stop(env: dict[str, str], proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM the script; it exits 0 and every process it started is gone, both ports closed."""
    family = _descendants(proc.pid)
    assert len(family) >= 3  # opauth's supervisor with its children, the module's gunicorn, pcscd
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0, log.read_text()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in family):
        time.sleep(0.5)
    assert not [pid for pid in family if _alive(pid)], log.read_text()
    ca = Path(env["OPAUTH_INSTANCE_DIR"]) / "tls" / "ca-bundle.pem"
    assert _curl(f"{env['OPAUTH_PUBLIC_BASE_URL']}/oidc/.well-known/openid-configuration", ca)[0] == "000"
    assert _curl(f"https://localhost:{env['APDL_BIND'].rsplit(':', 1)[1]}/login", ca)[0] == "000"


def test_run_apdl_alone_serves_opauth_and_the_registered_module_sigterm_stops_both_and_a_rerun_reuses_them(
        demo_env: dict[str, str], started: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    _stop(demo_env, _run(demo_env, first_log, started), first_log)
    # operator APDL01 created; its one-time password goes to a 0600 file, never to a log that is not a terminal
    password_file = Path(demo_env["APDL_INSTANCE_DIR"]) / "APDL01-one-time-password"
    assert f"one-time password is in {password_file}" in first_log.read_text()
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 12 and password not in first_log.read_text()
    opauth_db, apdl_db = (Path(demo_env[k]) / f for k, f in (("OPAUTH_INSTANCE_DIR", "opauth.db"),
                                                             ("APDL_INSTANCE_DIR", "apdl.db")))
    for database in (opauth_db, apdl_db):
        assert database.stat().st_mode & 0o077 == 0, database  # personal data: the owner's only
    # the module's logout ends opauth's session too and comes back to the module's top (RP-initiated logout)
    client = json.loads(flask_cli(demo_env, "oidc", "client", "show", "01").stdout)
    module = f"https://localhost:{demo_env['APDL_BIND'].rsplit(':', 1)[1]}"
    assert client["post_logout_redirect_uris"] == [f"{module}/"], client
    # An administrator lets another municipality use the module too; a restart must keep that.
    for command in (("tenant", "create", "--code", "other-city", "--name", "他市"),
                    ("tenant", "joint-use", "01", "demo-city", "other-city")):
        assert flask_cli(demo_env, *command).returncode == 0
    ca_bundle = (Path(demo_env["OPAUTH_INSTANCE_DIR"]) / "tls" / "ca-bundle.pem").read_bytes()
    module_cert = (Path(demo_env["APDL_INSTANCE_DIR"]) / "tls" / "server.pem").read_bytes()

    _stop(demo_env, _run(demo_env, second_log, started), second_log)
    second = second_log.read_text()
    assert "one-time password" not in second  # the same operator, not a new one
    listed = json.loads(flask_cli(demo_env, "tenant", "list", "--json").stdout)
    assert {t["code"]: t["joint_use"] for t in listed}["other-city"] == ["01"]  # kept, not reset by the setup
    assert (Path(demo_env["OPAUTH_INSTANCE_DIR"]) / "tls" / "ca-bundle.pem").read_bytes() == ca_bundle
    assert (Path(demo_env["APDL_INSTANCE_DIR"]) / "tls" / "server.pem").read_bytes() == module_cert


def _agent_demo(env: dict[str, str], log: Path, started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Start `make run-apdl-agent`'s script (output to ``log``) and wait until the agent prints a pairing code."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "apdl_agent_demo.py")], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    started.append(proc)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and "PAIRING CODE" not in log.read_text():
        assert proc.poll() is None, f"apdl_agent_demo.py exited early ({proc.returncode}):\n{log.read_text()}"
        time.sleep(0.5)
    assert "PAIRING CODE" in log.read_text(), log.read_text()
    return proc


def test_run_apdl_agent_runs_the_agent_of_a_registered_demo_terminal_beside_run_apdl(
        demo_env: dict[str, str], started: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    env = {**demo_env, "APDL_CARD_TRANSPORT": "agent"}
    alone = subprocess.run([sys.executable, str(ROOT / "scripts" / "apdl_agent_demo.py")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert alone.returncode == 1 and "make run-apdl" in alone.stderr  # no module to talk to: says what to start
    demo_log = tmp_path / "demo.log"
    demo = _run(env, demo_log, started)
    assert "through the card agent" in demo_log.read_text()
    for run in (1, 2):  # the second run reuses the terminal's certificate and registration
        log = tmp_path / f"agent{run}.log"
        agent = _agent_demo(env, log, started)
        listed = subprocess.run([str(Path(sys.executable).parent / "flask"), "--app", "apdl.app", "apdl", "terminal",
                                 "list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert listed.stdout.count("demo-city\tdemo-terminal\tデモ市\tenabled") == 1, listed.stdout + listed.stderr
        family = _descendants(agent.pid)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0, log.read_text()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in family):
            time.sleep(0.5)
        assert not [pid for pid in family if _alive(pid)]  # the agent and the terminal's pcscd are gone
    assert demo.poll() is None  # the module keeps running
    _stop(env, demo, demo_log)
