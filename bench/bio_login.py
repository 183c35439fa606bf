"""Biometric login, end to end in-process: logins per second, where the time goes, and py_webauthn used raw.

One operator registered through the CLI, one software authenticator (tests/bio/softauthn.py) enrolled by the
administrator through the screens' JSON calls, then N logins as the browser makes them (login page for the
form token, ``/bio/login/options``, ``/bio/login/verify``) through the WSGI app (no HTTP, no TLS; the client
certificate check is off, as in the WebAuthn tests). The split comes from cProfile over the same logins:
the challenge (options request), the WebAuthn verification (py_webauthn inside), the session start and the
audit entries. The yardstick: ``webauthn.verify_authentication_response`` alone on assertions of the same kind.
``python -m bench.bio_login`` prints one line per figure; ``bench.peers`` adds them to its table.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOGINS = int(os.environ.get("BIO_LOGINS", "200"))


def _stats_seconds(stats: pstats.Stats, name: str, where: str = "") -> float:
    """Cumulative seconds of the functions called ``name`` (in a file whose path contains ``where``)."""
    total = 0.0
    for (file, _line, function), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if function == name and where in file:
            total += ct
    return total


def raw_verifications_per_second(seconds: float = 2.0) -> float:
    """py_webauthn's verify_authentication_response on fresh assertions (challenge, counter), one core."""
    from webauthn import verify_authentication_response

    from tests.bio.softauthn import SoftAuthenticator, b64url

    authn = SoftAuthenticator()
    public_key = authn.cose_public_key()
    ceremonies = []
    for _ in range(500):  # made beforehand: only the verification is timed
        challenge = os.urandom(32)
        ceremonies.append((challenge, authn.get({"challenge": b64url(challenge)})))
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        challenge, assertion = ceremonies[count % len(ceremonies)]
        verify_authentication_response(credential=assertion, expected_challenge=challenge,
                                       expected_rp_id="localhost", expected_origin="https://localhost:8443",
                                       credential_public_key=public_key, credential_current_sign_count=0,
                                       require_user_verification=True)
        count += 1
    return count / elapsed


def _setup(work: Path, operators: int = 1, *, base_url: str | None = None,
           name: str = "bio-instance") -> tuple[Any, list[tuple[str, Any, Any]]]:
    """An instance with ``operators`` biometric operators (BIO01...), each with an enrolled software
    authenticator, set up through the CLI and the screens' JSON calls; (app, [(operator_id, authn, registered)])."""
    from bench import run as own

    instance = work / name
    if base_url is not None:  # pinned at init: the WebAuthn origin and RP ID follow it
        os.environ["OPAUTH_PUBLIC_BASE_URL"] = base_url
    own._prepare_instance(instance)
    from app import create_app
    from tests.bio.helpers import manager_enrols, register_biometric
    from tests.bio.softauthn import SoftAuthenticator

    app = create_app()
    admin = app.test_client()
    page = admin.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    admin.post("/login", data={"csrf_token": token.group(1), "tenant": "system", "operator_id": "admin",
                               "password": own.PASSWORD})
    origin = app.config["WEBAUTHN_ORIGIN"]
    made = []
    for i in range(operators):
        operator_id = f"BIO{i + 1:02d}"
        registered = register_biometric(app, operator_id)
        authn = SoftAuthenticator(rp_id=app.config["WEBAUTHN_RP_ID"], origin=origin)
        enrolled = manager_enrols(admin, operator_id, authn)
        assert enrolled.status_code == 200, enrolled.get_data(as_text=True)
        made.append((operator_id, authn, registered))
    return app, made


def per_request(app: Any, operator_id: str, authn: Any, logins: int) -> dict[str, float]:
    """CPU (``time.process_time``, ms) and SQL statements per request of a login, in-process, mean over ``logins``.

    The client's own work (the test client's request building, the authenticator's signature) is outside
    the timed spans only where it can be: the test client runs in this process, so its share is included.
    """
    from sqlalchemy import event

    engine = app.extensions["opauth.engine"]
    current = ["none"]
    statements = {"page": 0, "options": 0, "verify": 0, "none": 0}
    cpu = {"page": 0.0, "options": 0.0, "verify": 0.0}

    def count(*_args: Any) -> None:
        statements[current[0]] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(logins):
            client = app.test_client()
            current[0], start = "page", time.process_time()
            html = client.get("/bio/login").get_data(as_text=True)
            cpu["page"] += time.process_time() - start
            match = re.search(r'data-csrf="([^"]+)"', html)
            assert match is not None
            headers = {"X-CSRFToken": match.group(1)}
            current[0], start = "options", time.process_time()
            options = client.post("/bio/login/options", json={"tenant": "system", "operator_id": operator_id},
                                  headers=headers)
            cpu["options"] += time.process_time() - start
            current[0] = "none"
            assertion = authn.get(options.get_json())
            current[0], start = "verify", time.process_time()
            response = client.post("/bio/login/verify", json={"credential": assertion}, headers=headers)
            cpu["verify"] += time.process_time() - start
            current[0] = "none"
            assert response.status_code == 200, response.get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    figures = {f"{name} CPU ms": seconds * 1000 / logins for name, seconds in cpu.items()}
    figures["login CPU ms"] = sum(cpu.values()) * 1000 / logins
    figures.update({f"{name} statements": statements[name] / logins for name in cpu})
    return figures


