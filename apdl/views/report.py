"""報告: the yearly loads and deletions per AP and 利用機関, on screen and as CSV (UTF-8 or CP932)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request
from flask.typing import ResponseReturnValue

from apdl import oplog, report
from apdl.auth import current_operator, require
from apdl.db import get_session
from apdl.permissions import Permission
from apdl.tenancy import Operator, TenantScope, scope_for

bp = Blueprint("report", __name__, url_prefix="/report")


def _report() -> tuple[Operator, TenantScope, report.Report]:
    operator = current_operator()
    assert operator is not None
    scope = scope_for(get_session(), operator)
    year, period = report.parse_request(request.args.get("year", ""), request.args.get("period", ""))
    return operator, scope, report.yearly(scope, year, period)


@bp.get("")
@require(Permission.AP_MANAGE)
def show() -> ResponseReturnValue:
    """The report on screen."""
    operator, _scope, result = _report()
    return render_template("report.html", report=result, operator=operator, Period=report.Period)


@bp.get("/csv")
@require(Permission.AP_MANAGE)
def download() -> ResponseReturnValue:
    """The report as a CSV download (``encoding`` utf-8 or cp932); the export is logged."""
    operator, scope, result = _report()
    body, charset = report.to_csv(result, request.args.get("encoding", "utf-8"))
    db = scope.session
    oplog.record(db, tenant_code=scope.tenant_code, actor=operator.actor, action=oplog.Action.REPORT_EXPORTED,
                 target=f"report:{result.period.value}:{result.year}",
                 detail={"encoding": report.encoding_name(request.args.get("encoding", "utf-8")),
                         "rows": len(result.rows)})
    db.commit()
    return Response(body, content_type=f"text/csv; charset={charset}",
                    headers={"Content-Disposition": f'attachment; filename="{report.filename(result)}"'})
