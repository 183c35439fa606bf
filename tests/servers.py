"""Real servers for tests: `flask --app app` commands, gunicorn and nginx on free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def instance_env(instance: Path, **extra: str) -> dict[str, str]:
    """The environment of a server or command using ``instance`` (no OPAUTH_* leaks from outside)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPAUTH_")}
    env.update(OPAUTH_INSTANCE_DIR=str(instance), **extra)
    return env


def flask_cli(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "flask"), "--app", "app", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _wait_for_port(proc: subprocess.Popen[str], port: int, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text() if log and log.exists() else (proc.stdout.read() if proc.stdout else "")
            raise RuntimeError(f"{what} exited early: {output}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not listen on port {port}")


@contextmanager
def gunicorn(env: dict[str, str], port: int) -> Iterator[subprocess.Popen[str]]:
    """gunicorn with config/gunicorn.conf.py, one worker, on 127.0.0.1:port."""
    env = dict(env, OPAUTH_BIND=f"127.0.0.1:{port}", OPAUTH_WORKERS="1")
    proc = subprocess.Popen([str(BIN / "gunicorn"), "--config", "config/gunicorn.conf.py"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(proc, port, "gunicorn")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def nginx_available() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


@contextmanager
def nginx(prefix: Path, **values: str) -> Iterator[subprocess.Popen[str]]:
    """nginx from config/nginx.conf.template, unprivileged, in the foreground, under ``prefix``."""
    binary = nginx_available()
    if binary is None:
        raise RuntimeError("nginx is not installed (scripts/system-deps.sh installs it)")
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    template = string.Template((ROOT / "config" / "nginx.conf.template").read_text())
    conf.write_text(template.safe_substitute(prefix=str(prefix), **values))
    port = int(values["listen"].rsplit(":", 1)[1])
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(proc, port, "nginx", prefix / "error.log")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
