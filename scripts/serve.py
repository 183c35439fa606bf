"""`make run`: gunicorn on a private Unix socket with nginx in front, started and stopped together.

nginx terminates TLS on BIND (sending opauth's CA names, handing any client certificate to the
application) and serves /pki/ over plain HTTP on PKI_HTTP_BIND; gunicorn listens only on
APP_SOCKET; `flask --app app pki worker` re-signs CRLs and OCSP answers before they fall due;
`flask --app app oidc logout-worker` sends the business systems' back-channel logout tokens as they
fall due (every LOGOUT_INTERVAL_SECONDS). Ctrl-C (SIGINT) or SIGTERM stops them all; if any exits,
the others are stopped too and the exit status says so. Every RENEW_CHECK_SECONDS, and at once on
SIGHUP, opauth's own TLS certificate is re-issued if it is due (SERVER_CERT_RENEW_DAYS, changed names) and nginx reloads
it. Every AUDIT_CHECKPOINT_SECONDS (and once at start) the audit log's head is signed into a checkpoint
outside the database (`flask --app app audit checkpoint`), so a later truncation is reported by
`audit verify`. Run after `flask --app app init` (the Makefile does both).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import load_settings  # noqa: E402 - after the path set-up above
from config.serving import NginxSite, app_socket_path, render_nginx_conf, upstream_for_socket  # noqa: E402

BIN = Path(sys.executable).parent
RENEW_CHECK_SECONDS = 6 * 3600
AUDIT_CHECKPOINT_SECONDS = 3600
LOGOUT_INTERVAL_SECONDS = 10


def _audit_checkpoint() -> None:
    """Sign the audit log's current head (a failure is reported, never fatal: serving goes on)."""
    result = subprocess.run([str(BIN / "flask"), "--app", "app", "audit", "checkpoint"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        print(f"serve: audit checkpoint failed: {(result.stderr or result.stdout).strip()[-500:]}",
              file=sys.stderr, flush=True)


def _renew_server_certificate() -> bool:
    """Re-issue opauth's TLS certificate if due, exactly as `init` does; True when a new one was written."""
    from app import create_app
    from bootstrap import ensure_tls_certificate
    from ca.authority import CaSettings
    from db import get_session

    app = create_app()
    try:
        with app.app_context():
            return ensure_tls_certificate(get_session(), CaSettings.from_config(app.config))
    finally:
        app.extensions["opauth.engine"].dispose()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if found is None:
        sys.exit("nginx is not installed: run `scripts/system-deps.sh nginx` (as root) or `apt-get install nginx`")
    return found


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def _tcp_answers(listen: str) -> bool:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "*"):  # noqa: S104 - a wildcard listener is reached over loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def _wait(ready: object, procs: list[subprocess.Popen[bytes]], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{what} exited while starting")
        if callable(ready) and ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start within 60 s")


def _stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _reload_if_renewed(nginx: subprocess.Popen[bytes], passphrase: str, passphrase_file: Path,
                       prefix: Path) -> None:
    """Renew the server certificate when due and have nginx (SIGHUP: graceful reload) serve the new one."""
    try:
        renewed = _renew_server_certificate()
    except Exception as exc:  # the service goes on with the current certificate
        print(f"serve: server certificate renewal failed: {exc}", file=sys.stderr, flush=True)
        return
    if not renewed:
        return
    if passphrase:
        _write_private(passphrase_file, passphrase)
    reloads = (prefix / "error.log").read_text().count("reconfiguring")
    nginx.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30  # the master reads the key (and its passphrase) while reconfiguring
    while time.monotonic() < deadline and (prefix / "error.log").read_text().count("reconfiguring") <= reloads:
        time.sleep(0.2)
    if passphrase:
        passphrase_file.unlink(missing_ok=True)
    print("serve: server certificate renewed; nginx reloaded", flush=True)


def main() -> int:
    """Start gunicorn, the PKI worker and nginx; return when one exits or on SIGINT/SIGTERM, having stopped all."""
    settings = load_settings()
    instance = Path(settings["INSTANCE_DIR"]).resolve()
    sock = app_socket_path(settings).resolve()
    _private_dir(sock.parent)
    if _socket_answers(sock):
        sys.exit(f"opauth is already running on {sock} (stop it first)")
    tls = instance / "tls"
    passphrase_file = instance / "keys" / "passphrase"
    if settings["KEY_PASSPHRASE"]:
        # nginx reads the key's passphrase from a file at start; it lives in the private run directory
        # only while nginx starts, then is removed.
        passphrase_file = sock.parent / "tls-passphrase"
        _write_private(passphrase_file, settings["KEY_PASSPHRASE"])
    prefix = _private_dir(instance / "nginx")
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(NginxSite(
        prefix=prefix, https_listen=settings["BIND"], pki_http_listen=settings["PKI_HTTP_BIND"],
        server_cert=tls / "server.pem", server_key=tls / "server.key",
        server_key_password_file=passphrase_file, client_ca=tls / "ca-bundle.pem",
        upstream=upstream_for_socket(sock))))

    # Own process groups: the terminal's Ctrl-C reaches only this supervisor, which stops both in order.
    gunicorn_env = dict(os.environ, OPAUTH_BIND=f"unix:{sock}", OPAUTH_SERVE_TLS="false")
    procs: list[subprocess.Popen[bytes]] = []
    names: list[str] = []
    stopping = False
    check_now = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping, check_now
        if signum == signal.SIGHUP:
            check_now = True
        else:
            stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        gunicorn = subprocess.Popen([str(BIN / "gunicorn"), "--config", str(ROOT / "config" / "gunicorn.conf.py")],
                                    cwd=ROOT, env=gunicorn_env, start_new_session=True)
        procs.append(gunicorn)
        names.append("gunicorn")
        _wait(lambda: _socket_answers(sock), procs, "gunicorn")
        # CRLs and OCSP answers re-signed before they fall due, whether or not anyone fetches them.
        worker = subprocess.Popen([str(BIN / "flask"), "--app", "app", "pki", "worker"], cwd=ROOT,
                                  env=gunicorn_env, start_new_session=True)
        procs.append(worker)
        names.append("pki worker")
        # Back-channel logouts reach the business systems within seconds of being owed (never in a request).
        procs.append(subprocess.Popen([str(BIN / "flask"), "--app", "app", "oidc", "logout-worker",
                                       "--interval", str(LOGOUT_INTERVAL_SECONDS)], cwd=ROOT, env=gunicorn_env,
                                      start_new_session=True))
        names.append("logout worker")
        # -e: nginx's own log from the first moment (the compiled-in /var/log/nginx is not ours to write).
        nginx = subprocess.Popen([_nginx_binary(), "-p", str(prefix), "-e", str(prefix / "error.log"),
                                  "-c", str(conf)], cwd=prefix, start_new_session=True)
        procs.append(nginx)
        names.append("nginx")
        checks = [settings["BIND"]] + ([settings["PKI_HTTP_BIND"]] if settings["PKI_HTTP_BIND"] else [])
        _wait(lambda: all(_tcp_answers(c) for c in checks), procs,
              f"nginx (see {prefix / 'error.log'})")
    except RuntimeError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        for proc in reversed(procs):
            _stop(proc, signal.SIGTERM)
        return 1
    finally:
        if settings["KEY_PASSPHRASE"]:
            passphrase_file.unlink(missing_ok=True)
    if not stopping:  # a Ctrl-C while starting skips the banner and stops at once
        print(f"opauth: {settings['PUBLIC_BASE_URL']}/ (HTTPS on {settings['BIND']}); "
              f"PKI: {settings['PKI_BASE_URL']}/pki/ ; Ctrl-C stops", flush=True)
    next_check = time.monotonic() + RENEW_CHECK_SECONDS
    next_checkpoint = time.monotonic()
    while not stopping and all(p.poll() is None for p in procs):
        if check_now or time.monotonic() >= next_check:
            check_now, next_check = False, time.monotonic() + RENEW_CHECK_SECONDS
            _reload_if_renewed(procs[-1], settings["KEY_PASSPHRASE"], passphrase_file, prefix)
        if time.monotonic() >= next_checkpoint:
            next_checkpoint = time.monotonic() + AUDIT_CHECKPOINT_SECONDS
            _audit_checkpoint()
        time.sleep(0.5)
    failed = [] if stopping else [name for name, p in zip(names, procs, strict=True) if p.poll() is not None]
    for proc in reversed(procs):  # nginx first, then the workers and gunicorn (all stop fast on SIGTERM)
        _stop(proc, signal.SIGTERM)
    if failed:
        print(f"serve: {' and '.join(failed)} exited; stopped everything",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
