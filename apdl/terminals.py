"""Terminals and their card agents: the one place that checks a terminal's client certificate, pairs an
agent with an operator's session, and relays APDUs through it.

**Client certificate (mutual TLS).** :func:`authenticate_terminal` runs the module's one client-certificate
check (:func:`apdl.clientcert.verify`: chain to APDL_TERMINAL_CA, validity, clientAuth EKU, the CRL at the
certificate's own distribution point, fetched on every check) on every agent request, then asks the terminal
registry (:mod:`apdl.terminal_registry`, 端末管理): the subject's ``O`` and ``OU=terminal <端末名>`` must name a
registered, enabled terminal (and match its pinned fingerprint, if any). A revocation or a disabling stops the
agent at its next poll. Failing any of these is a 403 and the agent stops.

**Pairing.** The agent asks for a one-time code, which it shows on the terminal's screen. The operator
types it into the module (端末の組付け); the code is single-use and short-lived, and binds that browser
session to that terminal's certificate. Only an operator of the terminal's own tenant can pair with it; to
anyone else its code is as wrong as an unknown one. A session is paired with at most one terminal; an agent only
ever receives APDUs of sessions paired with its own certificate.

**Relay.** :class:`AgentTransport` is an adapter :class:`~apdl.card.adapter.Transport`: each APDU becomes
an :class:`~apdl.models.AgentExchange` row the agent picks up with a long poll and answers. With SCP03 on,
the rows hold only protected APDUs; the keys never leave the server. The table is the truth between the
module's workers; both sides look at it in short, growing steps (0.5 ms doubling to 10 ms), and a change
committed in the same process wakes the waiter at once. An agent answers and asks for the next APDU in one
request (``/agent/respond`` with ``wait``), which, being a poll, checks the certificate's revocation. Besides
APDUs the agent answers one control request (:data:`CONTROL_ATR`: its reader, the card's ATR and protocol)
and says why it could not reach a card (no reader, no card, no ATR, mute), for カード障害切り分け.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from apdl import clientcert, oplog, terminal_registry
from apdl.db import utcnow
from apdl.errors import CardUnavailable, InvalidInput, TooManyAttempts
from apdl.models import AgentExchange, OperationLog, RegisteredTerminal, TerminalPairing

CODE_DIGITS = 8
PAIRING_MAX_FAILURES = 5  # wrong codes per operator within the window before pairing is refused
PAIRING_WINDOW_MINUTES = 15
POLL_STEP = 0.01  # longest pause, in seconds, between looks at the exchange table
FIRST_STEP = 0.0005  # the first pause; each next one doubles up to POLL_STEP (an answer comes within milliseconds)
_CHANGED = threading.Condition()  # notified when this process queues or answers an exchange


TerminalRefused = clientcert.CertificateRefused  # the one client-certificate check


class UnregisteredTerminal(TerminalRefused):
    """A terminal certificate the registry does not accept (unknown, disabled, not the pinned one): 403."""

    def __init__(self, message: str, *, reason: str, terminal: str, tenant_code: str = "") -> None:
        super().__init__(message)
        self.reason, self.terminal, self.tenant_code = reason, terminal, tenant_code


@dataclass(frozen=True)
class Terminal:
    """A registered terminal as its certificate shows it."""

    fingerprint: str  # SHA-256 of the DER certificate, hex
    name: str  # the 端末名 (OU=terminal <name>)
    serial: int
    tenant_code: str = ""  # the 利用機関 it is registered to
    registry_id: int = 0  # RegisteredTerminal.id


def authenticate_terminal(db: Session, *, check_revocation: bool = True) -> Terminal:
    """The registered, enabled terminal behind this request's client certificate; 403 otherwise.

    The certificate passes :func:`apdl.clientcert.verify`; its subject (``O``, ``OU=terminal <端末名>``) must
    name a registered terminal that is enabled and, when pinned, this very certificate.
    ``check_revocation=False`` only for an answer to a command the same certificate collected in a poll
    that did check it (saves a CRL fetch per APDU).
    """
    cert = clientcert.verify(clientcert.TERMINAL, check_revocation=check_revocation)
    subject = terminal_registry.subject_of(cert)  # opauth: O=<tenant name>, OU=terminal <端末名>
    if subject is None:
        raise TerminalRefused(_("端末のSSL通信証明書ではありません。"))  # e.g. a business system's
    fingerprint = clientcert.fingerprint(cert)
    shown = f"{subject[0]} / {subject[1]}"
    row = terminal_registry.find(db, *subject)
    if row is None:
        raise UnregisteredTerminal(_("登録されていない端末です。"), reason="not registered", terminal=shown)
    if not row.enabled:
        raise UnregisteredTerminal(_("この端末は無効にされています。"), reason="disabled", terminal=shown,
                                   tenant_code=row.tenant_code)
    if row.pinned_fingerprint and row.pinned_fingerprint != fingerprint:
        raise UnregisteredTerminal(_("この端末に登録された証明書ではありません。"), reason="not the pinned certificate",
                                   terminal=shown, tenant_code=row.tenant_code)
    return Terminal(fingerprint, row.name, cert.serial_number, tenant_code=row.tenant_code, registry_id=row.id)


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def new_pairing_code(db: Session, terminal: Terminal, *, lifetime: int) -> str:
    """A one-time code for the agent to show, valid ``lifetime`` seconds; pending codes of this terminal are
    withdrawn. The operation log notes its expiry, never the code."""
    db.execute(update(TerminalPairing).where(TerminalPairing.terminal_fingerprint == terminal.fingerprint,
                                             TerminalPairing.paired_at.is_(None))
               .values(expires_at=utcnow()))
    code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
    expires = utcnow() + datetime.timedelta(seconds=lifetime)
    db.add(TerminalPairing(terminal_fingerprint=terminal.fingerprint, terminal_name=terminal.name[:200],
                           terminal_id=terminal.registry_id or None, code_hash=_code_hash(code),
                           expires_at=expires))
    oplog.record(db, tenant_code=terminal.tenant_code, actor=f"terminal:{terminal.name}",
                 action=oplog.Action.TERMINAL_CODE, target=f"terminal:{terminal.fingerprint[:16]}",
                 detail={"expires_at": expires.isoformat(timespec="seconds")})
    db.commit()
    return code


def code_pending(db: Session, terminal: Terminal) -> bool:
    """Whether this terminal has a pairing code that is neither used nor expired (its agent shows one)."""
    found = db.scalar(select(TerminalPairing.id).where(TerminalPairing.terminal_fingerprint == terminal.fingerprint,
                                                       TerminalPairing.paired_at.is_(None),
                                                       TerminalPairing.expires_at > utcnow()).limit(1))
    return found is not None


def pair(db: Session, code: str, *, session_id: str, tenant_code: str, actor: str) -> TerminalPairing:
    """端末の組付け: bind this operator session to the terminal whose agent shows ``code``."""
    code = code.strip()
    since = utcnow() - datetime.timedelta(minutes=PAIRING_WINDOW_MINUTES)
    failures = db.scalar(select(func.count()).select_from(OperationLog).where(
        OperationLog.tenant_code == tenant_code, OperationLog.actor == actor, OperationLog.target == "terminal",
        OperationLog.action == oplog.Action.REFUSED, OperationLog.at >= since)) or 0
    if failures >= PAIRING_MAX_FAILURES:  # 8-digit codes must not be guessable by trying
        oplog.record(db, tenant_code=tenant_code, actor=actor, action=oplog.Action.REFUSED, target="terminal",
                     detail={"reason": "too many wrong pairing codes"})
        db.commit()
        raise TooManyAttempts(_("組付けコードの誤りが続いたため、しばらく組付けできません。"))
    row = None
    if code.isascii() and code.isdigit() and len(code) == CODE_DIGITS:
        row = db.scalars(select(TerminalPairing).where(TerminalPairing.code_hash == _code_hash(code))).first()
    if row is None or row.paired_at is not None or _aware(row.expires_at) <= utcnow():
        oplog.record(db, tenant_code=tenant_code, actor=actor, action=oplog.Action.REFUSED, target="terminal",
                     detail={"reason": "pairing code unknown, used or expired"})
        db.commit()
        raise InvalidInput(_("組付けコードが正しくないか、期限が切れています。"))
    registered = db.get(RegisteredTerminal, row.terminal_id) if row.terminal_id is not None else None
    if registered is None or not registered.enabled or registered.tenant_code != tenant_code:
        # Another tenant's terminal (or one disabled since): the same answer as a wrong code, counted as one.
        oplog.record(db, tenant_code=tenant_code, actor=actor, action=oplog.Action.REFUSED, target="terminal",
                     detail={"reason": "pairing code of a terminal not registered to this tenant"})
        db.commit()
        raise InvalidInput(_("組付けコードが正しくないか、期限が切れています。"))
    db.execute(update(TerminalPairing).where(TerminalPairing.operator_session_id == session_id)
               .values(operator_session_id=None))  # a session serves one terminal at a time
    row.operator_session_id, row.paired_at = session_id, utcnow()
    oplog.record(db, tenant_code=tenant_code, actor=actor, action=oplog.Action.TERMINAL_PAIRED,
                 target=f"terminal:{row.terminal_fingerprint[:16]}", detail={"terminal": row.terminal_name})
    db.commit()
    return row


def paired_terminal(db: Session, session_id: str) -> TerminalPairing | None:
    """The enabled terminal this operator session is paired with, if any."""
    return db.scalars(select(TerminalPairing)
                      .join(RegisteredTerminal, RegisteredTerminal.id == TerminalPairing.terminal_id)
                      .where(TerminalPairing.operator_session_id == session_id, RegisteredTerminal.enabled.is_(True))
                      .order_by(TerminalPairing.id.desc())).first()


def _aware(value: datetime.datetime) -> datetime.datetime:
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def revocation_pending() -> Callable[[], None]:
    """For an agent's answer that is also its next poll, after :func:`authenticate_terminal` without the
    revocation check: that check, started in the background; the callable waits for it (403 if revoked). The
    caller confirms it before it hands out the next command, so a revoked terminal gets none."""
    der = clientcert.presented()
    assert der is not None  # authenticate_terminal has seen it
    return clientcert.revocation_later(x509.load_der_x509_certificate(der), clientcert.TERMINAL)


def withdraw(db: Session, row: AgentExchange) -> None:
    """A command collected but not handed out (its poll was refused): failed, so the operation stops at once."""
    row.state = "failed"
    row.response = "unavailable"
    db.commit()
    _notify()


def _notify() -> None:
    """Wake this process's waiters (the fast path; other processes see the change at their next look)."""
    with _CHANGED:
        _CHANGED.notify_all()


