"""操作ログ: the operation log on screen (``ap.manage``), a page at a time, newest first, with filters.

A tenant's administrator reads its own 利用機関's entries; the admin tenant (``APDL_ADMIN_TENANT``) reads every
tenant's and can have the whole hash chain checked (``/oplog/chain``: it reads every entry, so it runs when asked,
not on each page view).
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue

from apdl import oplog, oplog_search, validation
from apdl.auth import current_operator, require
from apdl.db import get_session
from apdl.permissions import Permission
from apdl.tenancy import scope_for

bp = Blueprint("oplog", __name__, url_prefix="/oplog")


@bp.get("")
@require(Permission.AP_MANAGE)
def index() -> ResponseReturnValue:
    """The filtered log; for the admin tenant also a way to the chain's check."""
    operator = current_operator()
    assert operator is not None
    filters = oplog_search.parse_filters(request.args)
    page = oplog_search.search(scope_for(get_session(), operator), filters,
                               validation.page_number(request.args.get("page")))
    return render_template("oplog.html", result=page, filters=filters, operator=operator,
                           actions=oplog.ACTION_LABELS)


@bp.get("/chain")
@require(Permission.AP_MANAGE)
def chain() -> ResponseReturnValue:
    """The admin tenant's check of the whole hash chain (every entry read once, a thousand at a time)."""
    operator = current_operator()
    assert operator is not None
    if not operator.is_admin_tenant:
        abort(403)  # the chain spans every tenant's entries
    return render_template("oplog_chain.html", result=oplog.check_chain(get_session()))
