"""`make bench-peers`: opauth beside its peers and the raw limits, measured in one run, printed as one table.

The peers come from the shared harness (``shared/bench/peers``: cfssl from Debian, django-ca from PyPI,
``raw_limit.sh``); each script installs its peer, measures it with ``wrk`` and writes its summary. opauth is
then measured on the same machine with the same ``wrk`` client (``bench/wrk_opauth.lua``, same closed loop
and output as the harness's ``wrk_post.lua``), under its own gunicorn settings (``config/gunicorn.conf.py``,
plain HTTP on loopback), next to a minimal Flask app under those same settings (``bench/minimal_ocsp.py``).
In-process rows (the mutual-TLS check, the CRL) are compared with the libraries used raw in this process.

Output: notes on the machine and its load, then ``| work | opauth | peer or raw (same run) | ratio | target |``
where ratio is opauth's speed relative to the yardstick (rate ÷ rate, or time ÷ time inverted): 1.0 = as fast,
0.70 = 70 % of its rate. A benchmark prints figures; it asserts nothing, and no test measures time.

Knobs: ``PEERS`` ("cfssl djca raw"; empty skips the harness), ``RUNS`` (3), ``SECONDS`` (5 per wrk run),
``CONC`` (4), ``CRL_SIZES`` ("100000 1000000"), ``GUNICORN_VARIANTS`` (1: also compare worker settings),
``PEERS_DIR`` (where the harness is), ``--quick`` for a smoke run of the benchmark itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from bench import run as own

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LUA = ROOT / "bench" / "wrk_opauth.lua"
RUNS = int(os.environ.get("RUNS", "3"))
SECONDS = int(os.environ.get("SECONDS", "5"))
CONC = int(os.environ.get("CONC", "4"))
PEERS = os.environ.get("PEERS", "cfssl djca raw").split()
CRL_SIZES = tuple(int(s) for s in os.environ.get("CRL_SIZES", "100000 1000000").split())
OCSP_CERTS = 200  # as the harness: distinct certificates queried, 10 % revoked
ISSUE_BODIES = 200
VARIANT_CONC = int(os.environ.get("VARIANT_CONC", "16"))

sys.path.insert(0, str(ROOT))


def _peers_dir() -> Path | None:
    configured = os.environ.get("PEERS_DIR")
    if configured:
        return Path(configured)
    for parent in (ROOT, *ROOT.parents):
        candidate = parent / "shared" / "bench" / "peers"
        if (candidate / "cfssl.sh").exists():
            return candidate
    return None


# --- processes and load -------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


class Server:
    """gunicorn with opauth's config file (plain HTTP on loopback), serving opauth or another WSGI app."""

    def __init__(self, env: dict[str, str], *args: str, config: Path | None = None) -> None:
        self.port = _free_port()
        server_env = dict(env, OPAUTH_BIND=f"127.0.0.1:{self.port}", OPAUTH_SERVE_TLS="false",
                          OPAUTH_WORKERS=env.get("OPAUTH_WORKERS", "2"))
        self.proc = subprocess.Popen([str(BIN / "gunicorn"), "--config", str(config or "config/gunicorn.conf.py"),
                                      "--log-level", "warning", "--access-logfile", "/dev/null", *args],
                                     cwd=ROOT, env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/pki/ca-bundle.pem", timeout=5):
                    break
            except urllib.error.HTTPError:
                break  # an answer: it serves
            except OSError:
                if self.proc.poll() is not None:
                    error = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"gunicorn exited: {error}")
                time.sleep(0.3)
        else:
            raise RuntimeError("gunicorn did not start")
        time.sleep(0.5)
        self.workers = _children(self.proc.pid)

    def cpu(self) -> dict[int, int]:
        return {pid: _cpu_ticks(pid) for pid in [self.proc.pid, *self.workers]}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Load:
    rps: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_ms: list[float] = field(default_factory=list)  # server CPU per answer
    busiest_share: list[float] = field(default_factory=list)  # the busiest worker's part of the workers' CPU

    @property
    def median(self) -> float:
        return statistics.median(self.rps) if self.rps else 0.0


