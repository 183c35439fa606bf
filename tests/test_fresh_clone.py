"""First steps on a fresh clone: `make init` (what `make run` does before serving) leaves git clean,
and the bootstrap administrator's one-time password stays out of the output.

The clone is of the committed HEAD: uncommitted changes are not what a fresh clone gets."""

from __future__ import annotations

import os
import pty
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _clone(tmp_path: Path) -> Path:
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(ROOT), "rev-parse"],
                                                     capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    return clone


def _make_init(clone: Path) -> subprocess.CompletedProcess[str]:
    """`make init` in the clone with this test's virtualenv, whose installation is taken as done."""
    venv = sys.prefix
    # Under `make test` the outer make's flags and jobserver must not leak into this one.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OPAUTH_") and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return subprocess.run(["make", "--no-print-directory", "-C", str(clone), "init", f"VENV={venv}",
                           "-o", f"{venv}/.installed", "-o", f"{venv}/bin/python"],
                          env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_make_init_on_a_fresh_clone_leaves_git_status_clean_and_the_password_in_a_0600_file(
        tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    result = _make_init(clone)
    assert result.returncode == 0, result.stdout + result.stderr

    status = subprocess.run(["git", "-C", str(clone), "status", "--porcelain"], capture_output=True, text=True,
                            check=True).stdout
    assert status == "", f"make init changed tracked files or left untracked ones:\n{status}"

    password_file = clone / "instance" / "initial-admin-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 12
    # stdout is not a terminal here (a log file, the journal): only where the password is.
    assert password not in result.stdout + result.stderr
    assert str(password_file) in result.stdout

    again = _make_init(clone)  # the second `make run` reuses the instance and still changes nothing
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Bootstrap administrator" not in again.stdout
    assert password_file.exists()  # not yet changed: still needed

    # The first-login change without a browser; the next `make run` then removes the spent file.
    new_password = "Fresh-Clone-Setup-2026"
    changed = subprocess.run([f"{sys.prefix}/bin/flask", "--app", "app", "operator", "change-password", "admin"],
                             cwd=clone, input=f"{password}\n{new_password}\n{new_password}\n", capture_output=True,
                             text=True, timeout=120,
                             env={k: v for k, v in os.environ.items() if not k.startswith("OPAUTH_")})
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert _make_init(clone).returncode == 0
    assert not password_file.exists()
    assert subprocess.run(["git", "-C", str(clone), "status", "--porcelain"], capture_output=True, text=True,
                          check=True).stdout == ""


def test_init_on_a_terminal_shows_the_one_time_password(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPAUTH_")}
    env.update(OPAUTH_INSTANCE_DIR=str(instance), PYTHONDONTWRITEBYTECODE="1")
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run([f"{sys.prefix}/bin/flask", "--app", "app", "init"], cwd=ROOT, env=env,
                              stdout=secondary, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=300)
        os.close(secondary)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the terminal is closed once everything was read
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(primary)
    assert proc.returncode == 0, proc.stderr
    password = (instance / "initial-admin-password").read_text().strip()
    assert password in output.decode()


def _pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements or lock file (following ``-r``), names normalised."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(_pins(path.parent / line[3:].strip()))
            continue
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return pins


@pytest.mark.parametrize("stem", ["requirements", "requirements-dev"])
def test_lock_file_pins_every_requirement_as_stated_and_with_hashes(stem: str) -> None:
    wanted = _pins(ROOT / f"{stem}.txt")
    lock = ROOT / f"{stem}.lock"
    locked = _pins(lock)
    stale = {name: (version, locked.get(name)) for name, version in wanted.items() if locked.get(name) != version}
    assert not stale, f"{lock.name} is out of date (run `make lock`): {stale}"
    blocks = re.split(r"\n(?=[a-z0-9])", lock.read_text().split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    assert set(_pins(ROOT / "requirements.lock").items()) <= set(_pins(ROOT / "requirements-dev.lock").items())
