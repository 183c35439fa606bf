"""`make run-apdl`: opauth and the AP download module together, ready to log in.

Run as root. Idempotent: a second run reuses both instances and loses nothing. Steps 1 and 2 run on the
first start only (a marker in the module's instance remembers them, with the opauth CA they were made
against), so later changes made in opauth or in the module (joint use, availability, profiles) are kept.
On every start it:

0. initialises opauth's instance if it is new (``flask --app app init``) and, unless opauth already answers
   at OPAUTH_PUBLIC_BASE_URL (a `make run` in another terminal), starts opauth's deployment
   (scripts/serve.py: nginx + gunicorn) as a child and waits until its discovery document answers;
1. registers the module in opauth through opauth's own CLI (``flask --app app``): business system 01
   (カードAPダウンロード) on https://localhost:8444 with its server certificate, business login with the
   redirect and back-channel logout URIs, its SSL通信証明書, a demo tenant ``demo-city`` (市町村) with joint
   use, and operator ``APDL01`` whose 業務内ID carries every permission of the module (its one-time
   password goes to a 0600 file in the module's instance and is shown only on a terminal);
2. migrates the module's own database (instance/apdl) and, through the module's services, records the
   demo tenant's profile (千代田区's code 131016, the emulated card's residence) and three demo APs;
3. starts a private pcscd + vsmartcard-vpcd with the emulated card (its contents kept in
   instance/apdl/card.json, so the card still holds what was loaded after a restart), and the module's
   gunicorn over TLS.

Ctrl-C (SIGINT) or SIGTERM stops the module, the card stack and the opauth this run started.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

OPAUTH = os.environ.get("OPAUTH_PUBLIC_BASE_URL", "https://localhost:8443").rstrip("/")
OPAUTH_INSTANCE = Path(os.environ.get("OPAUTH_INSTANCE_DIR", ROOT / "instance"))
APDL_BIND = os.environ.get("APDL_BIND", "127.0.0.1:8444")
APDL = f"https://localhost:{APDL_BIND.rsplit(':', 1)[1]}"
APDL_INSTANCE = Path(os.environ.get("APDL_INSTANCE_DIR", ROOT / "instance" / "apdl"))
TENANT, OPERATOR = "demo-city", "APDL01"
OPAUTH_START_SECONDS = 120
PERMISSIONS = "ap.download ap.delete ap.manage user.register"
DEMO_APS = (("D392F000020001", "地域図書館カード", "regional", "C"),
            ("D392F000030001", "健康ポイント", "extended", "C"),
            ("D392F000030002", "窓口予約", "extended", "A"))


def _opauth(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "flask"), "--app", "app", *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    if check and result.returncode != 0:
        raise SystemExit(f"flask --app app {' '.join(map(str, args[:3]))} failed:\n{result.stdout}{result.stderr}")
    return result


def _key_and_csr(key_path: Path) -> bytes:
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                         x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "tokyo"),
                         x509.NameAttribute(NameOID.LOCALITY_NAME, "chiyoda"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "J-LIS"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "apdl"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM)


def register_in_opauth(tls: Path) -> str | None:
    """Business system 01, demo tenant and operator; returns the operator's one-time password when new.

    Run once per opauth instance: ``tenant joint-use`` sets the whole list of tenants using system 01."""
    tls.mkdir(parents=True, exist_ok=True)
    (tls / "server.csr").write_bytes(_key_and_csr(tls / "server.key"))
    (tls / "client.csr").write_bytes(_key_and_csr(tls / "client.key"))
    if not (tls / "server.pem").exists():
        _opauth("cert", "issue-business-server", "--business-id", "01", "--name", "カードAPダウンロード",
                "--admin-org", "J-LIS", "--top-url", f"{APDL}/", "--operator-admin-url", f"{APDL}/aps",
                "--personalize-url", f"{APDL}/residents", "--csr", tls / "server.csr", "--format", "chain.pem",
                "--out", tls / "server.pem")
    _opauth("tenant", "create", "--code", TENANT, "--name", "デモ市", "--kind", "municipality", check=False)
    _opauth("tenant", "joint-use", "01", TENANT)
    _opauth("oidc", "client", "set", "01", "--enable", "--redirect-uri", f"{APDL}/auth/callback",
            "--backchannel-logout-uri", f"{APDL}/backchannel-logout", "--post-logout-redirect-uri", f"{APDL}/")
    if not (tls / "client.pem").exists():
        _opauth("ssl", "issue", "--tenant", "system", "--business-id", "01", "--host", "localhost",
                "--csr", tls / "client.csr", "--out", tls / "client.pem")
    password = None
    registered = _opauth("operator", "register", "--tenant", TENANT, "--operator-id", OPERATOR, "--name", "デモ 操作者",
                         "--business-ids", "01", "--p12-out", tls / f"{OPERATOR}-{int(time.time())}.p12", check=False)
    if registered.returncode == 0:
        password = registered.stdout.split("login password (shown once): ")[-1].strip()
    _opauth("operator", "in-business-id", "--tenant", TENANT, "--business-id", "01", "--operator-id", OPERATOR,
            "--id", "APDL-DEMO-01", "--permissions", PERMISSIONS)
    return password


def apdl_env(tls: Path, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The module's settings for this demo: the user's own APDL_* settings that apdl/settings.py knows (e.g.
    ``APDL_PAIRING_CODE_SECONDS=20 make run-apdl``), under the demo's wiring (URLs, certificates, tenant), which
    stays the demo's."""
    from apdl.settings import SETTINGS

    known = {setting.env for setting in SETTINGS}
    return {**{k: v for k, v in environ.items() if k in known},
            "APDL_INSTANCE_DIR": str(APDL_INSTANCE), "APDL_PUBLIC_BASE_URL": APDL,
            "APDL_OPAUTH_ISSUER": OPAUTH + "/oidc", "APDL_CLIENT_ID": "biz-01",
            "APDL_CLIENT_CERT": str(tls / "client.pem"), "APDL_CLIENT_KEY": str(tls / "client.key"),
            "APDL_CA_BUNDLE": str(OPAUTH_INSTANCE / "tls" / "ca-bundle.pem"), "APDL_ADMIN_TENANT": TENANT,
            "APDL_BIND": APDL_BIND, "APDL_WORKERS": "1", "APDL_TLS_CERT": str(tls / "server.pem"),
            "APDL_TLS_KEY": str(tls / "server.key"),
            # `agent`: card operations through the card agent of the paired terminal (make run-apdl-agent)
            "APDL_CARD_TRANSPORT": environ.get("APDL_CARD_TRANSPORT", "local")}


