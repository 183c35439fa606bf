"""Web UI for bulk work on one tenant's operators: 一括登録 (CSV), 出力, パスワード一括変更, 証明書未発行.

Registered inside the ``operators_admin`` blueprint (endpoints ``operators_admin.bulk.*``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, stream_with_context, url_for
from flask_babel import gettext as _
from markupsafe import escape
from sqlalchemy import func, select

from db import get_session, new_session
from kernel.audit import AuditAction, AuditResult, record_event_separately
from kernel.errors import InvalidInput, OpauthError
from kernel.web import attachment, data_url, no_store, page_arg
from operators import csv_io
from operators.login.auth import current_actor, login_settings, requires, requires_recent_auth
from operators.models import Operator
from operators.operator_certs import issue_operator_certificate, without_live_certificate
from operators.operator_data import LABELS
from operators.permissions import Permission
from operators.registration import RegistrationResult, bulk_change_passwords
from operators.tenancy import managed_operator, managed_tenant, operators_of
from operators.web import ca_settings, export_filters, operators_csv, scope, unit_of_work

bp = Blueprint("bulk", __name__)
MAX_BATCH_ISSUE = 100  # PKCS#12s shown on one page


@bp.url_value_preprocessor
def _csv_upload_limit(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # Runs before CSRFProtect reads the form: a CSV of 10,000 operators exceeds the general upload limit.
    if endpoint == "operators_admin.bulk.import_csv":
        request.max_content_length = csv_io.MAX_CSV_BYTES


@bp.route("/t/<code>/certificates/pending", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
@requires_recent_auth  # issuing keys, revoking and resetting passwords need a fresh login
def certificates_pending(code: str) -> Any:
    """証明書未発行: operators without a live certificate (e.g. after 一括登録); issue PKCS#12s for a selection."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    query = without_live_certificate(operators_of(s, tenant))
    if request.method == "GET":
        per_page = current_app.config["PAGE_SIZE"]
        page = page_arg()
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        operators = list(session.scalars(query.order_by(Operator.operator_id)
                                         .offset((page - 1) * per_page).limit(per_page)))
        return render_template("operators/pending.html", tenant=tenant, operators=operators, total=total,
                               page=page, pages=max(1, -(-total // per_page)))
    ids = [i[:64] for i in request.form.getlist("operator_ids")[:MAX_BATCH_ISSUE + 1]]
    actor = current_actor()

    def work() -> list[RegistrationResult]:
        if not ids or len(ids) > MAX_BATCH_ISSUE:
            raise InvalidInput(_("証明書を発行するオペレータを 1 人以上 %(max)d 人以下で選択してください。",
                                 max=MAX_BATCH_ISSUE))
        results = []
        for operator_id in ids:
            operator = managed_operator(session, s, tenant, operator_id)
            issued = issue_operator_certificate(session, settings=ca_settings(), operator=operator, actor=actor)
            results.append(RegistrationResult(operator=operator, password=None, issued=issued))
        return results

    results = unit_of_work(work, failure=AuditAction.ISSUANCE_REJECTED, target=f"tenant:{tenant.code}")
    return no_store(render_template("operators/issued.html", tenant=tenant, results=results, data_url=data_url))


# --- 一括登録 (CSV), 出力, パスワード一括変更 ------------------------------------------------------

@bp.route("/t/<code>/import/template.csv")
@requires(Permission.MANAGE_OPERATORS)
def import_template(code: str) -> Any:
    """The CSV template (UTF-8 with BOM, or Shift_JIS)."""
    tenant = managed_tenant(get_session(), scope(), code)
    encoding = "cp932" if request.args.get("encoding") == "cp932" else "utf-8"
    return attachment(csv_io.template_csv(encoding), "text/csv", f"operators-template-{tenant.code}.csv")


@bp.route("/t/<code>/import", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
def import_csv(code: str) -> Any:
    """一括登録 / 操作者情報の移行: validate every row, then write in chunks while streaming progress."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    if request.method == "GET":
        return render_template("operators/import.html", tenant=tenant, error=None)
    actor = current_actor()
    drop = request.form.get("drop_unpermitted") == "1"
    try:
        def validate() -> list[csv_io.ImportRow]:
            upload = request.files.get("file")
            if upload is None or not upload.filename:
                raise InvalidInput(_("取り込む CSV ファイルを選択してください。"))
            return csv_io.validate(session, tenant=tenant, text=csv_io.decode(upload.stream.read()),
                                   drop_unpermitted=drop)

        rows = unit_of_work(validate, failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{tenant.code}")
    except OpauthError as exc:
        return render_template("operators/import.html", tenant=tenant, error=exc.message), exc.status

    def stream() -> Iterator[str]:
        yield render_template("operators/import_progress_head.html", tenant=tenant, total=len(rows))
        try:
            for progress in csv_io.import_operators(session, scope=s, tenant=tenant, rows=rows, actor=actor):
                if progress.finished:
                    session.commit()
                    done = escape(_("%(count)s 件を登録しました。", count=progress.done))
                    yield (f'<p class="notice" id="done">{done}</p>'
                           f'<p><a href="{url_for("operators_admin.operator_list", code=tenant.code)}">'
                           f'{escape(_("操作者一覧へ"))}</a> {escape(_("・"))} '
                           f'<a href="{url_for("operators_admin.bulk.certificates_pending", code=tenant.code)}">'
                           f'{escape(_("証明書未発行の操作者へ（オペレータ証明書発行）"))}</a></p>')
                else:
                    # One step per chunk; static/js/import_progress.js keeps only the newest on screen.
                    yield (f'<p class="import-step" role="status"><progress value="{progress.done}" '
                           f'max="{progress.total}"></progress> {progress.done} / {progress.total}</p>\n')
        except Exception as exc:  # nothing of the import stays; say so on the page already sent
            session.rollback()
            current_app.logger.exception("CSV import failed")
            record_event_separately(new_session, action=AuditAction.OPERATOR_REJECTED, actor=actor,
                                    result=AuditResult.FAILURE, target=f"tenant:{tenant.code}",
                                    detail={"reason": type(exc).__name__})
            yield ('<p class="error" id="failed">登録に失敗しました。何も登録されていません。'
                   f"({escape(type(exc).__name__)})</p>")
        yield "</main></body></html>"

    return Response(stream_with_context(stream()), mimetype="text/html")


@bp.route("/t/<code>/export", methods=["GET"])
@requires(Permission.MANAGE_OPERATORS)
def export(code: str) -> Any:
    """オペレータ情報出力: filter form (GET without ``download``) or the CSV."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    filters = export_filters()
    if request.args.get("download") != "1":
        return render_template("operators/export.html", tenant=tenant, filters=filters, labels=LABELS)
    return operators_csv(session, s, tenant, filters)


@bp.route("/t/<code>/passwords", methods=["GET", "POST"])
@requires(Permission.MANAGE_OPERATORS)
@requires_recent_auth  # issuing keys, revoking and resetting passwords need a fresh login
def passwords(code: str) -> Any:
    """パスワード一括変更: choose operators; the new passwords come back once, as a CSV download."""
    session, s = get_session(), scope()
    tenant = managed_tenant(session, s, code)
    if request.method == "GET":
        per_page = current_app.config["PAGE_SIZE"]
        page = page_arg()
        query = operators_of(s, tenant).where(Operator.revoked_at.is_(None))
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        operators = list(session.scalars(query.order_by(Operator.operator_id)
                                         .offset((page - 1) * per_page).limit(per_page)))
        return render_template("operators/passwords.html", tenant=tenant, operators=operators, page=page,
                               pages=max(1, -(-total // per_page)))
    ids = [i[:64] for i in request.form.getlist("operator_ids")[:500]]
    if request.form.get("confirmed") != "1":  # confirmation first: the old passwords stop working
        chosen = [managed_operator(session, s, tenant, i) for i in ids]
        if not chosen:
            raise InvalidInput(_("パスワードを変更するオペレータを一人以上選択してください。"))
        return render_template("operators/passwords_confirm.html", tenant=tenant, operators=chosen)

    def work() -> bytes:
        chosen = [managed_operator(session, s, tenant, i) for i in ids]
        results = bulk_change_passwords(session, scope=s, tenant=tenant, operators=chosen, actor=current_actor(),
                                        settings=login_settings())
        lines = ["オペレータID,パスワード"] + [f"{o.operator_id},{p}" for o, p in results]
        return ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")

    body = unit_of_work(work, failure=AuditAction.OPERATOR_REJECTED, target=f"tenant:{tenant.code}")
    return attachment(body, "text/csv", f"passwords-{tenant.code}.csv", no_store=True)
