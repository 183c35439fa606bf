"""カード障害切り分け: run a diagnosis on the card in the reader, see one run, and the history per card and terminal."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from apdl import cardops, diagnosis, terminals
from apdl.auth import current_operator, require
from apdl.db import get_session
from apdl.models import Diagnosis
from apdl.permissions import Permission
from apdl.tenancy import Operator, TenantScope, scope_for
from apdl.views.residents import local_datetime

bp = Blueprint("diagnosis", __name__, url_prefix="/diagnosis")
CARD_PERMISSIONS = (Permission.AP_DOWNLOAD, Permission.AP_DELETE, Permission.AP_MANAGE)


def _scope() -> tuple[Operator, TenantScope]:
    operator = current_operator()
    assert operator is not None
    return operator, scope_for(get_session(), operator)


def _filter(value: str | None, limit: int) -> str:
    value = (value or "").strip()
    return value[:limit] if value.isprintable() else ""


def _recorded_at(value: str) -> str:
    """A recent operation's stored time (ISO, UTC) in Japan's time like every other screen (unreadable: as is)."""
    try:
        return local_datetime(datetime.fromisoformat(value))
    except (TypeError, ValueError):
        return str(value)


@bp.get("")
@require(*CARD_PERMISSIONS)
def index() -> ResponseReturnValue:
    """The run button and this tenant's history (optionally of one card or terminal)."""
    operator, scope = _scope()
    card, terminal = _filter(request.args.get("card"), 32), _filter(request.args.get("terminal"), 200)
    runs = diagnosis.history(scope, card=card, terminal=terminal)
    paired = terminals.paired_terminal(get_session(), operator.session_id)
    return render_template("diagnosis_index.html", runs=runs, card=card, terminal=terminal, operator=operator,
                           reader=current_app.config["READER"], paired=paired,
                           outcome_label=diagnosis.outcome_label, summary_label=diagnosis.summary_label)


@bp.post("")
@require(*CARD_PERMISSIONS)
def run() -> ResponseReturnValue:
    """Diagnose the card in the reader of the terminal this session is paired with (through its card agent), or,
    unpaired, in the module's own reader; with APDL_CARD_TRANSPORT=agent an unpaired session is refused (403,
    logged), like the card operations."""
    operator, scope = _scope()
    paired = cardops.session_terminal(operator)
    if paired is not None:
        result = diagnosis.run_on_terminal(scope, operator=operator, paired=paired)
    else:
        result = diagnosis.run(scope, operator=operator)
    return redirect(url_for("diagnosis.show", diagnosis_id=result.id))


@bp.get("/<int:diagnosis_id>")
@require(*CARD_PERMISSIONS)
def show(diagnosis_id: int) -> ResponseReturnValue:
    """One run, step by step, in the viewer's language."""
    operator, scope = _scope()
    row = scope.get_or_404(Diagnosis, diagnosis_id)
    return render_template("diagnosis.html", run=row, describe=diagnosis.describe, title=diagnosis.step_title,
                           explain_sw=diagnosis.explain_sw, operator=operator, outcome_label=diagnosis.outcome_label,
                           recorded_at=_recorded_at)
