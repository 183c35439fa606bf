"""Business server certificates over HTTP: an API token against HTTP Basic, under the same gunicorn.

    .venv/bin/python -m bench.issuance [--database-url postgresql+psycopg://...] [--seconds 8]

One instance, one gunicorn (2 gthread workers, as ``make bench``), clients on HTTP keep-alive cycling
through pre-made CSRs. Prints certificates/s for 1 and 4 connections with each credential. Every
certificate is recorded and audited in its request's transaction, as in production.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

from bench import run as bench_run

PATH = "/api/v1/business-server-certificates"


def _client(port: int, auth: str, bodies: list[bytes], seconds: float, out: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.request("POST", PATH, body=bodies[done % len(bodies)], headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"HTTP {response.status}")
        done += 1
    out.put(done)


def rate(port: int, auth: str, bodies: list[bytes], *, clients: int, seconds: float) -> float:
    """Certificates per second with ``clients`` keep-alive connections for about ``seconds``."""
    queue: Any = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_client, args=(port, auth, bodies[i::clients], seconds, queue))
             for i in range(clients)]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    done = sum(queue.get(timeout=seconds + 300) for _ in procs)
    elapsed = time.perf_counter() - start
    for proc in procs:
        proc.join()
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="", help="default: SQLite in a temporary instance")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(mkdtemp(prefix="opauth-issuance-"))
    instance = work / "instance"
    if args.database_url:
        plain_env = bench_run._env

        def env_with_database(inst: Path) -> dict[str, str]:
            return dict(plain_env(inst), OPAUTH_DATABASE_URL=args.database_url)

        bench_run._env = env_with_database  # type: ignore[assignment]
    bench_run._prepare_instance(instance)
    server = bench_run.Gunicorn(instance, workers=args.workers)
    try:
        bodies = [json.dumps(bench_run._business(bench_run._csr())).encode() for _ in range(400)]
        token = bench_run._issuance_token(server.port)
        rate(server.port, token, bodies, clients=2, seconds=2)  # warm-up: keys loaded, caches filled
        rows = []
        for label, auth in (("API token (Bearer)", token), ("HTTP Basic (argon2id per request)", bench_run._basic())):
            for clients in (1, 4):
                rows.append((label, clients, rate(server.port, auth, bodies, clients=clients, seconds=args.seconds)))
    finally:
        server.stop()
    database = args.database_url.split("://", 1)[0] if args.database_url else "sqlite"
    load = os.getloadavg()
    print(f"opauth issuance over HTTP, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores, load {load[0]:.1f}, {database}, gunicorn {args.workers} gthread workers")
    print("| credential | connections | certificates/s |")
    print("|---|---|---|")
    for label, clients, value in rows:
        print(f"| {label} | {clients} | {value:,.1f} |")


if __name__ == "__main__":
    main()