def wrk(server: Server, directory: Path, count: int, method: str, path: str, ctype: str, status: int,
        seconds: int, conc: int, headers: dict[str, str] | None = None, load: Load | None = None) -> Load:
    """One closed-loop wrk run (1 thread, ``conc`` connections), the harness's way; appends to ``load``."""
    load = load if load is not None else Load()
    env = dict(os.environ, WRK_PREFIX="x",
               WRK_HEADERS="|".join(f"{k}: {v}" for k, v in (headers or {}).items()))
    before, started = server.cpu(), time.monotonic()
    out = subprocess.run(["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA),
                          f"http://127.0.0.1:{server.port}", "--", str(directory), str(count), method, path,
                          ctype, str(status), "500000"],
                         capture_output=True, text=True, timeout=seconds + 60, env=env, check=False)
    elapsed = time.monotonic() - started
    after = server.cpu()
    values = dict(re.findall(r"^x\.(\w+) ([0-9.]+)", out.stdout, re.M))
    if "rps" not in values:
        raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    rps = float(values["rps"])
    load.rps.append(rps)
    load.p99.append(float(values["p99"]))
    load.errors += int(float(values["errors"]))
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(after[p] - before.get(p, 0) for p in after) / tick
    if rps > 0:
        load.cpu_ms.append(total * 1000 / (rps * elapsed))
    workers = [after[p] - before.get(p, 0) for p in server.workers]
    if workers and sum(workers) > 0:
        load.busiest_share.append(max(workers) / sum(workers))
    return load


def measure(server: Server, directory: Path, count: int, method: str, path: str, ctype: str, status: int,
            headers: dict[str, str] | None = None, conc: int = CONC, runs: int = RUNS) -> Load:
    wrk(server, directory, count, method, path, ctype, status, 2, conc, headers)  # warm-up, not counted
    load = Load()
    for _ in range(runs):
        wrk(server, directory, count, method, path, ctype, status, SECONDS, conc, headers, load)
    return load


# --- the peers ----------------------------------------------------------------------------------------

PEER_SCRIPTS = {
    "cfssl": ("cfssl.sh", {"RUNS": "3", "SECS": "5", "LAT_CONC": "", "CRL_SIZES": "10000", "POPULATE_N": "300"}),
    "djca": ("django_ca.sh", {"RUNS": "3", "DBS": "sqlite", "CRL_DBS": "", "SIGN_N": "100", "CMD_N": "10",
                              "CLI_N": "1", "OCSP_SECONDS": "5", "LAT_CONC": ""}),
    "raw": ("raw_limit.sh", {"RUNS": "3", "OSSL_SECONDS": "1", "PY_SECONDS": "1", "CRL_SIZES": "10000", "MULTI": ""}),
}


def run_peers(work: Path, notes: list[str]) -> dict[str, tuple[float, str, float, float]]:
    """Run the harness scripts one at a time; metric -> (median, unit, min, max)."""
    figures: dict[str, tuple[float, str, float, float]] = {}
    directory = _peers_dir()
    if directory is None:
        notes.append("peer harness not found (set PEERS_DIR): peer columns are empty")
        return figures
    for name in PEERS:
        script, knobs = PEER_SCRIPTS[name]
        out = work / f"peer-{name}.txt"
        env = dict(os.environ, OUT=str(out), CONC=str(CONC), **knobs)
        env.pop("VIRTUAL_ENV", None)
        env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if not p.startswith(str(ROOT)))
        started = time.monotonic()
        print(f"[bench-peers] {script} ...", file=sys.stderr, flush=True)
        result = subprocess.run(["bash", str(directory / script)], env=env, cwd=work, capture_output=True,
                                text=True, timeout=1800, check=False)
        if result.returncode != 0 or not out.exists():
            notes.append(f"{script} failed (exit {result.returncode}): {result.stderr.strip()[-300:]}")
            continue
        notes.append(f"{script}: {time.monotonic() - started:.0f} s")
        for line in out.read_text().splitlines():
            if line.startswith("# versions") or line.startswith("# host"):
                notes.append(f"{name}: {line[2:]}")
            parts = line.split()
            if len(parts) == 6 and not line.startswith(("#", "==", "metric")):
                try:
                    figures[parts[0]] = (float(parts[1]), parts[2], float(parts[3]), float(parts[4]))
                except ValueError:
                    continue
    return figures


