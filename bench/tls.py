"""Full mutual-TLS handshakes per server CPU: the default deployment (nginx in front of opauth) vs nginx alone.

Both nginx servers use the configuration ``make run`` renders (config/nginx.conf.template: TLS 1.2+, the
same certificate, ``ssl_verify_client optional_no_ca`` with opauth's CA names); in front, nginx proxies to
gunicorn on the Unix socket with config/gunicorn.conf.py; alone, the same server block answers ``return 200``
itself. The client is ``openssl s_time -new`` (a full handshake per connection, no session reuse) presenting a
client certificate, for a fixed time; the server CPU is read from /proc for nginx and gunicorn with their
workers. Two loads: handshakes only (connect, handshake, close) and a handshake plus one request
(``GET /pki/ca-bundle.pem``; nginx alone answers it with a fixed body).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
SECONDS = int(os.environ.get("TLS_SECONDS", "5"))


def _tree_ticks(pid: int) -> int:
    from bench.peers import _children, _cpu_ticks

    return _cpu_ticks(pid) + sum(_tree_ticks(child) for child in _children(pid))


def _client_cert(work: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench client")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    (work / "client.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (work / "client.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return work / "client.pem", work / "client.key"


def _s_time(port: int, cert: Path, key: Path, www: str | None) -> float:
    """Connections per second (full handshakes) that ``openssl s_time -new`` reports."""
    args = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(SECONDS),
            "-cert", str(cert), "-key", str(key)]
    if www:
        args += ["-www", www]
    out = subprocess.run(args, capture_output=True, text=True, timeout=SECONDS + 60, check=False).stdout
    match = re.search(r"(\d+) connections in (\d+) real seconds", out)
    if match is None:
        raise RuntimeError(f"s_time: {out[-400:]}")
    return int(match.group(1)) / max(1, int(match.group(2)))


def _measure(pids: list[int], port: int, cert: Path, key: Path, www: str | None) -> tuple[float, float]:
    """(handshakes per second, server CPU milliseconds per handshake)."""
    _s_time(port, cert, key, www)  # warm-up
    before = sum(_tree_ticks(p) for p in pids)
    rate = _s_time(port, cert, key, www)
    cpu = (sum(_tree_ticks(p) for p in pids) - before) / os.sysconf("SC_CLK_TCK")
    return rate, cpu * 1000 / max(1.0, rate * SECONDS)


def bench(work: Path) -> dict[str, tuple[float, float]]:
    from bench import peers
    from bench import run as own
    from config.serving import NginxSite, render_nginx_conf, upstream_for_socket

    instance = work / "tls-instance"
    own._prepare_instance(instance)
    env = own._env(instance)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    sock = work / "run" / "app.sock"
    password = work / "passphrase"
    password.write_text(env["OPAUTH_KEY_PASSPHRASE"])
    cert, key = _client_cert(work)
    results: dict[str, tuple[float, float]] = {}
    gunicorn = subprocess.Popen([str(BIN / "gunicorn"), "--config", "config/gunicorn.conf.py", "--log-level",
                                 "warning", "--access-logfile", "/dev/null"], cwd=ROOT,
                                env=dict(env, OPAUTH_BIND=f"unix:{sock}", OPAUTH_SERVE_TLS="false",
                                         OPAUTH_WORKERS="2"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while subprocess.run(["curl", "-sf", "-o", "/dev/null", "--unix-socket", str(sock),
                              "http://localhost/pki/ca-bundle.pem"], check=False).returncode != 0:
            if time.monotonic() > deadline or gunicorn.poll() is not None:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.3)
        time.sleep(2)  # every worker has loaded the app
        for label in ("in front", "alone"):
            prefix = work / f"nginx-{label.replace(' ', '-')}"
            prefix.mkdir()
            port = peers._free_port()
            tls = instance / "tls"
            conf = render_nginx_conf(NginxSite(
                prefix=prefix, https_listen=f"127.0.0.1:{port}", pki_http_listen="", server_cert=tls / "server.pem",
                server_key=tls / "server.key", server_key_password_file=password, client_ca=tls / "ca-bundle.pem",
                upstream=upstream_for_socket(sock)))
            conf = conf.replace(f"access_log {prefix}/access.log;", "access_log off;")
            if label == "alone":
                conf = re.sub(r"location / \{\n\s+proxy_pass.*?\n        \}",
                              'location / { return 200 "nginx alone\\n"; }', conf, count=1, flags=re.S)
            (prefix / "nginx.conf").write_text(conf)
            proc = subprocess.Popen([nginx, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 60
                while subprocess.run(["curl", "-sk", "-o", "/dev/null", f"https://127.0.0.1:{port}/pki/ca-bundle.pem"],
                                     check=False).returncode != 0:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        log = (prefix / "error.log").read_text()[-500:]
                        raise RuntimeError(f"nginx ({label}) did not start: {log}")
                    time.sleep(0.3)
                pids = [proc.pid] + ([gunicorn.pid] if label == "in front" else [])
                results[f"{label}, handshake only"] = _measure(pids, port, cert, key, None)
                results[f"{label}, handshake + GET /pki/ca-bundle.pem"] = _measure(
                    pids, port, cert, key, "/pki/ca-bundle.pem")
            finally:
                proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
    return results


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="opauth-tls-bench-"))
    try:
        for label, (rate, cpu) in bench(work).items():
            print(f"nginx {label}: {rate:,.0f} handshakes/s, {cpu:.2f} ms server CPU each")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
