"""操作者用トップ画面: the page every operator lands on after logging in.

It lists the business systems the operator may use and, for administrators,
the administration menus their role grants (seed 001: オペレータ証明書,
オペレータ管理, 生体情報管理, 業務サーバ証明書, SSL通信証明書, 運用環境設定), plus
ロック解除 and 監査ログ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template, url_for
from flask_babel import lazy_gettext
from markupsafe import escape
from werkzeug.routing import BuildError

from db import get_session
from operators.login.auth import current_operator, login_required_page
from operators.models import Operator
from operators.permissions import Permission, has_permission
from operators.tenancy import usable_business_systems

bp = Blueprint("top", __name__)


@dataclass(frozen=True)
class MenuEntry:
    """One administration menu: its label, the permission it needs and where it leads."""

    label: Any
    permission: Permission
    endpoints: tuple[str, ...]  # the first one the app serves is linked


ADMIN_MENU: tuple[MenuEntry, ...] = (
    MenuEntry(lazy_gettext("オペレータ証明書"), Permission.MANAGE_OPERATORS, ("operators_admin.certificates_home",)),
    MenuEntry(lazy_gettext("オペレータ管理"), Permission.MANAGE_OPERATORS, ("operators_admin.home",)),
    MenuEntry(lazy_gettext("業務内ID管理"), Permission.MANAGE_IN_BUSINESS_IDS,
              ("tenants_admin.in_business_home", "operators_admin.home")),
    MenuEntry(lazy_gettext("生体情報管理"), Permission.MANAGE_BIOMETRICS, ("bio.manage",)),
    MenuEntry(lazy_gettext("業務サーバ証明書"), Permission.ISSUE_BUSINESS_SERVER_CERTIFICATES,
              ("ca_admin.new_business_server_certificate",)),
    MenuEntry(lazy_gettext("SSL通信証明書"), Permission.MANAGE_TLS_CERTIFICATES,
              ("tls_admin.ssl_list", "ca_admin.certificate_list")),
    MenuEntry(lazy_gettext("運用環境設定"), Permission.MANAGE_TENANTS,
              ("settings_admin.index", "tenants_admin.tenant_list", "tenants_admin.joint_use", "ca_admin.index")),
    MenuEntry(lazy_gettext("ロック解除"), Permission.UNLOCK_OPERATORS, ("login_admin.locked",)),
    MenuEntry(lazy_gettext("監査ログ"), Permission.VIEW_AUDIT, ("ca_admin.audit_log",)),
)


@dataclass(frozen=True)
class MenuLink:
    label: str
    url: str | None


def admin_menu(operator: Operator) -> list[MenuLink]:
    """The administration menus ``operator``'s role grants, linked where the app serves them."""
    links = []
    for entry in ADMIN_MENU:
        if not has_permission(operator, entry.permission):
            continue
        url = None
        for endpoint in entry.endpoints:
            if endpoint in current_app.view_functions:
                try:
                    url = url_for(endpoint)
                except BuildError:  # the view needs arguments: not a menu entry point
                    continue
                break
        links.append(MenuLink(str(entry.label), url))
    return links


@bp.route("/top")
@login_required_page
def index() -> Any:
    """操作者用トップ画面."""
    operator = current_operator()
    assert operator is not None
    return render_template("top.html", operator=operator,
                           systems=usable_business_systems(get_session(), operator),
                           menu=admin_menu(operator))


@bp.route("/top/business-image/<business_id>.svg")
@login_required_page
def business_image(business_id: str) -> Any:
    """業務画像: a badge drawn from the business ID (the seed derives the image from the ID)."""
    operator = current_operator()
    assert operator is not None
    system = next((s for s in usable_business_systems(get_session(), operator)
                   if s.business_id == business_id[:2]), None)
    if system is None:
        abort(404)
    hue = (int(system.business_id) * 47) % 360 if system.business_id.isdigit() else 200
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96">'
           f'<rect width="96" height="96" rx="12" fill="hsl({hue},55%,42%)"/>'
           f'<text x="48" y="60" font-size="36" text-anchor="middle" fill="#fff" '
           f'font-family="sans-serif">{escape(system.business_id)}</text></svg>')
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "private, max-age=300"})