def seed_module(env: dict[str, str]) -> None:
    """The demo tenant's profile and APs through the module's services (once)."""
    from sqlalchemy import select

    from apdl import db, registry
    from apdl.app import create_app
    from apdl.models import CardAp
    from apdl.permissions import Permission
    from apdl.tenancy import Operator

    app = create_app({"INSTANCE_DIR": env["APDL_INSTANCE_DIR"], "ADMIN_TENANT": TENANT})  # migrated by main()
    setup = Operator(session_id="-", sub="make run-apdl", sid="-", name="make run-apdl", tenant_code=TENANT,
                     tenant_name="デモ市", in_business_id="setup", permissions=frozenset(Permission),
                     is_admin_tenant=True)
    with app.test_request_context():
        session = db.get_session()
        registry.set_profile(session, {"tenant_code": TENANT, "kind": "municipality", "municipality_code": "131016"},
                             operator=setup)
        ids = []
        for aid, name, area, ap_type in DEMO_APS:
            existing = session.scalars(select(CardAp).where(CardAp.aid == aid)).first()
            ids.append(existing.id if existing else registry.register_ap(session, {
                "aid": aid, "name": name, "description": f"{name}（デモ）", "provider_name": "デモ市", "area": area,
                "ap_type": ap_type, "size_bytes": "2048", "pin_max_tries": "3", "business_id": "01"},
                operator=setup).id)
        registry.change_availability(session, TENANT, ids, add=True, operator=setup)
        session.commit()
    app.extensions[db.ENGINE_KEY].dispose()


MARKER = APDL_INSTANCE / "demo-setup.done"


def _opauth_ca_fingerprint(ca_bundle: Path) -> str:
    return x509.load_pem_x509_certificates(ca_bundle.read_bytes())[-1].fingerprint(hashes.SHA256()).hex()


def set_up_once(ca_bundle: Path, tls: Path, env: dict[str, str]) -> str | None:
    """Register in opauth and seed the module on the first start against this opauth; later starts keep what
    administrators changed since. Returns the operator's one-time password when it was just made."""
    made_for = _opauth_ca_fingerprint(ca_bundle)
    if MARKER.exists() and MARKER.read_text().strip() == made_for:
        return None
    password = register_in_opauth(tls)
    seed_module(env)
    MARKER.write_text(made_for + "\n")
    return password


def show_password(password: str) -> None:
    """The operator's one-time password: to a 0600 file; on the screen only when it is a terminal."""
    path = APDL_INSTANCE / f"{OPERATOR}-one-time-password"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(password + "\n")
    if sys.stdout.isatty():
        print(f"one-time password of {OPERATOR}: {password}")
    print(f"the one-time password is in {path} (mode 0600); delete the file after the first login")


def opauth_answers(ca_bundle: Path) -> bool:
    """True when opauth's OIDC discovery document answers over HTTPS (trusting opauth's own CA)."""
    context = ssl.create_default_context(cafile=str(ca_bundle))
    try:
        with urllib.request.urlopen(  # noqa: S310 - OPAUTH is an https:// base URL
                f"{OPAUTH}/oidc/.well-known/openid-configuration", context=context, timeout=5) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False


