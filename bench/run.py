"""`make bench`: revocation and issuance throughput, each beside the raw P-256 signing rate of this run.

Prints a Markdown table (the README's "Benchmarks" section shows the latest one):

- raw ECDSA P-256 signatures per second in this process (the denominator);
- OCSP responses per second over HTTP for pre-signed responses (real gunicorn on
  loopback, GET and POST without nonce), and for requests with a nonce (signed
  fresh each time), with the ratio to the raw signing rate;
- CRL generation time for 10k, 100k and 1M revoked entries (rows bulk-inserted
  into a throw-away SQLite database), with the number of raw signatures the same
  time would buy;
- the mutual-TLS certificate check (``validate_chain``, warm, in-process) with 0 revoked
  entries and at each CRL size: it must not grow with the CRL;
- business server certificates issued per second through the REST API over HTTP.

Everything runs in a temporary directory; requests and time are bounded. A
benchmark prints figures; it asserts nothing.
"""

from __future__ import annotations

import base64
import http.client
import multiprocessing
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "Bench-Password-2026!x"
CLIENTS = 4
OCSP_REQUESTS = 4000  # per scenario, spread over the client processes
OCSP_SECONDS = 20.0  # and at most this long
ISSUE_REQUESTS = 1000
ISSUE_SECONDS = 20.0
CRL_SIZES = (10_000, 100_000, 1_000_000)

sys.path.insert(0, str(ROOT))


