"""The PKI engine (ca/) drives from a script with a database session and a signer, and nothing else of opauth.

A separate Python process imports only ``ca``, ``db``, ``kernel`` and ``config``: it creates the CA
hierarchy, issues a TLS client certificate, validates it, revokes it, signs a CRL and validates again.
Then it lists which opauth packages the process loaded; login, tenancy, biometrics, business login,
certificate services and the web app must not be among them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import db
from config import load_settings

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from ca.authority import CaSettings, current_issuer, init_hierarchy
    from ca.crl import issue_crl
    from ca.issuance import issue_certificate
    from ca.models import CertificateProfile, RevocationReason
    from ca.revocation import revoke
    from ca.validation import validate_chain
    from config import load_settings
    from kernel.audit import SYSTEM_ACTOR

    url, instance = sys.argv[1], Path(sys.argv[2])
    config = load_settings({"DATABASE_URL": url, "INSTANCE_DIR": str(instance)})
    settings = CaSettings(instance_dir=instance, passphrase=b"engine-alone-passphrase", key_algorithm="ec-p256",
                          pki_base_url="http://pki.example.test/pki", organization="Engine Test", config=config)
    session = Session(create_engine(url))
    issuing = init_hierarchy(session, settings, actor="script")
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue_certificate(
        session, issuer=current_issuer(session, settings), profile=CertificateProfile.TLS,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "terminal-01")]),
        public_key=key.public_key(), days=30, issued_by="script",
        sans=[x509.DNSName("terminal-01.example.test")])
    for authority in (issuing.parent, issuing):  # revocation information for the whole chain
        issue_crl(session, settings, authority)
    session.commit()

    def check():
        result = validate_chain(session, settings, leaf_der=leaf.der, required_eku={"client_auth"},
                                key_usage={"digital_signature"})
        return {"valid": result.valid, "reason": result.reason}

    before = check()
    revoke(session, certificate=leaf, reason=RevocationReason.KEY_COMPROMISE, actor=SYSTEM_ACTOR)
    issue_crl(session, settings, issuing)
    session.commit()
    after = check()
    loaded = sorted({name.split(".")[0] for name in sys.modules})
    print(json.dumps({"before": before, "after": after, "loaded": loaded}))
''')

FORBIDDEN = {"operators", "bio", "oidc", "certs", "app", "bootstrap", "apdl", "flask_login", "flask_wtf"}


def test_engine_issues_validates_and_revokes_without_the_rest_of_opauth(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'engine.db'}"
    db.upgrade(url)  # the schema, as `flask init` makes it (migrations know every table)
    assert load_settings({"DATABASE_URL": url})["DATABASE_URL"] == url
    run = subprocess.run([sys.executable, "-c", SCRIPT, url, str(tmp_path / "instance")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["before"] == {"valid": True, "reason": ""}
    assert report["after"] == {"valid": False, "reason": "revoked"}  # refused on the very next check
    assert FORBIDDEN.isdisjoint(report["loaded"]), sorted(FORBIDDEN & set(report["loaded"]))
    assert {"ca", "kernel", "db"} <= set(report["loaded"])
