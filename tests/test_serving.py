"""`make run`'s path, end to end: `flask init` twice, then scripts/serve.py (nginx in front of gunicorn).

With default settings (only the ports moved to free ones): HTTPS with opauth's CA names sent to
clients, /pki/ over plain HTTP, certificates whose CRL and OCSP URLs openssl can fetch, pkilint
clean but for the name `localhost`, and a foreign client certificate answered with 403 + audit.
"""

from __future__ import annotations

import base64
import datetime
import http.cookiejar
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from tests.helpers import BUSINESS, business_payload, make_csr, pkilint, run
from tests.servers import ROOT, Served, flask_cli, serve, serve_env, start_serve

NEW_PASSWORD = "Served-Horse-Battery-77"


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("served") / "instance"


@pytest.fixture(scope="module")
def env(instance: Path) -> dict[str, str]:
    return serve_env(instance)


@pytest.fixture(scope="module")
def first_init(env: dict[str, str]) -> str:
    result = flask_cli(env, "init")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def served(env: dict[str, str], instance: Path, first_init: str) -> Iterator[Served]:
    with serve(env, instance.parent / "serve.log") as s:
        yield s


def _curl(served: Served, instance: Path, path: str, *extra: str | Path) -> tuple[int, str]:
    result = run("curl", "-sS", "--cacert", instance / "tls" / "ca-bundle.pem", "-o", "-", "-w", "\n%{http_code}",
                 "-H", "Accept-Language: en", *extra, served.https + path)
    body, _, status = result.stdout.rpartition("\n")
    assert result.returncode == 0, result.stderr  # an HTTP answer, never a broken handshake
    return int(status), body


def test_first_init_writes_the_one_time_password_to_a_0600_file_not_to_the_log(instance: Path,
                                                                                 first_init: str,
                                                                                 env: dict[str, str]) -> None:
    password_file = instance / "initial-admin-password"
    assert "CA hierarchy created" in first_init and str(password_file) in first_init
    assert password_file.stat().st_mode & 0o077 == 0
    assert password_file.read_text().strip() not in first_init  # stdout here is no terminal
    again = flask_cli(env, "init")
    assert again.returncode == 0, again.stderr
    assert "already present: reused" in again.stdout and "Bootstrap administrator" not in again.stdout
    keys = sorted(p.name for p in (instance / "keys").iterdir())
    assert len([k for k in keys if k.endswith(".key.pem") and "-ca-" in k]) == 2, keys  # no second CA
    assert all(p.stat().st_mode & 0o077 == 0 for p in (instance / "keys").iterdir())
    assert b"ENCRYPTED PRIVATE KEY" in (instance / "keys" / keys[0]).read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in (instance / "tls" / "server.key").read_bytes()


def test_https_is_served_by_nginx_and_gunicorn_only_on_a_private_socket(instance: Path, served: Served) -> None:
    status, body = _curl(served, instance, "/pki/ca-bundle.pem")
    assert status == 200 and body.count("BEGIN CERTIFICATE") == 2
    status, body = _curl(served, instance, "/login")
    assert status == 200 and "操作者用ポータルメニューログイン" in body
    run_dir = instance / "run"
    assert run_dir.stat().st_mode & 0o777 == 0o700
    assert (run_dir / "app.sock").stat().st_mode & 0o077 == 0
    assert "Listening at: unix:" in served.log.read_text()


