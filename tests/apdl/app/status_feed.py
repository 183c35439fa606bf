"""Card status feeds for the tests, imported through the module's own CLI (`apdl import-status`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import select

from apdl import db, oplog
from apdl.models import OperationLog

ROOT = Path(__file__).resolve().parents[3]
HEADER = "card_identifier,status,residence_code,occurred_at"


def csv_feed(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def import_status(app: Flask, tmp: Path, content: str | bytes, *args: str, name: str = "feed.csv",
                  database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI import on ``app``'s instance (or ``database_url``)."""
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    env = {"APDL_INSTANCE_DIR": app.config["INSTANCE_DIR"], "APDL_ADMIN_TENANT": app.config["ADMIN_TENANT"],
           "APDL_DATABASE_URL": database_url or app.config["DATABASE_URL"], "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(Path(sys.executable).parent / "flask"), "--app", "apdl.app", "apdl", "import-status",
                           str(path), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def json_feed(batch_id: str, records: list[dict[str, Any]]) -> str:
    return json.dumps({"batch_id": batch_id, "records": records}, ensure_ascii=False)


def log_entries(app: Flask) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, target, detail) of every entry, the chain verified."""
    with app.app_context():
        session = db.get_session()
        assert oplog.verify_chain(session) is None
        return [(e.action, e.target, e.detail) for e in session.scalars(select(OperationLog).order_by(OperationLog.id))]