def raw_p256_signs_per_second(seconds: float = 2.0) -> float:
    """ECDSA P-256 / SHA-256 signatures per second over a 32-byte message, in this process."""
    key = ec.generate_private_key(ec.SECP256R1())
    message = os.urandom(32)
    algorithm = ec.ECDSA(hashes.SHA256())
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            key.sign(message, algorithm)
        count += 200
    return count / elapsed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(instance: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPAUTH_")}
    env.update(OPAUTH_INSTANCE_DIR=str(instance), OPAUTH_KEY_PASSPHRASE="bench-passphrase",
               OPAUTH_PKI_BASE_URL="http://pki.opauth.example.jp", OPAUTH_SESSION_COOKIE_SECURE="0",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def _prepare_instance(instance: Path) -> tuple[bytes, bytes]:
    """Initialise an instance, give the admin a known password, issue one leaf; (leaf DER, issuer DER)."""
    os.environ.update(_env(instance))
    import db
    from app import create_app
    from bootstrap import init_instance
    from ca.authority import CaSettings
    from operators.login.passwords import hash_password
    from operators.models import Operator

    app = create_app()
    db.upgrade(app.config["DATABASE_URL"])
    with app.app_context():
        session = db.get_session()
        init_instance(session, CaSettings.from_config(app.config))
        admin = session.query(Operator).filter_by(operator_id="admin").one()
        admin.password_hash = hash_password(PASSWORD)
        admin.must_change_password = False
        session.commit()
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = _basic()
    response = client.post("/api/v1/business-server-certificates", json=_business(_csr()))
    assert response.status_code == 201, response.get_json()
    serial = response.get_json()["serial"]
    chain = x509.load_pem_x509_certificates(client.get(f"/api/v1/certificates/{serial}/chain.pem").data)
    app.extensions["opauth.engine"].dispose()
    return (chain[0].public_bytes(serialization.Encoding.DER), chain[1].public_bytes(serialization.Encoding.DER))


def _basic() -> str:
    return "Basic " + base64.b64encode(f"admin@system:{PASSWORD}".encode()).decode()


def _issuance_token(port: int) -> str:
    """An API token for issuance, made once over the API with the administrator's password (as a script would)."""
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/api/v1/api-tokens", headers={"Authorization": _basic(), "Content-Type": "application/json"},
                 body=json.dumps({"name": "bench", "scopes": ["business_server_certificates.issue"], "days": 1}))
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    if response.status != 201:
        raise RuntimeError(f"token creation failed: HTTP {response.status} {body}")
    return f"Bearer {body['token']}"


def _csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bench"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "www1.city.itozaki.nagano.jp")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _business(csr: str) -> dict[str, str]:
    return {"business_id": "05", "name": "ベンチマーク", "admin_org": "bench",
            "top_url": "https://www1.city.itozaki.nagano.jp/BizSys/",
            "operator_admin_url": "https://www1.city.itozaki.nagano.jp/BizSys/",
            "personalize_url": "https://perso.city.itozaki.nagano.jp/BizSys/", "csr": csr}


def wait_for_port(port: int, proc: subprocess.Popen[Any], seconds: float = 60) -> None:
    """Wait until ``proc`` (a server just started) accepts connections on the loopback ``port``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read() if proc.stderr else ''}") from None
            time.sleep(0.2)
    raise RuntimeError("server did not start")


class Gunicorn:
    """A real gunicorn serving the instance over plain HTTP on a loopback port."""

    def __init__(self, instance: Path, workers: int = 2) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "--workers", str(workers), "--worker-class", "gthread", "--threads", "4",
             "--bind", f"127.0.0.1:{self.port}", "--no-control-socket", "--log-level", "warning",
             "app:create_app()"],
            cwd=ROOT, env=_env(instance), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _client(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str], count: int,
            deadline: float, out: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    done = 0
    while done < count and time.monotonic() < deadline:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"HTTP {response.status} for {method} {path}")
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        done += 1
    out.put(done)


def _load(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str], total: int,
          seconds: float, clients: int = CLIENTS) -> float:
    """Requests per second with ``clients`` processes, each on its own keep-alive connection."""
    queue: Any = multiprocessing.Queue()
    deadline = time.monotonic() + seconds
    procs = [multiprocessing.Process(target=_client, args=(port, method, path, body, headers, total // clients,
                                                           deadline, queue)) for _ in range(clients)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    done = sum(queue.get(timeout=seconds + 120) for _ in procs)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
    return done / elapsed


def _ocsp_request(leaf_der: bytes, issuer_der: bytes, nonce: bool) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        x509.load_der_x509_certificate(leaf_der), x509.load_der_x509_certificate(issuer_der), hashes.SHA1())
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def bench_ocsp(work: Path) -> dict[str, float]:
    instance = work / "ocsp-instance"
    leaf_der, issuer_der = _prepare_instance(instance)
    plain = _ocsp_request(leaf_der, issuer_der, nonce=False)
    with_nonce = _ocsp_request(leaf_der, issuer_der, nonce=True)  # a fixed nonce still forces a fresh signature
    server = Gunicorn(instance)
    try:
        get_path = "/pki/ocsp/" + base64.b64encode(plain).decode().replace("/", "%2F").replace("+", "%2B")
        _load(server.port, "GET", get_path, None, {}, 200, 30)  # warm-up: pre-sign, load keys, fill caches
        results = {
            "get": _load(server.port, "GET", get_path, None, {}, OCSP_REQUESTS, OCSP_SECONDS),
            "post": _load(server.port, "POST", "/pki/ocsp", plain,
                          {"Content-Type": "application/ocsp-request"}, OCSP_REQUESTS, OCSP_SECONDS),
            "nonce": _load(server.port, "POST", "/pki/ocsp", with_nonce,
                           {"Content-Type": "application/ocsp-request"}, OCSP_REQUESTS, OCSP_SECONDS),
        }
    finally:
        server.stop()
    return results


def bench_issuance(work: Path) -> float:
    instance = work / "issue-instance"
    _prepare_instance(instance)
    server = Gunicorn(instance)
    try:
        import json

        csrs = [_csr() for _ in range(ISSUE_REQUESTS)]
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        headers = {"Authorization": _issuance_token(server.port), "Content-Type": "application/json"}
        done = 0
        start = time.perf_counter()
        deadline = time.monotonic() + ISSUE_SECONDS
        for csr in csrs:
            if time.monotonic() > deadline:
                break
            conn.request("POST", "/api/v1/business-server-certificates", body=json.dumps(_business(csr)),
                         headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                raise RuntimeError(f"issuance failed: HTTP {response.status}")
            done += 1
        return done / (time.perf_counter() - start)
    finally:
        server.stop()


VALIDATIONS = 200


def _validation_seconds(app: Any, leaf_der: bytes) -> float:
    """Mean seconds of a warm ``validate_chain`` of an unrevoked leaf (what the mTLS check runs per request)."""
    import db
    from ca.authority import CaSettings
    from ca.validation import validate_chain

    with app.app_context():
        settings = CaSettings.from_config(app.config)
        session = db.get_session()
        for i in range(VALIDATIONS + 1):
            if i == 1:  # the first call validates the path; the rest reuse it and read the status
                start = time.perf_counter()
            result = validate_chain(session, settings, leaf_der=leaf_der, required_eku={"server_auth"},
                                    key_usage={"digital_signature"})
            session.rollback()
            assert result.valid, result
        return (time.perf_counter() - start) / VALIDATIONS


def bench_crl(work: Path, validations: dict[int, float]) -> dict[int, tuple[float, int]]:
    """Seconds to generate (and store) a CRL of each size, and its size in bytes; fills ``validations``."""
    instance = work / "crl-instance"
    leaf_der, _issuer = _prepare_instance(instance)
    import db
    from app import create_app
    from ca.authority import CaSettings, authorities
    from ca.crl import issue_crl

    app = create_app()
    path = Path(app.config["DATABASE_URL"].removeprefix("sqlite:///"))
    with app.app_context():
        issuing_id = authorities(db.get_session())[-1].id
    validations[0] = _validation_seconds(app, leaf_der)
    now = datetime.now(UTC).replace(microsecond=0)
    reasons = ("keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged", "unspecified")
    results: dict[int, tuple[float, int]] = {}
    inserted = 0
    for size in CRL_SIZES:
        conn = sqlite3.connect(path)
        conn.executemany(
            "INSERT INTO certificate (serial, authority_id, profile, subject, common_name, sans, not_before, "
            "not_after, der, fingerprint_sha256, spki_sha256, issued_by, created_at, details, revoked_at, "
            "revocation_reason, invalidity_date) VALUES (?, ?, 'operator', 'CN=bench', 'bench', '[]', ?, ?, x'', "
            "?, '', 'bench', ?, '{}', ?, ?, ?)",
            ((format((1 << 150) + i, "x"), issuing_id, _sql_time(now), _sql_time(now + timedelta(days=365)),
              f"{i:064x}", _sql_time(now), _sql_time(now - timedelta(seconds=i)), reasons[i % len(reasons)],
              _sql_time(now - timedelta(days=1)) if i % 4 == 0 else None)
             for i in range(inserted, size)))
        conn.commit()
        conn.close()
        inserted = size
        with app.app_context():
            session = db.get_session()
            authority = authorities(session)[-1]
            settings = CaSettings.from_config(app.config)
            start = time.perf_counter()
            crl = issue_crl(session, settings, authority)
            session.commit()
            elapsed = time.perf_counter() - start
            assert crl.entries == size, (crl.entries, size)
            results[size] = (elapsed, len(crl.der))
        validations[size] = _validation_seconds(app, leaf_der)
    app.extensions["opauth.engine"].dispose()
    return results


def _sql_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.000000")


def main() -> None:
    global OCSP_REQUESTS, ISSUE_REQUESTS, CRL_SIZES
    if "--quick" in sys.argv:  # a smoke run of the benchmark itself
        OCSP_REQUESTS, ISSUE_REQUESTS, CRL_SIZES = 200, 5, (1_000, 5_000)
    work = Path(tempfile.mkdtemp(prefix="opauth-bench-"))
    try:
        started = datetime.now(UTC)
        sign_rate = raw_p256_signs_per_second()
        ocsp_rates = bench_ocsp(work)
        issue_rate = bench_issuance(work)
        validations: dict[int, float] = {}
        crl_times = bench_crl(work, validations)
        sign_rate_after = raw_p256_signs_per_second()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"opauth benchmark, {started:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"raw ECDSA P-256 signing rate: {sign_rate:,.0f}/s at start, {sign_rate_after:,.0f}/s at end "
          f"(ratios use the start figure)")
    print()
    print("| measurement | result | raw P-256 signatures/s | ratio |")
    print("|---|---|---|---|")
    for label, key in (("OCSP, pre-signed, GET over HTTP", "get"), ("OCSP, pre-signed, POST over HTTP", "post"),
                       ("OCSP with nonce (signed per request), POST", "nonce")):
        rate = ocsp_rates[key]
        print(f"| {label} | {rate:,.0f} responses/s | {sign_rate:,.0f} | {rate / sign_rate:.3f} |")
    print(f"| business server certificates via REST API over HTTP | {issue_rate:,.1f} certificates/s | "
          f"{sign_rate:,.0f} | {issue_rate / sign_rate:.5f} |")
    for size, (seconds, length) in crl_times.items():
        print(f"| CRL with {size:,} revoked entries ({length / 1e6:.1f} MB) | {seconds:.2f} s "
              f"({size / seconds:,.0f} entries/s) | {sign_rate:,.0f} | {seconds * sign_rate:,.0f} signatures' time |")
    for size, seconds in validations.items():
        print(f"| mTLS certificate check (validate_chain, warm, in-process), {size:,} revoked entries | "
              f"{seconds * 1000:.2f} ms | {sign_rate:,.0f} | {seconds * sign_rate:,.1f} signatures' time |")


if __name__ == "__main__":
    main()
