"""The `make run` layout: nginx in front (TLS, client CA names, plain-HTTP /pki/), gunicorn behind a Unix socket.

Shared by ``scripts/serve.py`` (which starts both), ``config/gunicorn.conf.py``,
``operators/login/mtls.py`` (which trusts proxy headers only over that socket) and the tests.
"""

from __future__ import annotations

import getpass
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
_PKI_HTTP_BLOCK = re.compile(r"\n[ \t]*# BEGIN pki-http\n.*?# END pki-http\n", re.S)


def app_socket_path(settings: dict[str, Any]) -> Path:
    """The Unix socket nginx reaches gunicorn through (APP_SOCKET, or INSTANCE_DIR/run/app.sock)."""
    configured = str(settings.get("APP_SOCKET") or "")
    return Path(configured) if configured else Path(settings["INSTANCE_DIR"]) / "run" / "app.sock"


@dataclass(frozen=True)
class NginxSite:
    """What the nginx configuration needs; every path absolute."""

    prefix: Path  # nginx's pid, logs and temp files
    https_listen: str
    pki_http_listen: str  # empty: no plain-HTTP server
    server_cert: Path
    server_key: Path
    server_key_password_file: Path
    client_ca: Path  # its subjects are the acceptable client CA names nginx sends
    upstream: str  # "unix:/path/app.sock:" or "127.0.0.1:8000"
    server_name: str = "_"


def upstream_for_socket(socket_path: Path) -> str:
    """nginx's ``proxy_pass`` spelling of a Unix socket."""
    return f"unix:{socket_path}:"


def render_nginx_conf(site: NginxSite) -> str:
    """config/nginx.conf.template filled in; workers run as this user when nginx starts as root."""
    text = TEMPLATE.read_text()
    if not site.pki_http_listen:
        text = _PKI_HTTP_BLOCK.sub("\n", text)
    # As root, nginx would drop its workers to "nobody", who cannot open the 0600 socket of the service user.
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    # safe_substitute: nginx's own $variables stay; every ${placeholder} of ours must be filled.
    rendered = string.Template(text).safe_substitute(
        user_directive=user, prefix=site.prefix, listen=site.https_listen, pki_listen=site.pki_http_listen,
        server_cert=site.server_cert, server_key=site.server_key,
        server_key_password_file=site.server_key_password_file, client_ca=site.client_ca,
        upstream=site.upstream, server_name=site.server_name)
    missing = re.findall(r"\$\{(\w+)\}", rendered)
    if missing:
        raise ValueError(f"nginx.conf.template: no value for {', '.join(missing)}")
    return rendered


def tls_paths(instance_dir: Path) -> dict[str, Path]:
    tls = instance_dir / "tls"
    return {"cert": tls / "server.pem", "key": tls / "server.key", "ca": tls / "ca-bundle.pem"}
