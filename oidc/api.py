"""REST API for the business login settings of a business system (system administrators)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from db import get_session
from kernel.audit import AuditAction
from kernel.web import json_body
from oidc.clients import client_for_business_id, client_settings_json, save_client_settings
from operators.login.auth import current_actor, requires
from operators.permissions import Permission
from operators.web import unit_of_work

bp = Blueprint("oidc_api", __name__, url_prefix="/api/v1")


@bp.route("/business-systems/<business_id>/oidc-client")
@requires(Permission.MANAGE_BUSINESS_SYSTEMS)
def client_settings(business_id: str) -> Any:
    """業務ログイン認証の設定: client_id, enabled, redirect URIs, back-channel logout URI."""
    system, client = client_for_business_id(get_session(), business_id)
    return jsonify(client_settings_json(system, client))


@bp.route("/business-systems/<business_id>/oidc-client", methods=["PUT"])
@requires(Permission.MANAGE_BUSINESS_SYSTEMS)
def client_settings_put(business_id: str) -> Any:
    """Replace the business login settings (``enabled``, ``redirect_uris``, ``backchannel_logout_uri``)."""
    session = get_session()
    client = unit_of_work(lambda: save_client_settings(session, business_id=business_id, data=json_body(),
                                                       actor=current_actor()),
                          failure=AuditAction.OIDC_CLIENT_REJECTED, target=f"business_system:{business_id[:8]}")
    return jsonify(client_settings_json(client.business_system, client))
