"""REST API for the caller's own account (/api/v1/me; documented in static/openapi.json).

An operator holding a one-time password (the bootstrap administrator, a new or
reset operator) is refused everywhere else until it is changed; this is the
change, so a script never needs the browser. Routes are added to
``operators.api.bp`` (imported at the end of operators/api.py).
"""

from __future__ import annotations

from typing import Any

from flask import g, jsonify, request
from flask_babel import gettext as _

from db import get_session
from kernel.audit import AuditAction
from kernel.errors import InvalidInput
from kernel.web import json_body
from operators.api import bp
from operators.login.auth import authenticate, current_actor, login_settings
from operators.login.service import change_password
from operators.models import AuthMethod
from operators.web import unit_of_work

SYSTEM_TENANT_CODE = "system"


def _unauthorized() -> Any:
    response = jsonify(error="unauthorized", message="authentication required (HTTP Basic: operator_id@tenant)")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="opauth", charset="UTF-8"'
    return response


@bp.route("/me/password", methods=["POST"])
def change_own_password() -> Any:
    """Change the caller's own password, e.g. the one-time one: HTTP Basic with the current password,
    body ``{"new_password": ...}``; the policy of the web form applies and every session ends."""
    auth = request.authorization
    # HTTP Basic only: a browser session cookie must not be able to change a password without a form and CSRF.
    if auth is None or auth.type != "basic" or not auth.username or not auth.password:
        return _unauthorized()
    operator_id, _sep, tenant_code = auth.username.partition("@")
    session = get_session()
    operator = authenticate(session, tenant_code=(tenant_code or SYSTEM_TENANT_CODE)[:20],
                            operator_id=operator_id[:64], password=auth.password[:256])
    session.commit()  # the login attempt's audit entry and counters, whatever follows
    if operator is None:
        return _unauthorized()
    g.api_operator = operator  # the audit actor of this request (operators.login.auth.current_actor)

    def work() -> None:
        if operator.auth_method is AuthMethod.BIOMETRIC:
            raise InvalidInput(_("このオペレータは生体認証でログインするため、パスワードはありません。"))
        body = json_body()
        new = body.get("new_password")
        if not isinstance(new, str) or not new:
            raise InvalidInput(_("%(field)s を入力してください。", field="new_password"))
        change_password(session, operator=operator, current=auth.password or "", new=new[:1024], confirm=new[:1024],
                        settings=login_settings(), actor=current_actor())

    unit_of_work(work, failure=AuditAction.PASSWORD_CHANGE_REJECTED,
                 target=f"operator:{operator.tenant.code}/{operator.operator_id}")
    return jsonify(status="changed", operator_id=operator.operator_id, tenant=operator.tenant.code,
                   must_change_password=False)

