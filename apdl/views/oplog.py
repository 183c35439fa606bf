"""操作ログ: the operation log on screen (``ap.manage``), a page at a time, newest first, with filters.

A tenant's administrator reads its own 利用機関's entries; the admin tenant (``APDL_ADMIN_TENANT``) reads every
tenant's and sees whether the hash chain is intact.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request
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
    """The filtered log; for the admin tenant also the chain's verification."""
    operator = current_operator()
    assert operator is not None
    filters = oplog_search.parse_filters(request.args)
    page = oplog_search.search(scope_for(get_session(), operator), filters,
                               validation.page_number(request.args.get("page")))
    broken = oplog.verify_chain(get_session()) if operator.is_admin_tenant else None
    return render_template("oplog.html", result=page, filters=filters, operator=operator,
                           actions=oplog.ACTION_LABELS, broken=broken)
