"""Shared by the revocation tests: a real HTTP server for the test instance, issued leaves, openssl runners."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from ca.publishing import publisher
from tests.conftest import ADMIN_PASSWORD
from tests.helpers import business_payload, make_csr, run

AUTH = "Basic " + base64.b64encode(f"admin@system:{ADMIN_PASSWORD}".encode()).decode()


@contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """Serve ``app`` over real HTTP on a free loopback port (threaded werkzeug server); yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=30)
        server.server_close()


@dataclass(frozen=True)
class Leaf:
    """An issued business server certificate with the files openssl needs."""

    serial: str
    cert: x509.Certificate
    leaf: Path  # leaf.pem
    issuer: Path  # the issuing CA certificate (PEM)
    root: Path  # the root CA certificate (PEM)
    bundle: Path  # root + issuing CA (PEM), the -CAfile


def issue_leaf(api: FlaskClient, directory: Path, name: str = "leaf") -> Leaf:
    response = api.post("/api/v1/business-server-certificates", json=business_payload(make_csr()))
    assert response.status_code == 201, response.get_json()
    serial = response.get_json()["serial"]
    directory.mkdir(parents=True, exist_ok=True)
    chain = x509.load_pem_x509_certificates(api.get(f"/api/v1/certificates/{serial}/chain.pem").data)
    paths = {}
    for label, cert in zip((name, f"{name}-issuer", f"{name}-root"), chain, strict=True):
        paths[label] = directory / f"{label}.pem"
        paths[label].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    bundle = directory / f"{name}-bundle.pem"
    bundle.write_bytes(paths[f"{name}-root"].read_bytes() + paths[f"{name}-issuer"].read_bytes())
    return Leaf(serial=serial, cert=chain[0], leaf=paths[name], issuer=paths[f"{name}-issuer"],
                root=paths[f"{name}-root"], bundle=bundle)


def revoke(api: FlaskClient, serial: str, reason: str, **extra: str) -> dict:
    """Revoke through the API, then wait for the background publisher's new CRL and OCSP answers."""
    response = api.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": reason, **extra})
    assert response.status_code == 200, response.get_json()
    assert publisher.wait_idle(), "the CRL/OCSP publisher did not finish"
    return response.get_json()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class OcspResult:
    status: str  # good / revoked / unknown, as openssl prints it for the certificate
    output: str


def openssl_ocsp(leaf: Leaf, url: str, *extra: str | Path) -> OcspResult:
    """``openssl ocsp`` against the responder; it exits 0 even when revoked, so parse its report."""
    result = run("openssl", "ocsp", *extra, "-issuer", leaf.issuer, "-cert", leaf.leaf, "-CAfile", leaf.bundle,
                 "-url", f"{url}/pki/ocsp", "-resp_text")
    output = result.stdout + result.stderr
    match = re.search(rf"^{re.escape(str(leaf.leaf))}: (good|revoked|unknown)$", output, re.MULTILINE)
    assert match, output
    return OcspResult(status=match.group(1), output=output)


def pki_path(url: str) -> str:
    """The path part of a URL written into a certificate (the test PKI host is not resolvable)."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]