def bench(work: Path, logins: int = LOGINS) -> dict[str, float]:
    """Logins per second and the split (ms per login); in-process, sequential."""
    os.environ["OPAUTH_BIOMETRIC_CLIENT_CERT_REQUIRED"] = "false"
    from tests.bio.helpers import bio_login

    app, [(operator_id, authn, _registered)] = _setup(work)

    def one() -> None:
        client = app.test_client()
        response = bio_login(client, operator_id, authn)
        assert response.status_code == 200, response.get_data(as_text=True)

    for _ in range(10):
        one()
    start = time.perf_counter()
    for _ in range(logins):
        one()
    rate = logins / (time.perf_counter() - start)
    split_cpu = per_request(app, operator_id, authn, max(logins // 2, 10))
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(logins // 2 or 1):
        one()
    profile.disable()
    stats = pstats.Stats(profile)
    n = logins // 2 or 1
    total = _stats_seconds(stats, "bio_login")
    split = {name: _stats_seconds(stats, fn, where) * 1000 / n for name, fn, where in (
        ("login page (form token)", "bio_login_options", ""), ("challenge (options)", "login_options", ""),
        ("verification request", "login_verify", ""),
        ("WebAuthn verification (py_webauthn)", "verify_assertion", ""),
        ("session start", "start_session", ""), ("audit entries", "record_event", ""),
        ("page rendering", "render_template", ""), ("throttle checks", "is_throttled", ""),
        ("database commits (fsync)", "<method 'commit' of 'sqlite3.Connection' objects>", ""))}
    split["login page (form token)"] -= split["challenge (options)"]
    app.extensions["opauth.engine"].dispose()
    return {"logins_per_second": rate, "profiled_ms": total * 1000 / n, **split, **split_cpu}


CLIENTS = int(os.environ.get("BIO_CLIENTS", "4"))
HTTP_SECONDS = float(os.environ.get("BIO_SECONDS", "15"))


def _authenticator(state: dict[str, Any]) -> Any:
    """A software authenticator rebuilt in a client process from ``_state``."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from tests.bio.softauthn import SoftAuthenticator

    authn = SoftAuthenticator(rp_id=state["rp_id"], origin=state["origin"])
    key = load_pem_private_key(state["key"], None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    authn.key = key
    authn.credential_id, authn.counter = state["credential_id"], state["counter"]
    return authn


def _state(authn: Any) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization

    return {"rp_id": authn.rp_id, "origin": authn.origin, "credential_id": authn.credential_id,
            "counter": authn.counter, "key": authn.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())}


def _http_client(args: tuple[int, str, str, str, str, dict[str, Any], float, Any]) -> None:
    """One terminal: full logins (page, options, assertion, verify) on one keep-alive TLS connection with the
    operator's certificate, a new cookie session per login, until the deadline; puts (logins, failures)."""
    import http.client
    import json
    import ssl

    port, ca, cert, key, operator_id, state, deadline, out = args
    authn = _authenticator(state)
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    base = f"https://localhost:{port}"

    def connect() -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("localhost", port, context=context, timeout=60)

    conn = connect()

    def call(method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, str, bytes]:
        nonlocal conn
        for attempt in (1, 2):
            try:
                conn.request(method, path, body=json.dumps(body) if body is not None else None,
                             headers={"Referer": base + "/bio/login", **headers,
                                      **({"Content-Type": "application/json"} if body is not None else {})})
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionError, http.client.CannotSendRequest):
                conn.close()
                conn = connect()  # the server closed an idle keep-alive connection
                if attempt == 2:
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = connect()
            cookie = response.getheader("Set-Cookie", "")
            return response.status, cookie.split(";", 1)[0], data
        raise AssertionError("unreachable")

    done = failed = 0
    while time.monotonic() < deadline:
        _status, cookie, page = call("GET", "/bio/login", None, {})
        match = re.search(rb'data-csrf="([^"]+)"', page)
        assert match is not None, page[:300]
        headers = {"X-CSRFToken": match.group(1).decode(), "Cookie": cookie}
        status, new_cookie, options = call("POST", "/bio/login/options",
                                           {"tenant": "system", "operator_id": operator_id}, headers)
        if status != 200:
            failed += 1
            continue
        headers["Cookie"] = new_cookie or cookie
        status, _cookie, body = call("POST", "/bio/login/verify",
                                     {"credential": authn.get(json.loads(options))}, headers)
        if status == 200 and b"redirect" in body:
            done += 1
        else:
            failed += 1
    conn.close()
    out.put((done, failed))


def bench_http(work: Path, clients: int = CLIENTS, seconds: float = HTTP_SECONDS,
               cert_required: bool = True) -> dict[str, float]:
    """Logins per second over HTTPS against gunicorn (config/gunicorn.conf.py, 2 workers, TLS terminated by
    gunicorn, client certificates), ``clients`` terminal processes each logging in as its own operator (one
    credential's signature counter orders its logins, so one terminal per credential, as in an office), and
    the server's CPU per login (gunicorn master and workers, from /proc)."""
    import multiprocessing
    import subprocess

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from bench.peers import _children, _cpu_ticks
    from bench.run import _env, _free_port, wait_for_port

    port = _free_port()
    saved = {key: os.environ.get(key) for key in ("OPAUTH_BIOMETRIC_CLIENT_CERT_REQUIRED", "OPAUTH_PUBLIC_BASE_URL")}
    os.environ["OPAUTH_BIOMETRIC_CLIENT_CERT_REQUIRED"] = "true" if cert_required else "false"
    try:
        app, made = _setup(work, clients, base_url=f"https://localhost:{port}", name="bio-http-instance")
    finally:  # the rest of a bench run (bench.peers) keeps its own settings
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    app.extensions["opauth.engine"].dispose()
    instance = work / "bio-http-instance"
    terminals = []
    for operator_id, authn, registered in made:
        key, cert, _chain = pkcs12.load_key_and_certificates(registered.p12.read_bytes(),
                                                             registered.p12_password.encode())
        assert key is not None and cert is not None
        cert_path, key_path = work / f"{operator_id}.pem", work / f"{operator_id}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        terminals.append((operator_id, str(cert_path), str(key_path), _state(authn)))
    env = dict(_env(instance), OPAUTH_BIND=f"127.0.0.1:{port}", OPAUTH_WORKERS="2",
               OPAUTH_BIOMETRIC_CLIENT_CERT_REQUIRED="true" if cert_required else "false")
    config = os.environ.get("BIO_GUNICORN_CONFIG", "config/gunicorn.conf.py")
    server = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "--config", config,
                               "--log-level", "warning", "--access-logfile", "/dev/null"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, server)
        ca = str(instance / "tls" / "ca-bundle.pem")
        context = multiprocessing.get_context("spawn")
        queue: Any = context.Queue()

        def run(span: float) -> tuple[int, int, float, float]:
            pids = [server.pid, *_children(server.pid)]
            ticks = sum(_cpu_ticks(pid) for pid in pids)
            deadline = time.monotonic() + span
            procs = [context.Process(target=_http_client, args=((port, ca, cert, key, operator_id, state, deadline,
                                                                 queue),))
                     for operator_id, cert, key, state in terminals]
            started = time.perf_counter()
            for proc in procs:
                proc.start()
            results = [queue.get(timeout=span + 120) for _ in procs]
            elapsed = time.perf_counter() - started
            for proc in procs:
                proc.join()
            cpu = (sum(_cpu_ticks(pid) for pid in pids) - ticks) / os.sysconf("SC_CLK_TCK")
            return sum(r[0] for r in results), sum(r[1] for r in results), elapsed, cpu

        # Warm-up (workers import, caches fill); the authenticators' counters move on in the clients, so
        # every terminal then continues with a fresh operator state: the counters only need to increase.
        for terminal in terminals:
            terminal[3]["counter"] += 10_000
        run(2.0)
        for terminal in terminals:
            terminal[3]["counter"] += 1_000_000
        logins, failures, elapsed, cpu = run(seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"http logins_per_second": logins / elapsed, "http server CPU ms per login": cpu * 1000 / max(logins, 1),
            "http failures": float(failures), "http clients": float(clients)}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="opauth-bio-bench-"))
    if "--http" in sys.argv:
        figures = bench_http(work, seconds=3.0 if "--quick" in sys.argv else HTTP_SECONDS,
                             cert_required="--no-client-cert" not in sys.argv)
        for key, value in figures.items():
            print(f"{key}: {value:,.2f}")
        print(f"load average: {os.getloadavg()[0]:.2f}")
        return
    if "--split" in sys.argv:  # CPU and statements per request only (quick, for comparing two versions)
        os.environ["OPAUTH_BIOMETRIC_CLIENT_CERT_REQUIRED"] = "false"
        app, [(operator_id, authn, _registered)] = _setup(work)
        per_request(app, operator_id, authn, 20)  # warm
        for key, value in per_request(app, operator_id, authn, LOGINS).items():
            print(f"{key}: {value:,.2f}")
        print(f"load average: {os.getloadavg()[0]:.2f}")
        return
    figures = bench(work, 20 if "--quick" in sys.argv else LOGINS)
    for key, value in figures.items():
        print(f"{key}: {value:,.2f}")
    print(f"raw py_webauthn verifications/s: {raw_verifications_per_second():,.0f}")


if __name__ == "__main__":
    main()
