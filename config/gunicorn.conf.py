"""gunicorn settings, from the same OPAUTH_* settings as the app (config/__init__.py).

Two ways to run it:
- `make run` (scripts/serve.py): ``OPAUTH_BIND=unix:<APP_SOCKET>``, plain HTTP behind nginx. The socket
  is created with umask 077 in a 0700 directory, so only the service user (and nginx's workers, which
  run as that user) can connect.
- alone on a TCP ``BIND``: HTTPS (TLS 1.2+, encrypted server key, optional client certificates), or
  plain HTTP with ``SERVE_TLS=false`` behind a TCP proxy named in TRUSTED_PROXIES.
"""

from __future__ import annotations

import ssl
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ca.keys import ensure_passphrase
from config import load_settings
from config.serving import tls_paths

_settings = load_settings()
_paths = tls_paths(Path(_settings["INSTANCE_DIR"]))

wsgi_app = "app:create_app()"
bind = [_settings["BIND"]]
workers = _settings["WORKERS"]
worker_class = "gthread"
threads = 4
_unix = _settings["BIND"].startswith("unix:")
# A gthread worker accepts every connection it can, so a few keep-alive clients could all land on one worker
# and leave the other core idle (`make bench` prints the busiest worker's share). On TCP each worker listens on
# a socket of its own (SO_REUSEPORT) and the kernel spreads connections across them. Behind nginx (the Unix
# socket; SO_REUSEPORT does not balance those) each proxied request is a new connection, so they spread anyway.
reuse_port = True
if _unix:
    _run_dir = Path(_settings["BIND"].removeprefix("unix:")).parent
    _run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _run_dir.chmod(0o700)
    umask = 0o077  # the socket file: 0600
if _settings["SERVE_TLS"] and not _unix:
    certfile = str(_paths["cert"])
    keyfile = str(_paths["key"])
    ca_certs = str(_paths["ca"])
accesslog = "-"
errorlog = "-"
control_socket_disable = True
# X-Forwarded-Proto (the https scheme behind nginx) is believed from the same peers as the application's proxy
# headers: always over the Unix socket (gunicorn trusts those), over TCP only from TRUSTED_PROXIES.
forwarded_allow_ips = _settings["TRUSTED_PROXIES"]



def on_starting(server: Any) -> None:
    """SO_REUSEPORT only when every listener is TCP, whatever bound them (settings or --bind).

    With it, each worker binds its listeners itself: a Unix socket would be removed and re-made by every
    worker, and an inherited descriptor cannot be re-bound.
    """
    if any(str(b).startswith(("unix:", "fd://")) for b in server.cfg.bind):
        server.cfg.set("reuse_port", False)


_context: ssl.SSLContext | None = None


def ssl_context(conf: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    """One context per worker: TLS 1.2+, the encrypted key opened with the instance passphrase.

    Client certificates are requested but optional at the TLS layer (password
    operators connect without one); the application decides what a route needs.
    """
    global _context
    if _context is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1")
        passphrase = ensure_passphrase(Path(_settings["INSTANCE_DIR"]), _settings["KEY_PASSPHRASE"])
        ctx.load_cert_chain(conf.certfile, conf.keyfile, password=passphrase)
        ctx.load_verify_locations(cafile=conf.ca_certs)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        _context = ctx
    return _context
