"""`python -m bench.profile_hot`: cProfile of the hot paths, in-process, for the README's profile summary.

- OCSP: a pre-signed POST through the app's WSGI entry (the pre-signed path) and a nonce POST (the PKI app);
- issuance: business server certificates through the REST API with the administrator's session cookie;
- the mutual-TLS check: ``validate_chain`` warm, as the enforcement point runs it per request.

For each, the mean time per call and the functions of opauth (and the libraries it calls directly) with the
largest cumulative share. Figures under cProfile are inflated; read the shares.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INTERESTING = re.compile(r"/(ca|operators|bio|oidc|kernel|authlib|joserfc|webinput|db|app|config)[/.]"
                         r"|sqlalchemy/orm/session.py:\d+\(commit\)"
                         r"|sqlite3.Connection' objects>|cryptography|pyhanko|argon2|flask/app.py:\d+\(full_dispatch")


def _report(label: str, fn: Callable[[], None], calls: int, top: int = 14) -> None:
    for _ in range(max(3, calls // 10)):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    plain = (time.perf_counter() - start) * 1000 / calls
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        fn()
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{file}:{line}({name})"
        if INTERESTING.search(where):
            short = re.sub(r".*/(site-packages|benchpeers|opauth|main)/", "", file)
            rows.append((ct, f"{short}:{line}({name})"))
    rows.sort(reverse=True)
    print(f"\n## {label}: {plain:.2f} ms per call without the profiler ({calls} calls)")
    for ct, where in rows[:top]:
        print(f"  {ct / total:6.1%}  {where}")


def main() -> None:
    from cryptography.x509 import load_der_x509_certificate

    from bench import peers
    from bench import run as own

    work = Path(tempfile.mkdtemp(prefix="opauth-profile-"))
    inst = peers.prepare(work, 20)
    os.environ.update(inst.env)
    from app import create_app

    app = create_app()
    client = app.test_client()
    body = inst.ocsp_pairs[1][0]
    leaf = load_der_x509_certificate(inst.leaf_ders[1])
    issuer = load_der_x509_certificate(inst.chain[1])
    nonce_body = peers._ocsp_request(leaf, issuer, nonce=True)

    def presigned() -> None:
        assert client.post("/pki/ocsp", data=body, content_type="application/ocsp-request").status_code == 200

    def with_nonce() -> None:
        assert client.post("/pki/ocsp", data=nonce_body, content_type="application/ocsp-request").status_code == 200

    _report("OCSP, pre-signed answer (POST)", presigned, 1000)
    _report("OCSP with a nonce (signed per request, PKI app)", with_nonce, 300)

    admin = app.test_client()
    page = admin.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    admin.post("/login", data={"csrf_token": token.group(1), "tenant": "system", "operator_id": "admin",
                               "password": own.PASSWORD})
    page = admin.get("/", follow_redirects=True).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    headers = {"X-CSRFToken": token.group(1)}
    csrs = iter([own._csr() for _ in range(200)])

    def issue() -> None:
        response = admin.post("/api/v1/business-server-certificates", json=own._business(next(csrs)),
                              headers=headers)
        assert response.status_code == 201, response.get_json()

    _report("business server certificate over the REST API (session cookie)", issue, 50)

    import db
    from ca.authority import CaSettings
    from ca.validation import validate_chain

    with app.app_context():
        settings = CaSettings.from_config(app.config)
        session = db.get_session()

        def check() -> None:
            result = validate_chain(session, settings, leaf_der=inst.chain[0], required_eku={"server_auth"},
                                    key_usage={"digital_signature"})
            session.rollback()
            assert result.valid

        _report("mutual-TLS check (validate_chain, warm)", check, 500)
    app.extensions["opauth.engine"].dispose()


class _PeerSocket:
    """What the token endpoint reads of a mutual-TLS connection: the client's certificate (DER)."""

    def __init__(self, der: bytes) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool = False) -> bytes:
        return self.der


def token_exchange() -> None:
    """The token endpoint in-process: code + PKCE exchanged with tls_client_auth (the certificate the TLS
    layer would hand over), ES256 ID token and JWT access token."""
    import urllib.parse

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from bench import oidc

    work = Path(tempfile.mkdtemp(prefix="opauth-profile-token-"))
    env, one_time = oidc._prepare(work, "https://localhost:8443")
    os.environ.update(env)
    from app import create_app

    app = create_app()
    browser = app.test_client()

    def form(url: str, fields: dict[str, str]) -> str:
        page = browser.get(url).get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None, page[:300]
        response = browser.post(url, data={"csrf_token": token.group(1), **fields}, headers={"Referer": url})
        return str(response.headers.get("Location", ""))

    new = "Bench-Operator-2026!x"
    form("/login", {"tenant": "minamiedo", "operator_id": "OP0601", "password": one_time})
    form("/password", {"current_password": one_time, "new_password": new, "confirm_password": new})
    der = x509.load_pem_x509_certificate((work / "client.pem").read_bytes()).public_bytes(serialization.Encoding.DER)
    peer = {"werkzeug.socket": _PeerSocket(der)}
    client = app.test_client()
    calls = 200

    def codes() -> list[tuple[str, str]]:
        made = []
        for _ in range(calls + 30):
            url, verifier = oidc._authorize_url("")
            location = browser.get(url).headers["Location"]
            made.append((dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"], verifier))
        return made

    pending = iter(codes())

    def exchange() -> None:
        code, verifier = next(pending)
        response = client.post("/oidc/token", data=urllib.parse.parse_qs(oidc._token_form(code, verifier)),
                               environ_overrides=peer)
        assert response.status_code == 200, response.get_data(as_text=True)

    _report("token exchange (code + PKCE, tls_client_auth, ES256 ID and access tokens)", exchange, calls // 2, top=30)
    app.extensions["opauth.engine"].dispose()


if __name__ == "__main__":
    token_exchange() if sys.argv[1:] == ["token"] else main()
