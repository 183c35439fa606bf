"""Builders for test inputs: keys, CSRs, business system payloads, and real-client runners."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

BUSINESS = {
    "business_id": "05",
    "name": "利用環境設定",
    "admin_org": "BCS",
    "top_url": "https://www1.city.itozaki.nagano.jp/BizSys/?gid=05&type=1",
    "operator_admin_url": "https://www1.city.itozaki.nagano.jp/BizSys/?gid=05&type=1",
    "personalize_url": "https://perso.city.itozaki.nagano.jp/BizSys/?gid=05&type=1",
    "phone": "03-1234-5678",
    "email": "admin@city.itozaki.nagano.jp",
}

SUBJECT = x509.Name([
    x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
    x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "tokyo"),
    x509.NameAttribute(NameOID.LOCALITY_NAME, "minamiedo"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ICS"),
    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "minamiedo"),
    x509.NameAttribute(NameOID.COMMON_NAME, "www1.city.itozaki.nagano.jp"),
])


def make_csr(key: Any = None, subject: x509.Name = SUBJECT, hash_alg: Any = None,
             encoding: serialization.Encoding = serialization.Encoding.PEM) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hash_alg or hashes.SHA256())
    return csr.public_bytes(encoding)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def business_payload(csr: bytes, **overrides: str) -> dict[str, str]:
    payload = dict(BUSINESS, csr=csr.decode())
    payload.update(overrides)
    return payload


def run(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=check, timeout=120)


def pkilint(tool: str, path: Path, *extra: str) -> list[dict[str, Any]]:
    """Error-level findings of a pkilint command (whose exit code is the number of findings)."""
    result = run(Path(sys.executable).parent / tool, "lint", *extra, "-s", "ERROR", "-f", "JSON", path)
    out = result.stdout.strip()
    assert out or result.returncode == 0, result.stderr
    findings: list[dict[str, Any]] = json.loads(out)["results"] if out else []
    return findings


def statements_of(app: Any, send: Any) -> tuple[Any, list[str], int]:
    """The response of ``send()``, the SQL statements it ran (whitespace folded) and how many commits: for the
    regression guards on a hot path's SQL (counted, never timed)."""
    from sqlalchemy import event

    statements: list[str] = []
    commits: list[bool] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(" ".join(statement.split()))

    def committed(_conn: object) -> None:
        commits.append(True)

    engine = app.extensions["opauth.engine"]
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", committed)
    try:
        response = send()
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "commit", committed)
    return response, statements, len(commits)


def writes_of(statements: list[str]) -> list[str]:
    """The writes among ``statements`` as "INSERT table" / "UPDATE table", in order."""
    return [s.split(" ")[0] + " " + s.split(" ")[1 if s.startswith("UPDATE") else 2] for s in statements
            if not s.upper().startswith("SELECT")]
