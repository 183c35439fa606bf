"""`make bench-apdl`: APDU round trips through pyscard → pcscd → vsmartcard-vpcd → the emulated card.

Prints a Markdown table:

- APDU round trip (SELECT of the card manager): median and p95 over 2,000 commands (target: median ≤ 1 ms);
- the same with the emulator's TCP_QUICKACK re-arming switched off (what delayed ACK costs; 40 commands);
- a three-AP download (free space, three INSTALLs, GET STATUS to confirm) on a fresh card: median of 30;
- 1,000 install/delete cycles of one AP: total and per cycle;
- the module's own three-AP download (cardops.download: rules, GET STATUS, pending rows committed before each
  INSTALL and completed after 9000, operation log; SQLite) on a fresh card: median of 30;
- 利用者 search over 100,000 利用者 of one tenant on PostgreSQL (residents.search, what the 利用者登録 screen
  runs: the newest 200, one カードFID found, one not found): p95 of each against the 200 ms target. The rows
  are created through the module's service (residents.register: validation, uniqueness, operation log) in a
  fresh database on APDL_BENCH_PG_URL (default: the local postgres server), dropped afterwards.

- card status feed import (cardstatus.import_feed, what `flask --app apdl.app apdl import-status` runs: parse and
  check every row, COPY into a staging table, one INSERT … ON CONFLICT, one log entry) of STATUS_ROWS
  (default 1,000,000) rows of CSV on PostgreSQL, then the same batch again (a no-op): against the 60 s target.

Needs root and pcscd + vsmartcard-vpcd (scripts/system-deps.sh) for the card lines; runs a private pcscd in a
temporary directory. `python -m bench.apdl search` runs only the search lines, `python -m bench.apdl status`
only the feed import (no card stack).
A benchmark prints figures; it asserts nothing.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apdl.card import commands  # noqa: E402
from apdl.card.adapter import GlobalPlatformCardSession  # noqa: E402
from apdl.card.commands import ApSpec, ApType, Area  # noqa: E402
from apdl.card.pcsc import PcscTransport  # noqa: E402
from apdl.card.scp03 import StaticKeys  # noqa: E402
from apdl.emulator.card import CardState  # noqa: E402
from apdl.emulator.stack import PcscStack, start_stack  # noqa: E402
from apdl.permissions import Permission  # noqa: E402
from apdl.tenancy import Operator  # noqa: E402

ROUND_TRIPS = 2000
ROUND_TRIPS_WITHOUT_QUICKACK = 40
DOWNLOADS = 30
CYCLES = 1000
KEY = bytes(range(16))
SCP03_KEYS = StaticKeys.generate()
RESIDENTS = int(os.environ.get("APDL_BENCH_RESIDENTS", "100000"))
SEARCHES = 300
PG_URL = os.environ.get("APDL_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
KANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワ"
KANJI = "山田川本中村林森木下上野原石井小松竹高橋"


def _ap(n: int, ap_type: ApType) -> ApSpec:
    aid = bytes.fromhex("D392F00003") + n.to_bytes(2, "big")
    if ap_type is ApType.A:
        return ApSpec(aid=aid, ap_type=ap_type, size_bytes=2048, user_id=b"U%04d" % n, pin=b"1234", auth_key=KEY)
    return ApSpec(aid=aid, ap_type=ap_type, size_bytes=2048, user_id=b"U%04d" % n)


def _timed(action: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def _module_downloads(stack: PcscStack, instance: Path) -> list[float]:
    """cardops.download of three APs, as the カードAP搭載 screen calls it, on fresh cards."""
    from apdl import cardops, db, registry, residents
    from apdl.app import create_app
    from apdl.tenancy import scope_for

    app = create_app({"INSTANCE_DIR": str(instance), "READER": stack.reader, "ADMIN_TENANT": "center"})
    db.upgrade(app.config["DATABASE_URL"])
    admin = Operator(session_id="-", sub="bench", sid="-", name="bench", tenant_code="center", tenant_name="center",
                     in_business_id="B1", permissions=frozenset(Permission), is_admin_tenant=True)
    operator = Operator(session_id="-", sub="bench", sid="-", name="bench", tenant_code="minamiedo",
                        tenant_name="南江戸市", in_business_id="B2", permissions=frozenset(Permission),
                        is_admin_tenant=False)
    samples: list[float] = []
    with app.test_request_context():
        session = db.get_session()
        ids = [registry.register_ap(session, {"aid": f"D392F0000500{n:02d}", "name": f"AP{n}", "provider_name": "p",
                                              "area": "extended", "ap_type": t, "size_bytes": "2048",
                                              "pin_max_tries": "3", "business_id": "05"}, operator=admin).id
               for n, t in ((1, "A"), (2, "C"), (3, "C"))]
        registry.set_profile(session, {"tenant_code": "minamiedo", "kind": "municipality",
                                       "municipality_code": "131016"}, operator=admin)
        registry.change_availability(session, "minamiedo", ids, add=True, operator=admin)
        scope = scope_for(session, operator)
        resident = residents.register(scope, {
            "card_status": "active", "card_identifier": CardState().card_identifier, "kana_family": "ヤマダ",
            "kana_given": "ハナコ", "kanji_family": "山田", "kanji_given": "花子", "birth_date": "1986-06-02",
            "gender": "female", "postal_code": "100-0001", "address1": "千代田１", "holder_request": "on"},
            operator=operator)
        session.commit()
        master = cardops.card_keys(app.config)
        for _ in range(DOWNLOADS):
            stack.card.load_state(CardState.issued(master))  # issued with keys diversified from the module's
            start = time.perf_counter()
            with cardops.open_card() as card:
                cardops.download(scope, card, resident, ids, pin="1234", operator=operator)
            samples.append(time.perf_counter() - start)
    app.extensions[db.ENGINE_KEY].dispose()
    return samples


def _card(n: int) -> str:
    return f"9{n:015d}"  # 16 digits (a 12-digit number could be a 個人番号, which is refused)


def _resident_search() -> dict[str, list[float]]:
    """Register RESIDENTS 利用者 through residents.register on a fresh PostgreSQL database, then time searches."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from apdl import db, residents
    from apdl.app import create_app
    from apdl.models import Resident
    from apdl.tenancy import scope_for

    name = f"apdl_bench_{os.getpid()}"
    admin_engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    operator = Operator(session_id="-", sub="bench", sid="-", name="bench", tenant_code="minamiedo",
                        tenant_name="南江戸市", in_business_id="B2", permissions=frozenset(Permission),
                        is_admin_tenant=False)
    rng = random.Random(15)  # names for a benchmark, not secrets
    samples: dict[str, list[float]] = {"newest 200": [], "one カードFID (found)": [], "one カードFID (not found)": []}
    try:
        with tempfile.TemporaryDirectory(prefix="apdl-search-") as tmp:
            app = create_app({"INSTANCE_DIR": tmp, "DATABASE_URL": url, "ADMIN_TENANT": "center"})
            db.upgrade(url)
            with app.test_request_context():
                session = db.get_session()
                scope = scope_for(session, operator)
                started = time.perf_counter()
                for n in range(RESIDENTS):
                    residents.register(scope, {
                        "card_status": "active", "card_identifier": _card(n),
                        "kana_family": "".join(rng.choices(KANA, k=3)),
                        "kana_given": "".join(rng.choices(KANA, k=3)),
                        "kanji_family": "".join(rng.choices(KANJI, k=2)),
                        "kanji_given": "".join(rng.choices(KANJI, k=2)),
                        "birth_date": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                        "gender": rng.choice(("male", "female", "other")), "postal_code": "100-0001",
                        "address1": "千代田１", "holder_request": "on"}, operator=operator)
                    if n % 5000 == 4999:
                        session.commit()
                        session.expunge_all()
                        print(f"  {n + 1:,} 利用者 registered ({time.perf_counter() - started:.0f} s)",
                              file=sys.stderr, flush=True)
                session.commit()
                session.execute(text("ANALYZE apdl_residents"))
                session.commit()
                absent = RESIDENTS + 1
                queries: dict[str, Callable[[], list[Resident]]] = {
                    "newest 200": lambda: residents.search(scope),
                    "one カードFID (found)": lambda: residents.search(scope, _card(rng.randrange(RESIDENTS))),
                    "one カードFID (not found)": lambda: residents.search(
                        scope, _card(absent + rng.randrange(RESIDENTS)))}
                for label, query in queries.items():
                    for _ in range(20):  # warm up
                        query()
                    for _ in range(SEARCHES):
                        session.expunge_all()
                        start = time.perf_counter()
                        found = query()
                        samples[label].append(time.perf_counter() - start)
                        if label == "newest 200" and len(found) != 200:
                            raise RuntimeError("search returned too few rows")
                session.rollback()
            app.extensions[db.ENGINE_KEY].dispose()
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()
    return samples


