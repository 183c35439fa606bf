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
import sys
import tempfile
import time
from pathlib import Path

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


def bench(work: Path, logins: int = LOGINS) -> dict[str, float]:
    """Logins per second and the split (ms per login); in-process, sequential."""
    from bench import run as own

    instance = work / "bio-instance"
    own._prepare_instance(instance)
    os.environ["OPAUTH_BIOMETRIC_CLIENT_CERT_REQUIRED"] = "false"
    from app import create_app
    from tests.bio.helpers import bio_login, manager_enrols, register_biometric
    from tests.bio.softauthn import SoftAuthenticator

    app = create_app()
    admin = app.test_client()
    page = admin.get("/login").get_data(as_text=True)
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    admin.post("/login", data={"csrf_token": token.group(1), "tenant": "system", "operator_id": "admin",
                               "password": own.PASSWORD})
    register_biometric(app, "BIO01")
    authn = SoftAuthenticator()
    enrolled = manager_enrols(admin, "BIO01", authn)
    assert enrolled.status_code == 200, enrolled.get_data(as_text=True)

    def one() -> None:
        client = app.test_client()
        response = bio_login(client, "BIO01", authn)
        assert response.status_code == 200, response.get_data(as_text=True)

    for _ in range(10):
        one()
    start = time.perf_counter()
    for _ in range(logins):
        one()
    rate = logins / (time.perf_counter() - start)
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
    return {"logins_per_second": rate, "profiled_ms": total * 1000 / n, **split}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="opauth-bio-bench-"))
    figures = bench(work, 20 if "--quick" in sys.argv else LOGINS)
    for key, value in figures.items():
        print(f"{key}: {value:,.2f}")
    print(f"raw py_webauthn verifications/s: {raw_verifications_per_second():,.0f}")


if __name__ == "__main__":
    main()
