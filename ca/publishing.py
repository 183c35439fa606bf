"""Publishing CRLs and OCSP answers after a status change, outside the request that made it.

``ca.revocation.publish`` only notes, in the session, what a committed status
change must republish. Once that transaction commits (never if it rolls back):

- in a web request, a per-process background thread signs the CA's next CRL and
  the certificate's OCSP responses; the response does not wait, and requests go
  on serving the latest stored CRL until the new one is committed. Requests
  noted while it signs are coalesced into the next round (one CRL for a burst of
  revocations);
- anywhere else (the CLI, a script), it is done at once after the commit, in a
  session of its own.

What a process misses (it dies, or the change came from elsewhere) is caught by
``flask --app app pki worker`` / ``pki refresh``, which also re-signs before nextUpdate.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, has_app_context, has_request_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from ca.crl import current_crl
from ca.models import Certificate, CertificateAuthority
from ca.ocsp import presign

log = logging.getLogger(__name__)

_PENDING = "opauth.publish"


@dataclass
class _Work:
    """What one app has to republish: CAs whose CRL is due, certificates whose OCSP answers are."""

    app: Flask
    authority_ids: set[int] = field(default_factory=set)
    certificate_ids: set[int] = field(default_factory=set)

    def merge(self, other: _Work) -> None:
        self.authority_ids |= other.authority_ids
        self.certificate_ids |= other.certificate_ids


def note(session: Session, *, authority_id: int, certificate_id: int | None = None) -> bool:
    """Republish after ``session`` commits; False outside an app (the caller then publishes itself)."""
    if not has_app_context():
        return False
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    work: _Work = session.info.setdefault(_PENDING, _Work(app))
    work.authority_ids.add(authority_id)
    if certificate_id is not None:
        work.certificate_ids.add(certificate_id)
    return True


def publish_now(session: Session, settings: CaSettings, *, authority_ids: set[int],
                certificate_ids: set[int]) -> None:
    """Sign the named CAs' CRLs if due (a status changed, nextUpdate near) and the certificates' OCSP answers."""
    for authority_id in sorted(authority_ids):
        authority = session.get(CertificateAuthority, authority_id)
        if authority is not None:
            current_crl(session, settings, authority)
    for certificate_id in sorted(certificate_ids):
        certificate = session.get(Certificate, certificate_id)
        if certificate is not None:
            presign(session, settings, certificate)


def run(work: _Work) -> None:
    """Sign what ``work`` names in a session of its own, and commit."""
    with work.app.app_context():
        maker = work.app.extensions["opauth.sessionmaker"]
        session: Session = maker()
        try:
            publish_now(session, CaSettings.from_config(work.app.config), authority_ids=work.authority_ids,
                        certificate_ids=work.certificate_ids)
            session.commit()
        except Exception:  # the worker or the next CRL fetch retries; nothing a client could act on
            session.rollback()
            log.exception("publishing CRL/OCSP after a status change failed")
        finally:
            session.close()


class Publisher:
    """One background thread per process; ``submit`` never blocks on signing."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: dict[int, _Work] = {}
        self._busy = False
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, work: _Work) -> None:
        """Queue ``work`` (merged with what is already queued for the same app)."""
        with self._cond:
            queued = self._queue.get(id(work.app))
            if queued is None:
                self._queue[id(work.app)] = _Work(work.app, set(work.authority_ids), set(work.certificate_ids))
            else:
                queued.merge(work)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()  # a forked worker starts its own thread
                self._thread = threading.Thread(target=self._loop, name="opauth-publisher", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until everything submitted so far is published (tests, shutdown); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout=timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue))
                batch = list(self._queue.values())
                self._queue.clear()
                self._busy = True
            try:
                for work in batch:
                    run(work)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


publisher = Publisher()


def request_republication(app: Flask, authority_id: int) -> None:
    """Have the background thread re-sign a CA's CRL if it is due (a fetch noticed it lagging)."""
    publisher.submit(_Work(app, {authority_id}))


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    work: _Work | None = session.info.pop(_PENDING, None)
    if work is None:
        return
    if has_request_context():
        publisher.submit(work)
    else:
        run(work)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


__all__: Any = ("Publisher", "note", "publish_now", "publisher", "request_republication", "run")