STATUS_ROWS = int(os.environ.get("APDL_BENCH_STATUS_ROWS", "1000000"))


def _status_import() -> dict[str, float]:
    """A STATUS_ROWS-row CSV feed imported through cardstatus.import_feed into a fresh PostgreSQL database."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from apdl import cardstatus, db
    from apdl.app import create_app

    statuses = ("lost", "stolen", "suspended", "abolished", "moved", "active")
    lines = ["card_identifier,status,residence_code,occurred_at"]
    for n in range(STATUS_ROWS):
        status = statuses[n % len(statuses)]
        lines.append(f"{_card(n)},{status},{'011002' if status == 'moved' else ''},2026-11-29T0{n % 10}:00:00+09:00")
    data = ("\n".join(lines) + "\n").encode()
    name = f"apdl_bench_status_{os.getpid()}"
    admin_engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    figures: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="apdl-status-") as tmp:
            app = create_app({"INSTANCE_DIR": tmp, "DATABASE_URL": url, "ADMIN_TENANT": "center"})
            db.upgrade(url)
            with app.test_request_context():
                session = db.get_session()
                for label in ("first import", "the same batch again"):
                    start = time.perf_counter()
                    result = cardstatus.import_feed(session, data, fmt=cardstatus.FeedFormat.CSV,
                                                    batch_id="bench-1", actor="bench", tenant_code="center")
                    figures[label] = time.perf_counter() - start
                    if result.rows != STATUS_ROWS or result.changed != (0 if result.repeated else STATUS_ROWS):
                        raise RuntimeError(f"unexpected import result {result}")
                if cardstatus.count_rows(session) != STATUS_ROWS:
                    raise RuntimeError("rows missing after the import")
            app.extensions[db.ENGINE_KEY].dispose()
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()
    return figures


def _print_status(figures: dict[str, float]) -> None:
    first, again = figures["first import"], figures["the same batch again"]
    print(f"| card status feed import, {STATUS_ROWS:,} CSV rows, PostgreSQL (parse, check, COPY, upsert, log) "
          f"| {first:.1f} s | — | ≤ 60 s |")
    print(f"| the same batch again (checked, recognised, nothing changed) | {again:.1f} s | — | reported |")


def _print_search(samples: dict[str, list[float]]) -> None:
    for label, times in samples.items():
        p95 = statistics.quantiles(times, n=20)[-1]
        print(f"| 利用者 search over {RESIDENTS:,} rows of one tenant, PostgreSQL: {label} ({SEARCHES} searches) "
              f"| {_ms(statistics.median(times))} | {_ms(p95)} | p95 ≤ 200 ms |")


def _header() -> None:
    started = datetime.now(UTC)
    print(f"apdl benchmark, {started:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print()
    print("| measurement | median | p95 | target |")
    print("|---|---|---|---|")


def main() -> None:
    """Start a private stack, measure, print the table (``search``: only the 利用者 search lines)."""
    if sys.argv[1:] == ["status"]:
        status = _status_import()
        _header()
        _print_status(status)
        return
    if sys.argv[1:] == ["search"]:
        search = _resident_search()
        _header()
        _print_search(search)
        return
    with tempfile.TemporaryDirectory(prefix="apdl-bench-") as tmp:
        stack: PcscStack = start_stack(Path(tmp))
        try:
            transport = PcscTransport(stack.reader)
            session = GlobalPlatformCardSession(transport)
            select = commands.select(commands.CARD_MANAGER_AID).to_bytes()
            _timed(lambda: transport.transmit(select), 50)  # warm up
            fast = _timed(lambda: transport.transmit(select), ROUND_TRIPS)
            assert stack.link is not None
            stack.link.quickack = False
            slow = _timed(lambda: transport.transmit(select), ROUND_TRIPS_WITHOUT_QUICKACK)
            stack.link.quickack = True

            aps = [_ap(1, ApType.A), _ap(2, ApType.C), _ap(3, ApType.C)]

            def download() -> None:
                session.free_space(Area.EXTENDED)
                for ap in aps:
                    session.install(ap, area=Area.EXTENDED)
                listed = {e.aid for e in session.list_apps()}
                if not {ap.aid for ap in aps} <= listed:
                    raise RuntimeError("download incomplete")

            downloads = []
            for _ in range(DOWNLOADS):
                stack.card.load_state(CardState())
                downloads += _timed(download, 1)

            plain_session, session = session, GlobalPlatformCardSession(transport, keys=SCP03_KEYS)
            secure_downloads = []
            for _ in range(DOWNLOADS):
                stack.card.load_state(CardState(scp03_keys=SCP03_KEYS.to_hex()))
                secure_downloads += _timed(download, 1)
            session = plain_session

            stack.card.load_state(CardState())
            one = _ap(9, ApType.C)

            def cycle() -> None:
                session.install(one, area=Area.EXTENDED)
                session.delete(one.aid)

            cycles = _timed(cycle, CYCLES)
            transport.close()
            module = _module_downloads(stack, Path(tmp) / "apdl")
        finally:
            stack.stop()
    search = _resident_search()
    status = _status_import()

    _header()
    p95 = statistics.quantiles(fast, n=20)[-1]
    print(f"| APDU round trip through pcscd + vpcd + emulator ({ROUND_TRIPS:,} SELECTs) "
          f"| {_ms(statistics.median(fast))} | {_ms(p95)} | median ≤ 1 ms |")
    print(f"| the same without re-arming TCP_QUICKACK ({ROUND_TRIPS_WITHOUT_QUICKACK} SELECTs) "
          f"| {_ms(statistics.median(slow))} | {_ms(max(slow))} (max) | (shows the pitfall) |")
    print(f"| download of 3 APs (free space, 3 INSTALLs, GET STATUS; {DOWNLOADS} fresh cards) "
          f"| {_ms(statistics.median(downloads))} | {_ms(max(downloads))} (max) | ≤ 100 ms |")
    print(f"| the same under SCP03 (a session per SELECT of a security domain; C-MAC, C-DECRYPTION, R-MAC) "
          f"| {_ms(statistics.median(secure_downloads))} | {_ms(max(secure_downloads))} (max) | ≤ 100 ms |")
    print(f"| the module's download of 3 APs under SCP03 (rules, GET STATUS, recorded rows, log; SQLite; "
          f"{DOWNLOADS} fresh cards) "
          f"| {_ms(statistics.median(module))} | {_ms(max(module))} (max) | ≤ 100 ms |")
    print(f"| {CYCLES:,} install/delete cycles | {_ms(statistics.median(cycles))} per cycle "
          f"| total {sum(cycles):.2f} s | reported |")
    _print_search(search)
    _print_status(status)


if __name__ == "__main__":
    main()
