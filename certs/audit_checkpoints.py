"""Signed audit checkpoints: an anchor for the audit log kept outside the database.

The hash chain (``operators/audit.py``) shows an edited or removed entry, but
someone with write access to the database can cut the tail and rewrite the
head row, or rewrite entries and re-hash everything after them: the chain is
then consistent again. A checkpoint signs the newest entry's sequence number
and hash with a dedicated audit key (never a CA key; encrypted PKCS#8 in the
key store like the others) and appends it to a JSON-lines file outside the
database, next to the public key. ``verify_checkpoints`` checks every
signature and that each signed entry is still in the log with the signed
hash: a log cut below a checkpoint, or re-hashed up to one, is reported.
Entries newer than the last checkpoint are protected by the next one.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca.authority import CaSettings, signer_for
from ca.keys import KeyStoreError, Signer, generate_private_key, store_software_key
from db import utcnow
from kernel.audit import Actor, AuditAction, AuditEvent, record_event
from kernel.errors import OpauthError

AUDIT_KEY_URI = "file:keys/audit-checkpoint.key.pem"
CHECKPOINT_FILE = "checkpoints.jsonl"
PUBLIC_KEY_FILE = "audit-key.pub.pem"
FORMAT_VERSION = 1
# The newest checkpoint alone covers every entry before it (each entry's hash includes the previous one);
# older ones are compared too, up to this many, to name the earliest damage.
COMPARED_CHECKPOINTS = 1000


class CheckpointError(OpauthError):
    """A checkpoint could not be made (broken chain, missing key)."""

    code = "audit_checkpoint"


def default_directory(settings: CaSettings) -> Path:
    """Where checkpoints are kept unless told otherwise: ``INSTANCE_DIR/audit-checkpoints``."""
    return settings.instance_dir / "audit-checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    """One signed statement: entry ``sequence`` of the audit log had hash ``entry_hash`` at ``signed_at``."""

    version: int
    sequence: int
    entry_hash: str
    signed_at: str
    key_id: str  # SHA-256 of the audit public key (SubjectPublicKeyInfo DER)
    signature: str = ""  # base64 over ``payload()``

    def payload(self) -> bytes:
        """The canonical bytes that are signed: every field but the signature."""
        fields = {k: v for k, v in asdict(self).items() if k != "signature"}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _key_id(public_key: PublicKeyTypes) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _sign(signer: Signer, data: bytes) -> bytes:
    key = signer.private_key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(signer.hash_algorithm))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), signer.hash_algorithm)
    raise CheckpointError("the audit key must be an EC or RSA key")


def _signature_valid(public_key: PublicKeyTypes, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            algorithm = hashes.SHA384() if public_key.curve.key_size >= 384 else hashes.SHA256()
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


def audit_signer(settings: CaSettings, directory: Path) -> Signer:
    """The audit key, created on first use (encrypted like the CA keys); its public key kept in ``directory``."""
    key_path = settings.instance_dir / AUDIT_KEY_URI[len("file:"):]
    public_path = directory / PUBLIC_KEY_FILE
    if not key_path.exists():
        if public_path.exists():
            # Checkpoints were signed with a key that is gone: a new one would make them unverifiable.
            raise CheckpointError(f"the audit key {AUDIT_KEY_URI} is missing but {public_path} exists; "
                                  "restore the key from backup")
        store_software_key(generate_private_key(settings.key_algorithm), uri=AUDIT_KEY_URI,
                           base=settings.instance_dir, passphrase=settings.passphrase)
    try:
        signer = signer_for(settings, AUDIT_KEY_URI)
    except KeyStoreError as exc:
        raise CheckpointError(str(exc)) from None
    pem = signer.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    if public_path.exists():
        if public_path.read_bytes() != pem:
            raise CheckpointError(f"{public_path} is not the public half of the audit key {AUDIT_KEY_URI}")
    else:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        public_path.write_bytes(pem)
    return signer


def record_checkpoint(session: Session, settings: CaSettings, *, directory: Path, actor: Actor) -> AuditEvent:
    """Make sure the audit key exists and record the checkpoint in the log; the entry it will sign.

    The caller commits before ``sign_checkpoint``: the signed entry must be durable before
    anything outside the database vouches for it.
    """
    signer = audit_signer(settings, directory)
    return record_event(session, action=AuditAction.AUDIT_CHECKPOINT, actor=actor, target="audit:checkpoint",
                        detail={"key_id": _key_id(signer.public_key()), "directory": str(directory)})


def sign_checkpoint(settings: CaSettings, *, directory: Path, sequence: int, entry_hash: str) -> Checkpoint:
    """Sign (entry ``sequence``, ``entry_hash``) with the audit key and append it to the checkpoint file."""
    signer = audit_signer(settings, directory)
    unsigned = Checkpoint(version=FORMAT_VERSION, sequence=sequence, entry_hash=entry_hash,
                          signed_at=utcnow().isoformat(), key_id=_key_id(signer.public_key()))
    checkpoint = Checkpoint(**{**asdict(unsigned),
                               "signature": base64.b64encode(_sign(signer, unsigned.payload())).decode()})
    _append(directory / CHECKPOINT_FILE, json.dumps(asdict(checkpoint), sort_keys=True) + "\n")
    return checkpoint


def _append(path: Path, line: str) -> None:
    """One write per line with O_APPEND under an exclusive lock: concurrent runs never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CheckpointVerdict:
    """``ok`` unless a checkpoint is forged or the log lost or changed a signed entry."""

    ok: bool
    problems: tuple[str, ...] = ()
    checkpoints: int = 0
    latest: Checkpoint | None = None
    entries_since: int = 0  # entries newer than the latest checkpoint (not yet anchored)