# --- opauth's instance --------------------------------------------------------------------------------

@dataclass
class Instance:
    path: Path
    env: dict[str, str]
    chain: list[bytes]  # leaf, issuing CA, root (DER)
    ocsp_pairs: list[tuple[bytes, bool]]  # (request DER, revoked?)
    leaf_ders: list[bytes]


def _ocsp_request(leaf: x509.Certificate, issuer: x509.Certificate, nonce: bool = False) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA256())
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def prepare(work: Path, certificates: int = OCSP_CERTS) -> Instance:
    """An instance with ``certificates`` business server certificates, one in ten revoked (service calls)."""
    instance = work / "instance"
    own._prepare_instance(instance)
    import db
    from app import create_app
    from ca.authority import CaSettings, authorities
    from ca.models import RevocationReason
    from ca.publishing import publisher
    from ca.revocation import revoke_by_serial
    from certs.business_server import issue_business_server_certificate
    from kernel.audit import SYSTEM_ACTOR
    from operators.business_systems import BusinessSystemData

    app = create_app()
    leaves: list[x509.Certificate] = []
    with app.app_context():
        session = db.get_session()
        settings = CaSettings.from_config(app.config)
        data = BusinessSystemData.from_mapping(own._business(own._csr()))
        for _ in range(certificates):
            cert = issue_business_server_certificate(session, settings=settings, data=data,
                                                     csr_bytes=own._csr().encode(), actor=SYSTEM_ACTOR,
                                                     may_change_system=True)
            session.commit()
            leaves.append(x509.load_der_x509_certificate(cert.der))
        revoked = {i for i in range(0, certificates, 10)}
        for i in sorted(revoked):
            revoke_by_serial(session, serial=format(leaves[i].serial_number, "x"),
                             reason=RevocationReason.KEY_COMPROMISE, actor=SYSTEM_ACTOR)
            session.commit()
        publisher.wait_idle()
        cas = [x509.load_der_x509_certificate(ca.cert_der) for ca in authorities(session)]
    app.extensions["opauth.engine"].dispose()
    issuer = next(ca for ca in cas if ca.subject == leaves[0].issuer)
    root = next(ca for ca in cas if ca.subject == issuer.issuer)
    pairs = [(_ocsp_request(leaf, issuer), i in revoked) for i, leaf in enumerate(leaves)]
    der = serialization.Encoding.DER
    return Instance(path=instance, env=own._env(instance),
                    chain=[leaves[1].public_bytes(der), issuer.public_bytes(der), root.public_bytes(der)],
                    ocsp_pairs=pairs, leaf_ders=[leaf.public_bytes(der) for leaf in leaves])


