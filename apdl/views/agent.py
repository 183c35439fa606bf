"""The card agent's API (mutual TLS, JSON) and 端末の組付け, where an operator pairs the session with a terminal."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from apdl import oplog, terminals
from apdl.auth import current_operator, login_required
from apdl.db import get_session
from apdl.errors import InvalidInput
from apdl.terminals import Terminal, TerminalRefused, UnregisteredTerminal

bp = Blueprint("agent", __name__)
MAX_WAIT = 25.0


def _terminal(*, check_revocation: bool = True) -> Terminal:
    """Every agent route passes here first: the client certificate decides (refusals are logged)."""
    db = get_session()
    try:
        return terminals.authenticate_terminal(db, check_revocation=check_revocation)
    except TerminalRefused as exc:
        db.rollback()
        detail, tenant_code = {"reason": str(exc)}, ""
        if isinstance(exc, UnregisteredTerminal):  # its tenant sees the refusal (a disabled terminal, say)
            detail.update(reason=exc.reason, terminal=exc.terminal)
            tenant_code = exc.tenant_code
        oplog.record(db, tenant_code=tenant_code, actor="terminal", action=oplog.Action.TERMINAL_REFUSED,
                     target=request.path, detail=detail)
        db.commit()
        raise


def _json() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("a JSON object is expected")
    return body


@bp.post("/agent/pair")
def agent_pair() -> ResponseReturnValue:
    """A one-time pairing code for the agent to show on the terminal's screen."""
    terminal = _terminal()
    code = terminals.new_pairing_code(get_session(), terminal)
    return jsonify(code=code, terminal=terminal.name, expires_in=terminals.CODE_MINUTES * 60)


@bp.post("/agent/poll")
def agent_poll() -> ResponseReturnValue:
    """Long poll: the next APDU the server built for this terminal, or 204 after ``wait`` seconds."""
    terminal = _terminal()
    wait = _json().get("wait", 20)
    if not isinstance(wait, int | float) or not 0 <= wait <= MAX_WAIT:
        raise InvalidInput("wait must be 0..25 seconds")
    row = terminals.next_command(get_session(), terminal, wait=float(wait))
    if row is None:
        return "", 204
    return jsonify(exchange=row.id, apdu=row.command)


@bp.post("/agent/respond")
def agent_respond() -> ResponseReturnValue:
    """The card's answer to one APDU (hex), or null when the agent could not reach the card. The exchange
    must have been collected by this certificate in a poll, which checked revocation."""
    terminal = _terminal(check_revocation=False)
    body = _json()
    exchange, response = body.get("exchange"), body.get("response")
    if not isinstance(exchange, int) or not (response is None or isinstance(response, str)):
        raise InvalidInput("exchange (integer) and response (hex string or null) are expected")
    terminals.answer(get_session(), terminal, exchange, response)
    return "", 204


@bp.route("/terminal", methods=["GET", "POST"])
@login_required
def pair_terminal() -> ResponseReturnValue:
    """端末の組付け: type the code the terminal's card agent shows."""
    operator = current_operator()
    assert operator is not None
    db = get_session()
    if request.method == "POST":
        terminals.pair(db, str(request.form.get("code", ""))[:32], session_id=operator.session_id,
                       tenant_code=operator.tenant_code, actor=operator.actor)
        return redirect(url_for("agent.pair_terminal"))
    return render_template("terminal.html", paired=terminals.paired_terminal(db, operator.session_id))
