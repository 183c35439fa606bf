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
