"""The card agent's API (mutual TLS, JSON) and 端末の組付け, where an operator pairs the session with a terminal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from apdl import clientcert, oplog, terminals
from apdl.auth import current_operator, login_required
from apdl.db import get_session
from apdl.errors import InvalidInput
from apdl.models import AgentExchange
from apdl.terminals import Terminal, TerminalRefused, UnregisteredTerminal

bp = Blueprint("agent", __name__)
MAX_WAIT = 25.0
CODE_HEADER = "X-Pairing-Code"  # on an idle poll's 204: "pending" while the terminal's code is valid, else "none"


def _terminal(*, check_revocation: bool = True) -> Terminal:
    """Every agent route passes here first: the client certificate decides (refusals are logged)."""
    db = get_session()
    try:
        return terminals.authenticate_terminal(db, check_revocation=check_revocation)
    except TerminalRefused as exc:
        _log_refusal(exc)
        raise


def _log_refusal(exc: TerminalRefused) -> None:
    db = get_session()
    db.rollback()
    detail: dict[str, Any] = {"reason": str(exc), "certificate": clientcert.presented_summary()}
    tenant_code = ""
    if isinstance(exc, UnregisteredTerminal):  # its tenant sees the refusal (a disabled terminal, say)
        detail.update(reason=exc.reason, terminal=exc.terminal)
        tenant_code = exc.tenant_code
    oplog.record(db, tenant_code=tenant_code, actor="terminal", action=oplog.Action.TERMINAL_REFUSED,
                 target=request.path, detail=detail)
    db.commit()


def _json() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("a JSON object is expected")
    return body


@bp.post("/agent/pair")
def agent_pair() -> ResponseReturnValue:
    """A one-time pairing code for the agent to show on the terminal's screen."""
    terminal = _terminal()
    lifetime = int(current_app.config["PAIRING_CODE_SECONDS"])
    code = terminals.new_pairing_code(get_session(), terminal, lifetime=lifetime)
    return jsonify(code=code, terminal=terminal.name, expires_in=lifetime)


def _wait(body: dict[str, Any]) -> float:
    wait = body.get("wait", 20)
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT:
        raise InvalidInput("wait must be 0..25 seconds")
    return float(wait)


def _confirm(confirm: Callable[[], None], db: Session | None = None, row: AgentExchange | None = None) -> None:
    """Wait for the pending revocation check; refused: ``row`` (collected, not handed out) fails, logged, 403."""
    try:
        confirm()
    except TerminalRefused as exc:
        if db is not None and row is not None:
            terminals.withdraw(db, row)
        _log_refusal(exc)
        raise


def _job(terminal: Terminal, wait: float, confirm: Callable[[], None] | None = None) -> ResponseReturnValue:
    """The next command for the agent, or 204 saying whether its pairing code is still valid (the agent asks for
    a fresh one when not); ``confirm`` (a pending revocation check) is waited for before anything is handed out."""
    db = get_session()
    row = terminals.next_command(db, terminal, wait=wait)
    if confirm is not None:
        _confirm(confirm, db, row)
    if row is None:
        return "", 204, {CODE_HEADER: "pending" if terminals.code_pending(db, terminal) else "none"}
    if row.command == terminals.CONTROL_ATR:
        return jsonify(exchange=row.id, control="atr")
    return jsonify(exchange=row.id, apdu=row.command)


@bp.post("/agent/poll")
def agent_poll() -> ResponseReturnValue:
    """Long poll: the next APDU the server built for this terminal, or 204 after ``wait`` seconds.

    ``{"exchange": id, "apdu": hex}``, or ``{"exchange": id, "control": "atr"}``: report the reader and the
    card's ATR (カード障害切り分け).
    """
    terminal = _terminal()
    return _job(terminal, _wait(_json()))


@bp.post("/agent/respond")
def agent_respond() -> ResponseReturnValue:
    """The card's answer to one APDU (hex), or null when the agent could not reach the card, with ``error``
    saying why (no_reader, no_card, no_atr, mute); to a control request the ATR, ``protocol`` and ``reader``.

    Without ``wait``: 204. The exchange must have been collected by this certificate in a poll, which checked
    revocation. With ``wait``, the request is also the next poll (answer and ask in one round trip): revocation
    is checked as on every poll (in the background while the answer is recorded and the next command awaited,
    and confirmed before that command is handed out: a revoked terminal gets a 403 and the command fails), and
    the answer is the next job or 204.
    """
    sent = request.get_json(silent=True)
    polling = isinstance(sent, dict) and "wait" in sent
    terminal = _terminal(check_revocation=False)
    confirm = terminals.revocation_pending() if polling else None  # checked while the answer is recorded
    body = _json()
    wait = _wait(body) if polling else 0.0
    exchange, response = body.get("exchange"), body.get("response")
    error, protocol, reader = body.get("error"), body.get("protocol"), body.get("reader")
    if type(exchange) is not int or not (response is None or isinstance(response, str)):
        raise InvalidInput("exchange (integer) and response (hex string or null) are expected")
    if not all(value is None or isinstance(value, str) for value in (error, protocol, reader)):
        raise InvalidInput("error, protocol and reader are strings when given")
    try:
        terminals.answer(get_session(), terminal, exchange, response, error=error, protocol=protocol, reader=reader)
    except InvalidInput:
        if confirm is not None:  # a revoked terminal hears that first
            _confirm(confirm)
        raise
    if polling:
        return _job(terminal, wait, confirm)
    return "", 204


@bp.route("/terminal", methods=["GET", "POST"])
@login_required
def pair_terminal() -> ResponseReturnValue:
    """端末の組付け: type the code the terminal's card agent shows."""
    operator = current_operator()
    assert operator is not None
    db = get_session()
    if request.method == "POST":
        paired = terminals.pair(db, str(request.form.get("code", ""))[:32], session_id=operator.session_id,
                                tenant_code=operator.tenant_code, actor=operator.actor)
        flash(_("端末「%(name)s」と組付けました。", name=paired.terminal_name), "done")
        return redirect(url_for("agent.pair_terminal"))
    return render_template("terminal.html", paired=terminals.paired_terminal(db, operator.session_id))
