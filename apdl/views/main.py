"""トップ: the operator's name, tenant and permissions."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from apdl.auth import current_operator
from apdl.permissions import Permission

bp = Blueprint("main", __name__)


@bp.get("/")
def top() -> ResponseReturnValue:
    """The top screen, or the login link."""
    operator = current_operator()
    return render_template("top.html", operator=operator, Permission=Permission)