def _pause(step: float) -> float:
    """Wait ``step`` seconds or until this process commits a change; the next, longer step."""
    with _CHANGED:
        _CHANGED.wait(step)
    return min(step * 2, POLL_STEP)


def next_command(db: Session, terminal: Terminal, *, wait: float) -> AgentExchange | None:
    """The oldest queued APDU for this terminal (marked sent), waiting up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    step = FIRST_STEP
    while True:
        row = db.scalars(select(AgentExchange).where(AgentExchange.terminal_fingerprint == terminal.fingerprint,
                                                     AgentExchange.state == "queued")
                         .order_by(AgentExchange.id)).first()
        if row is not None:
            row.state = "sent"
            db.commit()
            return row
        db.rollback()  # end the read transaction so the next look sees new rows
        if time.monotonic() >= deadline:
            return None
        step = _pause(step)


def answer(db: Session, terminal: Terminal, exchange_id: int, response: str | None, *, error: str | None = None,
           protocol: str | None = None, reader: str | None = None) -> None:
    """Record the card's answer (hex) to one exchange of this terminal; None: the agent could not reach the card,
    ``error`` saying why (:data:`AGENT_ERRORS`). To a :data:`CONTROL_ATR` request the answer is the ATR, with
    the ``protocol`` and the ``reader``'s name."""
    row = db.get(AgentExchange, exchange_id)
    if row is None or row.terminal_fingerprint != terminal.fingerprint or row.state != "sent":
        raise InvalidInput(_("この端末への命令ではありません。"))
    if error is not None and (error not in AGENT_ERRORS or response is not None):
        raise InvalidInput(_("応答の形式が正しくありません。"))
    if row.command == CONTROL_ATR:
        for value, limit in ((protocol, 16), (reader, 200)):
            if value is not None and not (len(value) <= limit and value.isprintable()):
                raise InvalidInput(_("応答の形式が正しくありません。"))
    if response is not None:
        try:
            raw = bytes.fromhex(response)
        except ValueError:
            raise InvalidInput(_("応答の形式が正しくありません。")) from None
        if not 2 <= len(raw) <= (33 if row.command == CONTROL_ATR else 258):
            raise InvalidInput(_("応答の形式が正しくありません。"))
        row.response, row.state = raw.hex().upper(), "answered"
    else:
        row.response, row.state = error or "unavailable", "failed"  # an older agent says only None
    if row.command == CONTROL_ATR:
        row.response = json.dumps({"atr": row.response if response is not None else "", "protocol": protocol or "",
                                   "reader": reader or "", "error": error or ("" if response else "unavailable")})
    db.commit()
    _notify()


