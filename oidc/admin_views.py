"""Web UI: 業務ログイン認証の設定 of a business system, for the system administrator (thin view)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from db import get_session
from kernel.audit import AuditAction
from kernel.errors import OpauthError
from oidc.clients import client_for_business_id, client_settings_json, save_client_settings
from oidc.server import issuer
from operators.login.auth import current_actor, requires, requires_recent_auth
from operators.permissions import Permission
from operators.web import unit_of_work

bp = Blueprint("oidc_admin", __name__, url_prefix="/admin")


@bp.route("/business-systems/<business_id>/login", methods=["GET", "POST"])
@requires(Permission.MANAGE_BUSINESS_SYSTEMS)
@requires_recent_auth
def client_edit(business_id: str) -> Any:
    """業務ログイン認証の設定: enable, redirect URIs, back-channel logout URI."""
    session = get_session()
    system, client = client_for_business_id(session, business_id[:2])
    values = client_settings_json(system, client)
    error = None
    if request.method == "POST":
        form = {"enabled": request.form.get("enabled") == "on",
                "redirect_uris": request.form.get("redirect_uris", "")[:25_000],
                "backchannel_logout_uri": request.form.get("backchannel_logout_uri", "")[:2000],
                "post_logout_redirect_uris": request.form.get("post_logout_redirect_uris", "")[:25_000],
                "initiate_login_uri": request.form.get("initiate_login_uri", "")[:2000]}
        try:
            unit_of_work(lambda: save_client_settings(session, business_id=system.business_id, data=form,
                                                      actor=current_actor()),
                         failure=AuditAction.OIDC_CLIENT_REJECTED, target=f"business_system:{system.business_id}")
        except OpauthError as exc:
            error = exc.message
            values = dict(values, enabled=form["enabled"], backchannel_logout_uri=form["backchannel_logout_uri"],
                          redirect_uris=str(form["redirect_uris"]).splitlines(),
                          post_logout_redirect_uris=str(form["post_logout_redirect_uris"]).splitlines(),
                          initiate_login_uri=form["initiate_login_uri"])
        else:
            flash(_("業務ログイン認証の設定を更新しました。"))
            return redirect(url_for("oidc_admin.client_edit", business_id=system.business_id))
    return render_template("oidc/client_edit.html", system=system, values=values, error=error,
                           discovery_url=issuer() + "/.well-known/openid-configuration"), (400 if error else 200)
