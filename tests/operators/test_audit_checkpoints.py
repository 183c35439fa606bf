"""Signed audit checkpoints: a cut tail, a rewritten head row or a re-hashed log is reported by `audit verify`.

The entries are made through the API and the CLI; the attacks are what someone with write access to the
database would do: disable the append-only triggers and change rows with raw SQL.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from ca.models import CertificateAuthority
from certs.audit_checkpoints import AUDIT_KEY_URI, CHECKPOINT_FILE, PUBLIC_KEY_FILE
from db import get_session
from kernel.audit import AuditEvent, _entry_hash, verify_chain
from tests.helpers import BUSINESS
from tests.operators.test_audit import _drop_guard, guard_restored  # noqa: F401 - autouse fixture


def _activity(api: FlaskClient, *business_ids: str) -> None:
    """Security-relevant work through the API: each business system saved is one audit entry."""
    payload = {k: v for k, v in BUSINESS.items() if k != "business_id"}
    for business_id in business_ids:
        assert api.put(f"/api/v1/business-systems/{business_id}", json=payload).status_code in (200, 201)


def _cli(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["audit", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def _checkpoint(app: Flask) -> int:
    code, output = _cli(app, "checkpoint")
    assert code == 0, output
    return int(output.split("checkpoint signed: entry ")[1].split()[0])


def _checkpoint_dir(app: Flask) -> Path:
    return Path(app.config["INSTANCE_DIR"]) / "audit-checkpoints"


def test_checkpoint_then_intact_log_verifies(app: Flask, api: FlaskClient) -> None:
    code, output = _cli(app, "verify")
    assert code == 0 and "checkpoints: none" in output, output
    _activity(api, "11", "12")
    sequence = _checkpoint(app)
    _activity(api, "13")
    code, output = _cli(app, "verify")
    assert code == 0, output
    assert "audit chain OK" in output and f"anchors entry {sequence}" in output
    assert int(output.split("; ")[-1].split()[0]) >= 1, "the entries after the checkpoint are counted"
    lines = (_checkpoint_dir(app) / CHECKPOINT_FILE).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["sequence"] == sequence


def test_cut_tail_and_rewritten_head_row_are_reported(app: Flask, api: FlaskClient) -> None:
    _activity(api, "21", "22", "23")
    sequence = _checkpoint(app)
    _activity(api, "24")
    with app.app_context():
        session = get_session()
        ids = list(session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))
        keep = ids[ids.index(sequence) - 3]  # cut below the checkpoint: its entry and the two before it go
        _drop_guard(session, session.bind.dialect.name)  # type: ignore[union-attr]
        session.execute(text("DELETE FROM audit_event WHERE id > :k"), {"k": keep})
        kept_hash = session.scalar(select(AuditEvent.entry_hash).where(AuditEvent.id == keep))
        session.execute(text("UPDATE audit_head SET last_hash = :h, last_id = :k WHERE id = 1"),
                        {"h": kept_hash, "k": keep})
        session.commit()
        assert verify_chain(session).ok, "the hash chain alone cannot see this: that is why checkpoints exist"
    code, output = _cli(app, "verify")
    assert code == 1, output
    assert f"entry {sequence}, signed in the checkpoint" in output and "truncated" in output
    assert f"now ends at entry {keep}" in output
    # A new checkpoint is refused while the log does not verify (it would anchor the damage).
    code, output = _cli(app, "checkpoint")
    assert code == 1 and "no checkpoint signed" in output


def test_rewritten_and_rehashed_log_is_reported(app: Flask, api: FlaskClient) -> None:
    _activity(api, "31", "32")
    sequence = _checkpoint(app)
    with app.app_context():
        session = get_session()
        _drop_guard(session, session.bind.dialect.name)  # type: ignore[union-attr]
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        victim = next(e for e in events if e.target == "business_system:31")
        session.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE id = :i"), {"i": victim.id})
        session.expire_all()
        # Re-hash from the edited entry to the end with the published algorithm, then fix the head row.
        prev = None
        for event in session.scalars(select(AuditEvent).order_by(AuditEvent.id)):
            if prev is not None and event.id >= victim.id:
                new_hash = _entry_hash(prev, event)
                session.execute(text("UPDATE audit_event SET prev_hash = :p, entry_hash = :h WHERE id = :i"),
                                {"p": prev, "h": new_hash, "i": event.id})
                prev = new_hash
            else:
                prev = event.entry_hash
        session.execute(text("UPDATE audit_head SET last_hash = :h WHERE id = 1"), {"h": prev})
        session.commit()
        session.expire_all()
        assert verify_chain(session).ok
    code, output = _cli(app, "verify")
    assert code == 1, output
    assert f"entry {sequence} no longer has the hash signed" in output and "re-hashed" in output


def test_altered_or_removed_checkpoint_file_is_reported(app: Flask, api: FlaskClient) -> None:
    _activity(api, "41")
    _checkpoint(app)
    _activity(api, "42")
    _checkpoint(app)
    path = _checkpoint_dir(app) / CHECKPOINT_FILE
    lines = path.read_text().splitlines()
    forged = json.loads(lines[1])
    forged["sequence"] -= 1
    path.write_text(lines[0] + "\n" + json.dumps(forged) + "\n")
    code, output = _cli(app, "verify")
    assert code == 1 and "line 2: the signature does not verify" in output, output
    path.unlink()
    code, output = _cli(app, "verify")
    assert code == 1 and "the checkpoints were removed" in output, output


def test_the_audit_key_is_its_own_encrypted_key_never_a_ca_key(app: Flask, api: FlaskClient) -> None:
    _activity(api, "51")
    _checkpoint(app)
    instance = Path(app.config["INSTANCE_DIR"])
    key_file = instance / AUDIT_KEY_URI[len("file:"):]
    assert key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    public = serialization.load_pem_public_key((_checkpoint_dir(app) / PUBLIC_KEY_FILE).read_bytes())
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with app.app_context():
        session = get_session()
        authorities = list(session.scalars(select(CertificateAuthority)))
        key_uris = {ca.key_uri for ca in authorities}
        ca_keys = {x509.load_der_x509_certificate(ca.cert_der).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) for ca in authorities}
        checkpoint_events = session.scalars(select(AuditEvent).where(AuditEvent.action == "audit.checkpoint")).all()
    assert AUDIT_KEY_URI not in key_uris and spki not in ca_keys
    assert len(checkpoint_events) == 1 and checkpoint_events[0].actor.startswith("cli:")