AGENT_ERRORS = ("no_reader", "no_card", "no_atr", "mute")  # what an agent says when it could not reach the card
CONTROL_ATR = "ATR"  # an exchange that asks the agent for the reader's state and the card's ATR, not an APDU


@dataclass(frozen=True)
class AgentReply:
    """What the agent said: the card's answer, or why there is none.

    ``error``: "" (answered), one of :data:`AGENT_ERRORS`, "unavailable" (an agent that does not say why) or
    "timeout" (no agent answered in time). To :meth:`AgentTransport.card_status`: ``data`` is the ATR.
    """

    error: str = ""
    data: bytes = b""
    protocol: str = ""
    reader: str = ""


class AgentCardUnavailable(CardUnavailable):
    """The agent could not reach the card; ``kind`` says why (an :class:`AgentReply` error)."""

    def __init__(self, kind: str) -> None:
        super().__init__("the terminal's card agent did not answer in time" if kind == "timeout"
                         else f"the card agent could not reach the card ({kind})")
        self.kind = kind


class AgentTransport:
    """An adapter Transport that hands each APDU to the terminal's card agent and waits for its answer."""

    def __init__(self, db: Session, terminal_fingerprint: str, *, timeout: float) -> None:
        """``db`` is a session of its own (the request's session commits at its own pace)."""
        self._db = db
        self._terminal = terminal_fingerprint
        self._timeout = timeout
        self.close()  # stale commands of an earlier, abandoned operation are not sent any more

    def transmit(self, apdu: bytes) -> bytes:
        """Queue ``apdu`` for the agent, wait for the card's answer (CardUnavailable on timeout or failure)."""
        reply = self._exchange(apdu.hex().upper())
        if reply.error:
            raise AgentCardUnavailable(reply.error)
        return reply.data

    def card_status(self) -> AgentReply:
        """Ask the agent for its reader and the card's ATR (and protocol); the error when it has none."""
        return self._exchange(CONTROL_ATR)

    def _exchange(self, command: str) -> AgentReply:
        row = AgentExchange(terminal_fingerprint=self._terminal, command=command, state="queued")
        self._db.add(row)
        self._db.commit()
        _notify()
        deadline = time.monotonic() + self._timeout
        step = FIRST_STEP
        while time.monotonic() < deadline:
            self._db.refresh(row)
            if row.state in ("answered", "failed") and row.response is not None:
                reply = _reply(command, row.state, row.response)
                self._db.delete(row)  # nothing of the dialogue stays behind
                self._db.commit()
                return reply
            self._db.rollback()
            step = _pause(step)
        row.state = "failed"
        self._db.commit()
        return AgentReply(error="timeout")

    def close(self) -> None:
        """Withdraw anything still queued for this terminal."""
        self._db.execute(update(AgentExchange).where(AgentExchange.terminal_fingerprint == self._terminal,
                                                     AgentExchange.state == "queued").values(state="failed"))
        self._db.commit()


def _reply(command: str, state: str, response: str) -> AgentReply:
    if command == CONTROL_ATR:
        said = json.loads(response)
        return AgentReply(error=said["error"], data=bytes.fromhex(said["atr"]), protocol=said["protocol"],
                          reader=said["reader"])
    if state == "failed":
        return AgentReply(error=response)
    return AgentReply(data=bytes.fromhex(response))