def start_opauth(ca_bundle: Path) -> subprocess.Popen[bytes] | None:
    """opauth's deployment (scripts/serve.py) as a child, unless one already answers; None when reused."""
    if opauth_answers(ca_bundle):
        print(f"opauth already answers at {OPAUTH}: using it", flush=True)
        return None
    # Its own session: the terminal's Ctrl-C reaches only this script, which stops it in order.
    serve = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "serve.py")], cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + OPAUTH_START_SECONDS
    while not opauth_answers(ca_bundle):
        if serve.poll() is not None:
            raise SystemExit(f"opauth (scripts/serve.py) exited with status {serve.returncode} while starting")
        if time.monotonic() > deadline:
            stop_child(serve)
            raise SystemExit(f"opauth did not answer at {OPAUTH} within {OPAUTH_START_SECONDS} s")
        time.sleep(0.5)
    return serve


def stop_child(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """opauth (started or reused), register, seed, the card stack and the module; wait for Ctrl-C/SIGTERM."""
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops everything as Ctrl-C does, even while starting
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background, where SIGINT is inherited ignored
    ca_bundle = OPAUTH_INSTANCE / "tls" / "ca-bundle.pem"
    if not ca_bundle.exists():
        initialised = subprocess.run([str(BIN / "flask"), "--app", "app", "init"], cwd=ROOT, check=False)
        if initialised.returncode != 0:
            raise SystemExit("flask --app app init failed")
    serve: subprocess.Popen[bytes] | None = None
    gunicorn: subprocess.Popen[bytes] | None = None
    stack = None
    try:
        serve = start_opauth(ca_bundle)
        tls = APDL_INSTANCE / "tls"
        APDL_INSTANCE.mkdir(parents=True, exist_ok=True)
        env = apdl_env(tls)
        from apdl import db
        from apdl.app import create_app

        app = create_app({"INSTANCE_DIR": env["APDL_INSTANCE_DIR"], "ADMIN_TENANT": TENANT})
        db.upgrade(app.config["DATABASE_URL"])  # a newer checkout's migrations, on every start, before seeding
        app.extensions[db.ENGINE_KEY].dispose()
        password = set_up_once(ca_bundle, tls, env)

        from apdl.cardops import card_keys
        from apdl.emulator.card import CardState, EmulatedCard
        from apdl.emulator.stack import StackUnavailable, start_stack
        from apdl.settings import load_settings

        # The emulated card keeps its contents in card.json; a new one is issued with the module's SCP03 keys
        # (APDL_CARD_KEYS or the instance's card-keys file).
        card_file = APDL_INSTANCE / "card.json"
        master = card_keys(load_settings(environ={**os.environ, **env}))
        issued = None if card_file.exists() else CardState.issued(master)
        if issued is None:
            kept = CardState.from_json(json.loads(card_file.read_text()))
            if not kept.kdd:  # a card of a demo before per-card keys: personalised again, its contents kept
                fresh = CardState.issued(master)
                kept.kdd, kept.scp03_keys = fresh.kdd, fresh.scp03_keys
                issued = kept
        try:
            stack = start_stack(APDL_INSTANCE / "pcsc", EmulatedCard(issued, state_path=card_file))
        except StackUnavailable as exc:
            raise SystemExit(f"the PC/SC stack cannot start (root, pcscd and vsmartcard-vpcd are needed): {exc}")
        server_env = {k: v for k, v in os.environ.items() if not k.startswith("APDL_")}
        server_env.update(env, APDL_READER=stack.reader, PCSCLITE_CSOCK_NAME=str(stack.socket_path))
        gunicorn = subprocess.Popen([str(BIN / "gunicorn"), "--config", "python:apdl.gunicorn_conf"], cwd=ROOT,
                                    env=server_env, start_new_session=True)
        print(f"\nAP download module: {APDL}/  (log in through opauth at {OPAUTH})")
        print(f"operator: tenant {TENANT}, ID {OPERATOR}")
        if password:
            show_password(password)
        if env["APDL_CARD_TRANSPORT"] == "agent":
            print("card operations go through the card agent of the terminal paired with the session "
                  "(`make run-apdl-agent` in another terminal)")
        else:
            print(f"emulated card in '{stack.reader}': card FID {stack.card.state.card_identifier}, "
                  "residence 131016")
        print("Ctrl-C stops " + ("the module and opauth" if serve else "the module (opauth keeps running)") + "\n",
              flush=True)
        while gunicorn.poll() is None and (serve is None or serve.poll() is None):
            time.sleep(0.5)
        print("apdl demo: " + ("the module" if gunicorn.poll() is not None else "opauth") + " exited; stopping",
              file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_child(gunicorn)
        if stack is not None:
            stack.stop()
        stop_child(serve)


if __name__ == "__main__":
    sys.exit(main())
