"""トップ: the operator's name, tenant and permissions."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask.typing import ResponseReturnValue

from apdl import cardstatus
from apdl.auth import current_operator
from apdl.db import get_session
from apdl.permissions import Permission

bp = Blueprint("main", __name__)


@bp.get("/")
def top() -> ResponseReturnValue:
    """The top screen (with an alert when the card status feed is stale), or the login link."""
    operator = current_operator()
    max_age = current_app.config["STATUS_FEED_MAX_AGE_HOURS"]
    feed = cardstatus.feed_state(get_session(), max_age) if operator is not None else None
    return render_template("top.html", operator=operator, Permission=Permission, feed=feed, max_age=max_age)