def _read(directory: Path) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints whose signatures verify, and a problem for every line that does not."""
    path = directory / CHECKPOINT_FILE
    public_path = directory / PUBLIC_KEY_FILE
    if not path.exists():
        if public_path.exists():
            return [], [f"{path} is missing although the audit key exists: the checkpoints were removed"]
        return [], []
    if not public_path.exists():
        return [], [f"{public_path} is missing: the checkpoints cannot be verified"]
    public_key = serialization.load_pem_public_key(public_path.read_bytes())
    key_id = _key_id(public_key)
    good: list[Checkpoint] = []
    problems: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                fields: dict[str, Any] = json.loads(line)
                checkpoint = Checkpoint(**fields)
                signature = base64.b64decode(checkpoint.signature, validate=True)
            except (ValueError, TypeError):
                problems.append(f"{path.name} line {number} is not a checkpoint")
                continue
            if checkpoint.key_id != key_id or not _signature_valid(public_key, signature, checkpoint.payload()):
                problems.append(f"{path.name} line {number}: the signature does not verify with the audit key "
                                "(the checkpoint file was altered)")
                continue
            if good and checkpoint.sequence < good[-1].sequence:
                problems.append(f"{path.name} line {number}: entry {checkpoint.sequence} comes after a checkpoint "
                                f"of entry {good[-1].sequence} (checkpoints out of order)")
            good.append(checkpoint)
    return good, problems


def verify_checkpoints(session: Session, *, directory: Path) -> CheckpointVerdict:
    """Check every signed checkpoint against the log: each signed entry present with the signed hash."""
    checkpoints, problems = _read(directory)
    if not checkpoints:
        return CheckpointVerdict(ok=not problems, problems=tuple(problems))
    last_id = session.scalar(select(func.max(AuditEvent.id))) or 0
    signed = {c.sequence: c for c in checkpoints}
    compared = sorted(signed.items())[-COMPARED_CHECKPOINTS:]
    stored = {row.id: row.entry_hash for row in session.execute(select(AuditEvent.id, AuditEvent.entry_hash).where(
        AuditEvent.id.in_([sequence for sequence, _c in compared])))}
    for sequence, checkpoint in compared:
        if sequence not in stored:
            problems.append(
                f"entry {sequence}, signed in the checkpoint of {checkpoint.signed_at}, is missing: the log was "
                f"truncated or entries were removed (it now ends at entry {last_id})")
        elif stored[sequence] != checkpoint.entry_hash:
            problems.append(
                f"entry {sequence} no longer has the hash signed in the checkpoint of {checkpoint.signed_at}: "
                "the log was rewritten and re-hashed")
    latest = checkpoints[-1]
    since = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.id > latest.sequence)) or 0
    return CheckpointVerdict(ok=not problems, problems=tuple(problems), checkpoints=len(checkpoints),
                             latest=latest, entries_since=since)