def _write_bodies(directory: Path, bodies: list[bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, body in enumerate(bodies):
        (directory / f"{i}.bin").write_bytes(body)
    return directory


def _get_path(request_der: bytes) -> bytes:
    return ("/pki/ocsp/" + urllib.parse.quote(base64.b64encode(request_der).decode(), safe="")).encode()


def _check_ocsp(port: int, pairs: list[tuple[bytes, bool]], answers: Path | None = None) -> None:
    """Every benchmark request answered successful, right serial, good/revoked as expected (and kept)."""
    for i, (body, revoked) in enumerate(pairs):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/pki/ocsp", data=body,
                                     headers={"Content-Type": "application/ocsp-request"})
        der = urllib.request.urlopen(req, timeout=30).read()
        response = ocsp.load_der_ocsp_response(der)
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise RuntimeError(f"OCSP answer {i}: {response.response_status}")
        wanted = ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD
        if response.certificate_status is not wanted or \
                response.serial_number != ocsp.load_der_ocsp_request(body).serial_number:
            raise RuntimeError(f"OCSP answer {i}: {response.certificate_status}")
        if answers is not None:
            (answers / f"{i}.req").write_bytes(body)
            (answers / f"{i}.resp").write_bytes(der)


# --- opauth over HTTP ---------------------------------------------------------------------------------

def bench_http(work: Path, inst: Instance, results: dict[str, Any]) -> None:
    post_dir = _write_bodies(work / "ocsp-post", [body for body, _ in inst.ocsp_pairs])
    get_dir = _write_bodies(work / "ocsp-get", [_get_path(body) for body, _ in inst.ocsp_pairs])
    leaves = [x509.load_der_x509_certificate(d) for d in inst.leaf_ders]
    issuer = x509.load_der_x509_certificate(inst.chain[1])
    nonce_dir = _write_bodies(work / "ocsp-nonce", [_ocsp_request(leaf, issuer, nonce=True) for leaf in leaves])
    answers = work / "answers"
    answers.mkdir()
    ctype = "application/ocsp-request"
    server = Server(inst.env)
    try:
        _check_ocsp(server.port, inst.ocsp_pairs, answers)  # also pre-signs any answer not yet stored
        results["ocsp_post"] = measure(server, post_dir, OCSP_CERTS, "POST", "/pki/ocsp", ctype, 200)
        results["ocsp_get"] = measure(server, get_dir, OCSP_CERTS, "GET", "-", "-", 200)
        results["ocsp_nonce"] = measure(server, nonce_dir, OCSP_CERTS, "POST", "/pki/ocsp", ctype, 200)
        results["ocsp_post_c1"] = measure(server, post_dir, OCSP_CERTS, "POST", "/pki/ocsp", ctype, 200, conc=1)
        headers = {"Authorization": own._issuance_token(server.port)}  # the same token `make bench-own` uses
        issue_dir = _write_bodies(work / "issue", [json.dumps(own._business(own._csr())).encode()
                                                  for _ in range(ISSUE_BODIES)])
        results["issue"] = measure(server, issue_dir, ISSUE_BODIES, "POST", "/api/v1/business-server-certificates",
                                   "application/json", 201, headers=headers)
    finally:
        server.stop()
    minimal = Server(dict(inst.env, BENCH_OCSP_DIR=str(answers)), "bench.minimal_ocsp:app")
    try:
        _check_ocsp(minimal.port, inst.ocsp_pairs)
        results["flask_post"] = measure(minimal, post_dir, OCSP_CERTS, "POST", "/pki/ocsp", ctype, 200)
        results["flask_get"] = measure(minimal, get_dir, OCSP_CERTS, "GET", "-", "-", 200)
        results["flask_post_c1"] = measure(minimal, post_dir, OCSP_CERTS, "POST", "/pki/ocsp", ctype, 200, conc=1)
    finally:
        minimal.stop()


GUNICORN_VARIANTS: list[tuple[str, bool, list[str]]] = [  # label, SO_REUSEPORT, gunicorn options
    ("gthread, 2 workers x 4 threads, keep-alive 2 s (the settings before)", False,
     ["--workers", "2", "--worker-class", "gthread", "--threads", "4", "--keep-alive", "2"]),
    ("the same with reuse_port (a listening socket per worker: gunicorn.conf.py on TCP now)", True,
     ["--workers", "2", "--worker-class", "gthread", "--threads", "4", "--keep-alive", "2"]),
    ("gthread 2 x 4, keep-alive off (a connection per request, as behind nginx)", False,
     ["--workers", "2", "--worker-class", "gthread", "--threads", "4", "--keep-alive", "0"]),
    ("gthread, 4 workers x 1 thread", False, ["--workers", "4", "--worker-class", "gthread", "--threads", "1"]),
    ("gthread, 4 workers x 1 thread, reuse_port", True,
     ["--workers", "4", "--worker-class", "gthread", "--threads", "1"]),
    ("sync, 2 workers (no keep-alive)", False, ["--workers", "2", "--worker-class", "sync"]),
    ("sync, 4 workers (no keep-alive)", False, ["--workers", "4", "--worker-class", "sync"]),
]


def _variant_config(work: Path, reuse_port: bool) -> Path:
    """config/gunicorn.conf.py with only SO_REUSEPORT set as given (gunicorn has no option to turn it off)."""
    path = work / f"gunicorn-reuse-{int(reuse_port)}.conf.py"
    conf = ROOT / "config" / "gunicorn.conf.py"
    path.write_text(f"__file__ = {str(conf)!r}\nexec(compile(open(__file__).read(), __file__, 'exec'))\n"
                    f"reuse_port = {reuse_port}\n")
    return path


def bench_gunicorn(work: Path, inst: Instance) -> list[tuple[str, Load]]:
    """Pre-signed OCSP POST at VARIANT_CONC keep-alive connections (many clients) under each worker setting."""
    post_dir = work / "ocsp-post"
    rows = []
    for label, reuse_port, args in GUNICORN_VARIANTS:
        server = Server(inst.env, *args, config=_variant_config(work, reuse_port))
        try:
            rows.append((label, measure(server, post_dir, OCSP_CERTS, "POST", "/pki/ocsp",
                                        "application/ocsp-request", 200, conc=VARIANT_CONC, runs=2)))
        finally:
            server.stop()
    return rows


# --- in-process: the mutual-TLS check and the CRL -----------------------------------------------------

def _raw_validator_seconds(chain: list[bytes], crls: list[bytes], calls: int) -> float:
    """pyhanko-certvalidator used raw: one shared ValidationContext holding the CRLs, warm, per call."""
    from asn1crypto import crl as asn1_crl
    from asn1crypto import x509 as asn1_x509
    from pyhanko_certvalidator import CertificateValidator, ValidationContext

    leaf, issuing, root = (asn1_x509.Certificate.load(d) for d in chain)
    context = ValidationContext(trust_roots=[root], other_certs=[issuing],
                                crls=[asn1_crl.CertificateList.load(d) for d in crls],
                                revocation_mode="hard-fail", allow_fetching=False)

    async def once() -> None:
        validator = CertificateValidator(leaf, intermediate_certs=[issuing], validation_context=context)
        await validator.async_validate_usage({"digital_signature"}, {"server_auth"})

    asyncio.run(once())  # parses the CRLs into the shared context
    start = time.perf_counter()
    for _ in range(calls):
        asyncio.run(once())
    return (time.perf_counter() - start) / calls


def _raw_crl_seconds(size: int) -> float:
    """The CRL built with pyca/cryptography alone: the whole entry list handed over at once, signed, encoded."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raw CA")])
    now = datetime.now(UTC).replace(microsecond=0)
    start = time.perf_counter()
    reason = x509.CRLReason(x509.ReasonFlags.key_compromise)
    entries = [x509.RevokedCertificateBuilder().serial_number((1 << 150) + i).revocation_date(now)
               .add_extension(reason, critical=False).build() for i in range(size)]
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=name, last_update=now, next_update=now + timedelta(days=1),
        extensions=[x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(1))], revoked_certificates=entries)
    builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return time.perf_counter() - start


def bench_inprocess(inst: Instance, results: dict[str, Any]) -> None:
    import db
    from app import create_app
    from ca.authority import CaSettings, authorities
    from ca.crl import issue_crl, latest_crl

    os.environ.update(inst.env)
    app = create_app()
    path = Path(app.config["DATABASE_URL"].removeprefix("sqlite:///"))

    def crls() -> list[bytes]:
        with app.app_context():
            session = db.get_session()
            found = [latest_crl(session, ca.id) for ca in authorities(session)]
            return [c.der for c in found if c is not None]

    leaf = inst.chain[0]
    with app.app_context():
        issuing_id = authorities(db.get_session())[-1].id
    validation: dict[int, tuple[float, float]] = {}
    crl_times: dict[int, tuple[float, float, int]] = {}
    validation[0] = (own._validation_seconds(app, leaf), _raw_validator_seconds(inst.chain, crls(), 20))
    now = datetime.now(UTC).replace(microsecond=0)
    reasons = ("keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged", "unspecified")
    inserted = 0
    for size in CRL_SIZES:
        print(f"[bench-peers] CRL with {size:,} entries ...", file=sys.stderr, flush=True)
        conn = sqlite3.connect(path)
        conn.executemany(
            "INSERT INTO certificate (serial, authority_id, profile, subject, common_name, sans, not_before, "
            "not_after, der, fingerprint_sha256, spki_sha256, issued_by, created_at, details, revoked_at, "
            "revocation_reason, invalidity_date) VALUES (?, ?, 'operator', 'CN=bench', 'bench', '[]', ?, ?, x'', "
            "?, '', 'bench', ?, '{}', ?, ?, ?)",
            ((format((1 << 150) + i, "x"), issuing_id, own._sql_time(now), own._sql_time(now + timedelta(days=365)),
              f"{i:064x}", own._sql_time(now), own._sql_time(now - timedelta(seconds=i)), reasons[i % len(reasons)],
              own._sql_time(now - timedelta(days=1)) if i % 4 == 0 else None)
             for i in range(inserted, size)))
        conn.commit()
        conn.close()
        inserted = size
        with app.app_context():
            session = db.get_session()
            authority = authorities(session)[-1]
            start = time.perf_counter()
            issue_crl(session, CaSettings.from_config(app.config), authority)
            session.commit()
            opauth_seconds = time.perf_counter() - start
        crl_times[size] = (opauth_seconds, _raw_crl_seconds(size), size)
        validation[size] = (own._validation_seconds(app, leaf),
                            _raw_validator_seconds(inst.chain, crls(), 3 if size >= 500_000 else 10))
    app.extensions["opauth.engine"].dispose()
    results["validation"] = validation
    results["crl"] = crl_times


# --- the table ----------------------------------------------------------------------------------------

def _rate(value: float, unit: str = "/s") -> str:
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:,.1f}{unit}"


def table(results: dict[str, Any], peers: dict[str, tuple[float, str, float, float]]) -> list[str]:
    rows: list[tuple[str, str, str, str, str]] = []

    def peer(metric: str) -> float | None:
        found = peers.get(metric)
        return found[0] if found else None

    def spread(load: Load) -> str:
        # With few keep-alive connections the kernel may put most of them on one worker (SO_REUSEPORT hashing):
        # a run's rate then depends on that draw, its CPU per answer much less.
        return f", busiest worker {max(load.busiest_share):.0%}" if load.busiest_share else ""

    def rate_row(work: str, load: Load, label: str, other: float | None, target: str, unit: str = "/s",
                 other_load: Load | None = None) -> None:
        mine = load.median
        cpu = f", {statistics.median(load.cpu_ms):.2f} ms server CPU each" if load.cpu_ms else ""
        err = f", {load.errors} errors" if load.errors else ""
        theirs = f"{label} {_rate(other, unit)}" if other else f"{label}: not measured"
        ratio = f"{mine / other:.0%}" if other else "—"
        if other_load is not None and other_load.cpu_ms and load.cpu_ms:  # the same server, both sides measured
            mine_cpu, other_cpu = statistics.median(load.cpu_ms), statistics.median(other_load.cpu_ms)
            theirs += f", {other_cpu:.2f} ms server CPU each{spread(other_load)}"
            ratio += f" by rate, {other_cpu / mine_cpu:.0%} by server CPU"
            cpu_text = f", {mine_cpu:.2f} ms server CPU each{spread(load)}"
            rows.append((work, f"{_rate(mine, unit)}{cpu_text}{err}", theirs, ratio, target))
            return
        rows.append((work, f"{_rate(mine, unit)}{cpu}{err}", theirs, ratio, target))

    c = f"c{CONC}"
    for size, (mine, raw) in results.get("validation", {}).items():
        rows.append((f"mTLS request check (`validate_chain`, warm, in-process), {size:,} revoked entries",
                     f"{mine * 1000:.2f} ms", f"raw pyhanko-certvalidator, shared context: {raw * 1000:.2f} ms",
                     f"{raw / mine:,.1f}× faster" if mine else "—", "≤ 2 ms, flat with the CRL"))
    if "ocsp_post" in results:
        flask_post, flask_get = results["flask_post"].median, results["flask_get"].median
        rate_row(f"pre-signed OCSP, POST, {c}", results["ocsp_post"], "minimal Flask app, same gunicorn",
                 flask_post, "≥ 70%", other_load=results["flask_post"])
        rate_row(f"pre-signed OCSP, GET, {c}", results["ocsp_get"], "minimal Flask app, same gunicorn",
                 flask_get, "≥ 70%", other_load=results["flask_get"])
        rate_row("pre-signed OCSP, POST, 1 connection", results["ocsp_post_c1"], "minimal Flask app",
                 results["flask_post_c1"].median, "—", other_load=results["flask_post_c1"])
        rate_row(f"pre-signed OCSP, POST, {c}", results["ocsp_post"], "django-ca 3.2 cached (gunicorn 2 sync)",
                 peer(f"djca.sqlite.ocsp_cached.{c}.rps"), "—")
        rate_row(f"pre-signed OCSP, POST, {c}", results["ocsp_post"], "cfssl ocspserve (Go)",
                 peer(f"cfssl.ocspserve.{c}.rps"), "—")
        rate_row(f"OCSP with a nonce (signed per request), POST, {c}", results["ocsp_nonce"],
                 "django-ca live signing", peer(f"djca.sqlite.ocsp_live.{c}.rps"), "reported separately")
        rate_row(f"business server certificate over HTTP, API token, {c}", results["issue"],
                 "cfssl serve /api/v1/cfssl/sign", peer(f"cfssl.sign_api.{c}.rps"), "≥ 100%")
        rate_row(f"business server certificate over HTTP, API token, {c}", results["issue"],
                 "django-ca create_cert, in-process, no HTTP", peer("djca.sqlite.sign_api"), "—")
        rate_row(f"business server certificate over HTTP, API token, {c}", results["issue"],
                 "raw pyca/cryptography issue-from-CSR, 1 core", peer("py.issue_from_csr"), "—")
    if "bio" in results:
        bio = results["bio"]
        parts = ", ".join(f"{k} {v:.1f} ms" for k, v in bio.items()
                          if k not in ("logins_per_second", "profiled_ms") and not k.endswith(("CPU ms", "statements")))
        per_request = ", ".join(f"{name} {bio[f'{name} CPU ms']:.1f} ms ({bio[f'{name} statements']:.0f} statements)"
                                for name in ("page", "options", "verify") if f"{name} CPU ms" in bio)
        rows.append(("biometric login end to end, in-process, sequential (login page, options, verify; no TLS)",
                      f"{bio['logins_per_second']:.1f} logins/s; CPU per request: {per_request}; per login under "
                      f"cProfile ({bio['profiled_ms']:.0f} ms): {parts}",
                      f"py_webauthn verify_authentication_response alone: {results['bio_raw']:,.0f}/s",
                      f"{bio['logins_per_second'] / results['bio_raw']:.1%}", "≥ 300 logins/s on 2 workers"))
    if "bio_http" in results:
        http = results["bio_http"]
        rows.append((f"biometric login over HTTPS with client certificates, gunicorn 2 workers, "
                     f"{http['http clients']:.0f} terminal processes (page, options, verify)",
                     f"{http['http logins_per_second']:.1f} logins/s, server CPU "
                     f"{http['http server CPU ms per login']:.1f} ms per login",
                     f"py_webauthn verify_authentication_response alone: {results['bio_raw']:,.0f}/s",
                     f"{http['http logins_per_second'] / results['bio_raw']:.1%}", "≥ 300 logins/s on 2 workers"))
    tls = results.get("tls", {})
    for load in ("handshake only", "handshake + GET /pki/ca-bundle.pem"):
        if f"in front, {load}" in tls:
            (rate, cpu), (raw_rate, raw_cpu) = tls[f"in front, {load}"], tls[f"alone, {load}"]
            rows.append((f"full mutual-TLS handshakes (openssl s_time -new), {load}, nginx in front of opauth",
                         f"{cpu:.2f} ms server CPU each ({rate:,.0f}/s)",
                         f"nginx alone: {raw_cpu:.2f} ms ({raw_rate:,.0f}/s)", f"{raw_cpu / cpu:.0%}",
                         "≥ 80% of nginx per server CPU" if load == "handshake only" else "—"))
    for size, (mine, raw, _n) in results.get("crl", {}).items():
        rows.append((f"CRL with {size:,} entries, signed and stored", f"{mine:.2f} s",
                     f"raw cryptography builder (entries at once): {raw:.2f} s", f"{raw / mine:.0%}",
                     "near raw"))
    lines = ["| work | opauth | peer or raw (same run) | ratio | target |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return lines


def main() -> None:
    global RUNS, CRL_SIZES, OCSP_CERTS, ISSUE_BODIES, SECONDS, PEERS
    quick = "--quick" in sys.argv
    if quick:
        RUNS, SECONDS, CRL_SIZES, OCSP_CERTS, ISSUE_BODIES = 1, 2, (2_000,), 20, 20
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `scripts/system-deps.sh wrk` (as root) or `apt-get install wrk`")
    work = Path(tempfile.mkdtemp(prefix="opauth-bench-peers-"))
    notes: list[str] = []
    started = datetime.now(UTC)
    load_start = os.getloadavg()
    results: dict[str, Any] = {}
    try:
        peers = run_peers(work, notes) if not quick else {}
        print("[bench-peers] opauth ...", file=sys.stderr, flush=True)
        sign_rate = own.raw_p256_signs_per_second(1.0)
        inst = prepare(work)
        bench_http(work, inst, results)
        variants = bench_gunicorn(work, inst) if os.environ.get("GUNICORN_VARIANTS", "1") == "1" else []
        bench_inprocess(inst, results)
        from bench import bio_login

        results["bio"] = bio_login.bench(work, 20 if quick else bio_login.LOGINS)
        results["bio_raw"] = bio_login.raw_verifications_per_second()
        results["bio_http"] = bio_login.bench_http(work, seconds=3.0 if quick else bio_login.HTTP_SECONDS)
        from bench import tls

        results["tls"] = tls.bench(work)
        sign_rate_after = own.raw_p256_signs_per_second(1.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    print(f"opauth beside its peers, {started:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end; raw P-256 signatures "
          f"{sign_rate:,.0f}/s at start, {sign_rate_after:,.0f}/s at end (a drop means the machine was shared)")
    print(f"client: wrk, 1 thread, {CONC} keep-alive connections unless noted, {RUNS} runs of {SECONDS} s "
          "(medians); opauth and the minimal Flask app under config/gunicorn.conf.py on plain HTTP")
    for note in notes:
        print(f"- {note}")
    print()
    for line in table(results, peers):
        print(line)
    if variants:
        print()
        print(f"gunicorn worker settings, pre-signed OCSP POST, {VARIANT_CONC} keep-alive connections, 2 runs:")
        print()
        print("| settings | responses/s | server CPU per answer | busiest worker's share of the workers' CPU |")
        print("|---|---|---|---|")
        for label, load in variants:
            share = f"{statistics.median(load.busiest_share):.0%}" if load.busiest_share else "—"
            cpu = f"{statistics.median(load.cpu_ms):.2f} ms" if load.cpu_ms else "—"
            print(f"| {label} | {load.median:,.0f} | {cpu} | {share} |")


if __name__ == "__main__":
    main()
