"""Real servers for tests: `flask --app app` commands, gunicorn, nginx and `make run`'s supervisor on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from config.serving import NginxSite, render_nginx_conf

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
    """gunicorn alone with config/gunicorn.conf.py, one worker, on 127.0.0.1:port (TLS unless the env says not)."""
    env = dict(env, OPAUTH_BIND=f"127.0.0.1:{port}", OPAUTH_WORKERS="1")
    # The server's log goes to a file, not a pipe: a pipe nobody reads fills up and blocks the server.
    with tempfile.TemporaryDirectory(prefix="gunicorn-log-") as logs:
        log = Path(logs) / "gunicorn.log"
        with log.open("w") as sink:
            proc = subprocess.Popen([str(BIN / "gunicorn"), "--config", "config/gunicorn.conf.py"], cwd=ROOT,
                                    env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for_port(proc, port, "gunicorn", log)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def nginx_available() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


@contextmanager
def nginx(site: NginxSite) -> Iterator[subprocess.Popen[str]]:
    """nginx from config/nginx.conf.template (rendered as `make run` does), unprivileged, in the foreground."""
    binary = nginx_available()
    if binary is None:
        raise RuntimeError("nginx is not installed (scripts/system-deps.sh installs it)")
    site.prefix.mkdir(parents=True, exist_ok=True)
    conf = site.prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(site))
    port = int(site.https_listen.rsplit(":", 1)[1])
    with (site.prefix / "nginx.out").open("w") as sink:  # a file, not a pipe nobody reads
        proc = subprocess.Popen([binary, "-p", str(site.prefix), "-c", str(conf)], stdout=sink,
                                stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(proc, port, "nginx", site.prefix / "error.log")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass(frozen=True)
class Served:
    """`make run`'s servers: HTTPS base URL, plain-HTTP PKI base URL, the supervisor process."""

    https: str
    http: str
    proc: subprocess.Popen[str]
    log: Path


def serve_env(instance: Path, **extra: str) -> dict[str, str]:
    """Default settings but free loopback ports: what `make run` would use on a machine of its own."""
    https_port, http_port = free_port(), free_port()
    return instance_env(instance, OPAUTH_BIND=f"127.0.0.1:{https_port}",
                        OPAUTH_PKI_HTTP_BIND=f"127.0.0.1:{http_port}",
                        OPAUTH_PUBLIC_BASE_URL=f"https://localhost:{https_port}", OPAUTH_WORKERS="1", **extra)


def start_serve(env: dict[str, str], log: Path) -> Served:
    """Start scripts/serve.py (the second half of `make run`) and wait until both ports answer."""
    https_port = int(env["OPAUTH_BIND"].rsplit(":", 1)[1])
    http_port = int(env["OPAUTH_PKI_HTTP_BIND"].rsplit(":", 1)[1])
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "serve.py")], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    for port in (https_port, http_port):
        _wait_for_port(proc, port, "scripts/serve.py", log)
    return Served(f"https://localhost:{https_port}", f"http://localhost:{http_port}", proc, log)


@contextmanager
def serve(env: dict[str, str], log: Path) -> Iterator[Served]:
    """scripts/serve.py for the duration of the block; stopped with Ctrl-C's signal."""
    served = start_serve(env, log)
    try:
        yield served
    finally:
        if served.proc.poll() is None:
            served.proc.send_signal(signal.SIGINT)
            served.proc.wait(timeout=60)