def test_serving_signs_an_audit_checkpoint_that_audit_verify_accepts(instance: Path, env: dict[str, str],
                                                                     served: Served) -> None:
    checkpoints = instance / "audit-checkpoints" / "checkpoints.jsonl"
    deadline = time.monotonic() + 60
    while not checkpoints.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert checkpoints.exists(), served.log.read_text()[-2000:]
    assert json.loads(checkpoints.read_text().splitlines()[0])["sequence"] >= 1
    verified = flask_cli(env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_acceptable_client_ca_names_are_sent(served: Served) -> None:
    port = served.https.rsplit(":", 1)[1]
    result = s_client("-connect", f"127.0.0.1:{port}", "-servername", "localhost")
    names = result.stdout.split("Acceptable client certificate CA names", 1)
    assert len(names) == 2, result.stdout
    listed = names[1].split("Requested Signature Algorithms")[0]
    assert "CN = opauth Root CA" in listed and "CN = opauth Issuing CA 1" in listed


def test_old_tls_versions_are_refused(instance: Path, served: Served) -> None:
    port = served.https.rsplit(":", 1)[1]
    result = s_client("-connect", f"127.0.0.1:{port}", "-tls1_1", "-servername", "localhost")
    assert "Cipher is (NONE)" in result.stdout or result.returncode != 0
    ok = s_client("-connect", f"127.0.0.1:{port}", "-tls1_2", "-servername", "localhost",
                  "-CAfile", instance / "tls" / "ca-bundle.pem")
    assert "Verify return code: 0 (ok)" in ok.stdout


def test_plain_http_serves_pki_and_nothing_else(served: Served) -> None:
    crl = run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{served.http}/pki/crl/2.crl")
    assert crl.stdout == "200"
    for path in ("/login", "/api/v1/business/self", "/", "/admin/"):
        other = run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", served.http + path)
        assert other.stdout == "404", path


def _foreign_client(tmp: Path, *, expired: bool = False) -> tuple[Path, Path]:
    """A clientAuth certificate and key from a CA opauth has never heard of (``expired``: since yesterday)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2 if expired else 0)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Foreign CA")]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    name = "expired" if expired else "foreign"
    (tmp / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return tmp / f"{name}.pem", tmp / f"{name}.key"


def _refusals(instance: Path) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from app import create_app
    from db import get_session
    from kernel.audit import AuditEvent

    app = create_app({"INSTANCE_DIR": str(instance)})
    try:
        with app.app_context():
            return [dict(e.detail or {}, target=e.target) for e in get_session().scalars(
                select(AuditEvent).where(AuditEvent.action == "mtls.client_certificate_refused"))]
    finally:
        app.extensions["opauth.engine"].dispose()


def test_foreign_client_certificate_gets_the_documented_403_and_an_audit_entry(
        instance: Path, served: Served, tmp_path: Path) -> None:
    cert, key = _foreign_client(tmp_path)
    before = len(_refusals(instance))
    status, body = _curl(served, instance, "/api/v1/business/self", "--cert", cert, "--key", key)
    assert status == 403, body
    answer = json.loads(body)
    assert answer["error"] == "client_certificate_refused" and "not issued by this system" in answer["message"]
    refusals = _refusals(instance)
    assert len(refusals) == before + 1 and refusals[-1]["target"] == "/api/v1/business/self"
    # Pages that need no client certificate work with the foreign one offered (no TLS alert).
    for path in ("/login", "/pki/ca-bundle.pem"):
        assert _curl(served, instance, path, "--cert", cert, "--key", key)[0] == 200



def test_certificates_nginx_itself_would_refuse_reach_the_application(
        instance: Path, env: dict[str, str], served: Served, tmp_path: Path) -> None:
    """An expired certificate, or opauth's own business server certificate (serverAuth only), offered by a client:
    nginx's `optional_no_ca` forgives only an unknown issuer, so these used to get its bare 400 page everywhere."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = tmp_path / "server.csr"
    csr.write_bytes(make_csr(key))
    args: list[str | Path] = ["cert", "issue-business-server", "--csr", csr, "--out", tmp_path / "server.pem"]
    for field, value in BUSINESS.items():
        args += [f"--{field.replace('_', '-')}", value]
    assert flask_cli(env, *args).returncode == 0
    (tmp_path / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    expired, expired_key = _foreign_client(tmp_path, expired=True)
    for cert, key_path in ((tmp_path / "server.pem", tmp_path / "server.key"), (expired, expired_key)):
        before = len(_refusals(instance))
        status, body = _curl(served, instance, "/api/v1/business/self", "--cert", cert, "--key", key_path)
        assert status == 403 and json.loads(body)["error"] == "client_certificate_refused", body
        assert len(_refusals(instance)) == before + 1
        for path in ("/login", "/pki/ca-bundle.pem"):  # pages that need no certificate work with it offered
            assert _curl(served, instance, path, "--cert", cert, "--key", key_path)[0] == 200, (cert, path)
        status, body = _curl(served, instance, "/api/v1/tenants", "--cert", cert, "--key", key_path,
                             "-H", "Content-Type: application/json", "--data-binary", '{"code": "x"}')
        assert status in (401, 403) and "error" in json.loads(body), body  # a body is proxied too



def test_a_body_over_the_limit_gets_the_applications_413_through_nginx(
        instance: Path, served: Served, tmp_path: Path) -> None:
    """The application refuses a large body before reading it; it must still take it off the socket, or nginx,
    still sending, gets a broken pipe and answers 502 (it did, now and then, for 1-20 MiB)."""
    for size in (2, 5, 8, 12) * 4:
        body = tmp_path / "big.json"
        body.write_bytes(b"a" * size * 1024 * 1024)
        status, answer = _curl(served, instance, "/api/v1/tenants", "-H", "Content-Type: application/json",
                               "-H", "Authorization: Bearer opauth_x", "--data-binary", f"@{body}")
        assert status == 413 and json.loads(answer)["error"] == "too_large", (size, status, answer[:200])



def test_a_request_nginx_refuses_itself_is_answered_in_opauths_forms(instance: Path, served: Served) -> None:
    """A NUL in the path never reaches opauth (nginx refuses it while reading the request line): JSON under the
    machine paths, a short bilingual page elsewhere, instead of nginx's own English page."""
    for path in ("/api/v1/certificates/%00", "/oidc/token%00", "/pki/crl/%00.crl"):
        result = run("curl", "-sS", "--cacert", instance / "tls" / "ca-bundle.pem", "-o", "-", "-D", "-",
                     served.https + path)
        head, _, body = result.stdout.partition("\n\n")
        assert head.startswith("HTTP/1.1 400") and "content-type: application/json" in head.lower(), head
        answer = json.loads(body)
        assert answer["error"] == "bad_request" and "リクエストが正しくありません" in answer["message"]
    status, body = _curl(served, instance, "/admin/t/x/operators/B1%00")
    assert status == 400 and "リクエストが正しくありません" in body and "The request is malformed" in body
    assert "nginx" not in body
    # Headers too large (nginx's 494), and the plain-HTTP /pki/ listener: the same answer.
    status, body = _curl(served, instance, "/api/v1/certificates", "-H", "X-Big: " + "a" * 20000)
    assert status == 400 and json.loads(body)["error"] == "bad_request", body
    plain = run("curl", "-sS", "-o", "-", "-w", "\n%{http_code}", served.http + "/pki/x%00")
    body, _, code = plain.stdout.rpartition("\n")
    assert code == "400" and json.loads(body)["error"] == "bad_request", plain.stdout


def test_a_spoofed_certificate_header_through_nginx_is_replaced(instance: Path, served: Served) -> None:
    bundle = (instance / "tls" / "server.pem").read_text()  # an opauth-issued certificate, not presented
    status, body = _curl(served, instance, "/api/v1/business/self",
                         "-H", f"X-SSL-Client-Cert: {urllib.parse.quote(bundle)}")
    assert status == 403 and "required" in json.loads(body)["message"]


# --- the done-when test: relying parties fetch CRLs and OCSP from the certificates' own URLs -----------------------

class _Browser:
    """A cookie-keeping HTTPS client trusting opauth's CA bundle."""

    def __init__(self, base: str, cafile: Path) -> None:
        self.base = base
        jar = http.cookiejar.CookieJar()
        context = ssl.create_default_context(cafile=str(cafile))
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                                  urllib.request.HTTPSHandler(context=context))

    def request(self, path: str, *, form: dict[str, str] | None = None, body: Any = None,
                basic: tuple[str, str] | None = None, method: str | None = None) -> tuple[int, bytes]:
        headers = {"Referer": self.base + path}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if basic is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with self.opener.open(req, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def csrf(self, path: str) -> str:
        match = re.search(rb'name="csrf_token" value="([^"]+)"', self.request(path)[1])
        assert match, path
        return match.group(1).decode()


def _admin_credentials(served: Served, instance: Path, first_init: str) -> tuple[str, str]:
    """Log in with the one-time password and choose a new one, as the README says; the API credentials."""
    otp = (instance / "initial-admin-password").read_text().strip()
    browser = _Browser(served.https, instance / "tls" / "ca-bundle.pem")
    status, _ = browser.request("/login", form={"csrf_token": browser.csrf("/login"), "tenant": "system",
                                                "operator_id": "admin", "password": otp})
    assert status == 200  # followed the redirect to /password
    status, page = browser.request("/password", form={
        "csrf_token": browser.csrf("/password"), "current_password": otp,
        "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
    assert status == 200, page.decode()[:500]
    return "admin@system", NEW_PASSWORD


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _uri(cert: x509.Certificate, method: x509.ObjectIdentifier) -> str:
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    return next(str(d.access_location.value) for d in aia if d.access_method == method)


# pkilint's PKIX rules take `localhost` for an invalid domain name (no public suffix); with the default
# PUBLIC_BASE_URL every URL and server name says localhost. These, and only these, findings are expected.
LOCALHOST_CODES = {"pkix.invalid_domain_name_syntax", "pkix.invalid_uri_syntax"}


def _unexpected(findings: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Findings other than the allowed codes about the name localhost."""
    return [(d["code"], d.get("message") or "") for f in findings for d in f["finding_descriptions"]
            if d["code"] not in LOCALHOST_CODES or "localhost" not in (d.get("message") or "")]


def test_defaults_give_certificates_whose_crl_and_ocsp_urls_work_and_pkilint_is_clean(
        instance: Path, served: Served, first_init: str, tmp_path: Path) -> None:
    api = _Browser(served.https, instance / "tls" / "ca-bundle.pem")
    creds = _admin_credentials(served, instance, first_init)

    status, raw = api.request("/api/v1/business-server-certificates", body=business_payload(make_csr()), basic=creds)
    assert status == 201, raw
    issued = {"business": json.loads(raw)["serial"]}
    status, raw = api.request("/api/v1/ssl-certificates", basic=creds, body={
        "tenant": "system", "business_id": BUSINESS["business_id"], "hosts": ["www1.city.itozaki.nagano.jp"],
        "csr": make_csr().decode()})
    assert status == 201, raw
    issued["ssl"] = json.loads(raw)["serial"]
    status, raw = api.request("/api/v1/tenants/system/operators", basic=creds, body={
        "operator_id": "OP0601", "name": "山田 太郎", "auth_method": "password", "business_ids": [],
        "csr": make_csr().decode()})
    assert status == 201, raw
    issued["operator"] = json.loads(raw)["certificate"]["serial"]

    certs: dict[str, x509.Certificate] = {}
    for name, serial in issued.items():
        status, pem = api.request(f"/api/v1/certificates/{serial}/pem", basic=creds)
        assert status == 200
        certs[name] = x509.load_pem_x509_certificate(pem)
    certs["opauth_server"] = x509.load_pem_x509_certificates((instance / "tls" / "server.pem").read_bytes())[0]

    leaf = certs["business"]
    cdp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl_url = str(cdp[0].full_name[0].value)  # type: ignore[index]
    assert crl_url == f"{served.http}/pki/crl/2.crl"  # the default PKI base URL: plain HTTP
    issuing = x509.load_der_x509_certificate(run_bytes("curl", "-sS", "--fail", _uri(
        leaf, AuthorityInformationAccessOID.CA_ISSUERS)))
    root = x509.load_der_x509_certificate(run_bytes("curl", "-sS", "--fail", _uri(
        issuing, AuthorityInformationAccessOID.CA_ISSUERS)))
    certs["issuing_ca"], certs["root_ca"] = issuing, root
    root_pem, issuing_pem = _pem(tmp_path / "root.pem", root), _pem(tmp_path / "issuing.pem", issuing)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(root_pem.read_bytes() + issuing_pem.read_bytes())

    # The issuing CA against the root's CRL, from the issuing CA's own distribution point.
    verify = run("openssl", "verify", "-CAfile", root_pem, "-crl_check", "-crl_download", issuing_pem)
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr
    for name in ("business", "ssl", "operator", "opauth_server"):
        path = _pem(tmp_path / f"{name}.pem", certs[name])
        # The leaf against the issuing CA's CRL, downloaded from the leaf's distribution point over plain HTTP.
        verify = run("openssl", "verify", "-CAfile", root_pem, "-untrusted", issuing_pem,
                     "-crl_check", "-crl_download", path)
        assert verify.returncode == 0 and ": OK" in verify.stdout, (name, verify.stdout, verify.stderr)
        ocsp_url = run("openssl", "x509", "-in", path, "-noout", "-ocsp_uri", check=True).stdout.strip()
        assert ocsp_url == f"{served.http}/pki/ocsp"
        response = tmp_path / f"{name}.ocsp.der"
        asked = run("openssl", "ocsp", "-issuer", issuing_pem, "-cert", path, "-CAfile", bundle,
                    "-url", ocsp_url, "-respout", response)
        assert f"{path}: good" in asked.stdout and "Response verify OK" in asked.stderr, asked.stdout + asked.stderr

    responder = ocsp.load_der_ocsp_response((tmp_path / "business.ocsp.der").read_bytes()).certificates[0]
    certs["ocsp_responder"] = responder
    for name, cert in certs.items():
        assert _unexpected(pkilint("lint_pkix_cert", _pem(tmp_path / f"lint-{name}.pem", cert))) == [], name
    for ca_id in (1, 2):
        crl = tmp_path / f"{ca_id}.crl"
        crl.write_bytes(run_bytes("curl", "-sS", "--fail", f"{served.http}/pki/crl/{ca_id}.crl"))
        kind = "ARL" if ca_id == 1 else "CRL"
        assert _unexpected(pkilint("lint_crl", crl, "-t", kind, "-p", "PKIX")) == [], ca_id
    assert _unexpected(pkilint("lint_ocsp_response", tmp_path / "business.ocsp.der")) == []

    # A revocation reaches both channels through the same URLs: the CRL and OCSP answers are signed right
    # after the revoking request commits, by the server's background publisher (not inside the request).
    status, raw = api.request(f"/api/v1/ssl-certificates/{issued['ssl']}", basic=creds, method="DELETE")
    assert status == 200, raw
    deadline = time.monotonic() + 30
    while True:
        verify = run("openssl", "verify", "-CAfile", root_pem, "-untrusted", issuing_pem, "-crl_check",
                     "-crl_download", tmp_path / "ssl.pem")
        asked = run("openssl", "ocsp", "-issuer", issuing_pem, "-cert", tmp_path / "ssl.pem", "-CAfile", bundle,
                    "-url", f"{served.http}/pki/ocsp")
        published = verify.returncode != 0 and f"{tmp_path / 'ssl.pem'}: revoked" in asked.stdout
        if published or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert verify.returncode != 0 and "certificate revoked" in verify.stdout + verify.stderr
    assert f"{tmp_path / 'ssl.pem'}: revoked" in asked.stdout


def run_bytes(*args: str | Path) -> bytes:
    return subprocess.run([str(a) for a in args], capture_output=True, check=True, timeout=60).stdout


def s_client(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """openssl s_client with an empty stdin: it connects, prints the handshake and quits."""
    return subprocess.run(["openssl", "s_client", *map(str, args)], input="", capture_output=True, text=True,
                          timeout=60)


# --- the supervisor -----------------------------------------------------------------------------------------------

def test_second_start_is_refused_while_the_first_runs(instance: Path, env: dict[str, str], served: Served) -> None:
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "serve.py")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "already running" in again.stderr + again.stdout
    assert _curl(served, instance, "/login")[0] == 200  # the running one is untouched


def _served_serial(port: str) -> str:
    shown = s_client("-connect", f"127.0.0.1:{port}", "-servername", "localhost")
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", shown.stdout, re.S)
    assert pem, shown.stdout
    return format(x509.load_pem_x509_certificate(pem.group(0).encode()).serial_number, "x")


def test_supervisor_renews_the_server_certificate_and_stops_both_on_exit_or_ctrl_c(tmp_path: Path) -> None:
    env = serve_env(tmp_path / "instance")
    assert flask_cli(env, "init").returncode == 0
    https_port = env["OPAUTH_BIND"].rsplit(":", 1)[1]
    started = start_serve(env, tmp_path / "serve.log")
    served_serial = _served_serial(https_port)
    (tmp_path / "instance" / "tls" / "server.pem").unlink()  # due for re-issue (as if expiring)
    os.kill(started.proc.pid, signal.SIGHUP)  # check now instead of at the next periodic check
    deadline = time.monotonic() + 60
    while _served_serial(https_port) == served_serial:
        assert time.monotonic() < deadline, started.log.read_text()
        time.sleep(0.5)
    # nginx serves the new certificate as soon as it has reconfigured; the supervisor says so right after
    while "server certificate renewed; nginx reloaded" not in started.log.read_text():
        assert time.monotonic() < deadline, started.log.read_text()
        time.sleep(0.2)
    worker = int(re.findall(r"Booting worker with pid: (\d+)", started.log.read_text())[0])
    os.kill(worker, signal.SIGKILL)  # a worker dies: gunicorn boots another, the service goes on
    deadline = time.monotonic() + 30
    while len(re.findall(r"Booting worker", started.log.read_text())) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.proc.poll() is None
    master = int(re.findall(r"\[(\d+)\] \[INFO\] Starting gunicorn", started.log.read_text())[0])
    os.kill(master, signal.SIGTERM)  # gunicorn itself ends: the supervisor stops nginx and fails
    assert started.proc.wait(timeout=60) == 1
    assert "gunicorn exited" in started.log.read_text()
    assert run("curl", "-sS", "-k", f"https://127.0.0.1:{https_port}/").returncode != 0  # nginx is gone

    with serve(env, tmp_path / "serve2.log") as again:  # a second start reuses everything
        assert run("curl", "-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}",
                   f"{again.https}/login").stdout == "200"
    assert again.proc.returncode == 0  # Ctrl-C (SIGINT): both stopped, clean exit
    assert run("curl", "-sS", "-k", f"{again.https}/").returncode != 0
    assert run("curl", "-sS", f"{again.http}/pki/ca-bundle.pem").returncode != 0


def test_a_configured_key_passphrase_reaches_nginx_without_staying_on_disk(tmp_path: Path) -> None:
    env = serve_env(tmp_path / "instance", OPAUTH_KEY_PASSPHRASE="operator-chosen passphrase 1")
    assert flask_cli(env, "init").returncode == 0
    assert not (tmp_path / "instance" / "keys" / "passphrase").exists()
    with serve(env, tmp_path / "serve.log") as served:
        status = run("curl", "-sS", "--cacert", tmp_path / "instance" / "tls" / "ca-bundle.pem", "-o", "/dev/null",
                     "-w", "%{http_code}", f"{served.https}/login")
        assert status.stdout == "200", status.stderr
        assert not (tmp_path / "instance" / "run" / "tls-passphrase").exists()
    assert "operator-chosen" not in (tmp_path / "instance" / "nginx" / "nginx.conf").read_text()


def test_cli_issues_lists_and_shows_a_business_server_certificate(instance: Path, env: dict[str, str],
                                                                    first_init: str, tmp_path: Path) -> None:
    csr = tmp_path / "certreq.pem"
    csr.write_bytes(make_csr())
    out = tmp_path / "cert.pem"
    args: list[str | Path] = ["cert", "issue-business-server", "--csr", csr, "--out", out, "--format", "chain.pem"]
    for field, value in BUSINESS.items():
        args += [f"--{field.replace('_', '-')}", value]
    result = flask_cli(env, *args)
    assert result.returncode == 0, result.stderr
    serial = result.stderr.split("issued serial ")[1].split()[0]
    verify = run("openssl", "verify", "-CAfile", instance / "tls" / "ca-bundle.pem", "-untrusted", out, out)
    assert verify.returncode == 0, verify.stderr
    listing = flask_cli(env, "cert", "list", "--profile", "business_server")
    assert serial in listing.stdout
    shown = flask_cli(env, "cert", "show", serial)
    assert shown.returncode == 0 and "BEGIN CERTIFICATE" in shown.stdout
    assert flask_cli(env, "business-system", "list").stdout.splitlines()[1].startswith("05\t")
    bad = tmp_path / "bad.csr"
    bad.write_bytes(b"junk")
    args[args.index(csr)] = bad
    refused = flask_cli(dict(env, LC_ALL="en_US.UTF-8", LANG="en_US.UTF-8"), *args)  # the shell's language
    assert refused.returncode == 2 and "error: Not a CSR" in refused.stderr
    assert flask_cli(env, "cert", "show", "ffff").returncode == 2
    assert flask_cli(env, "audit", "verify").stdout.startswith("audit chain OK")
