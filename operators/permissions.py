"""Who may do what: roles map to permissions here and nowhere else."""

from __future__ import annotations

import enum
from typing import Any

from flask_babel import lazy_gettext

from operators.models import Operator, Role


class Permission(enum.StrEnum):
    VIEW_CERTIFICATES = "certificates.view"
    ISSUE_BUSINESS_SERVER_CERTIFICATES = "business_server_certificates.issue"
    MANAGE_BUSINESS_SYSTEMS = "business_systems.manage"
    VIEW_AUDIT = "audit.view"
    # Tenancy. Which tenant's data a permission reaches is decided by operators/tenancy.py.
    MANAGE_TENANTS = "tenants.manage"  # 市町村・任意団体設定, 表示順変更
    MANAGE_JOINT_USE = "joint_use.manage"  # 共同利用業務設定
    ALL_TENANTS = "tenants.all"  # act on any tenant's data (システム管理者)
    MANAGE_OPERATORS = "operators.manage"  # 操作者登録・失効, オペレータ証明書, 出力・移行, パスワード一括変更
    MANAGE_IN_BUSINESS_IDS = "in_business_ids.manage"  # 業務内ID管理 / 操作者権限登録
    # Login and biometrics; the tenant reached is decided by operators/tenancy.py.
    MANAGE_BIOMETRICS = "biometrics.manage"  # 生体情報管理: enrol, delete, enrolment codes
    UNLOCK_OPERATORS = "operators.unlock"  # lift a login lock
    # Revocation
    REVOKE_CERTIFICATES = "certificates.revoke"  # 失効, 保留解除 (certificateHold release)
    # Mutual TLS
    MANAGE_TLS_CERTIFICATES = "tls_certificates.manage"  # SSL通信証明書: 発行・削除・照会・再発行
    VIEW_CERTIFICATE_EXPIRY = "certificates.expiry"  # expiring certificates of (administered) business systems
    MANAGE_SETTINGS = "settings.manage"  # 環境基本設定: the instance's settings
    MANAGE_API_TOKENS = "api_tokens.manage"  # API トークン: make and revoke one's own machine credentials


# What each permission lets one do, in words (the API token screen shows them beside the scope names).
PERMISSION_LABELS: dict[Permission, Any] = {
    Permission.VIEW_CERTIFICATES: lazy_gettext("証明書照会"),
    Permission.ISSUE_BUSINESS_SERVER_CERTIFICATES: lazy_gettext("業務サーバ証明書発行"),
    Permission.MANAGE_BUSINESS_SYSTEMS: lazy_gettext("業務システム管理"),
    Permission.VIEW_AUDIT: lazy_gettext("監査ログ照会"),
    Permission.MANAGE_TENANTS: lazy_gettext("市町村・任意団体設定"),
    Permission.MANAGE_JOINT_USE: lazy_gettext("共同利用業務設定"),
    Permission.ALL_TENANTS: lazy_gettext("すべての市町村・任意団体のデータ"),
    Permission.MANAGE_OPERATORS: lazy_gettext("操作者・オペレータ証明書の管理"),
    Permission.MANAGE_IN_BUSINESS_IDS: lazy_gettext("業務内ID管理"),
    Permission.MANAGE_BIOMETRICS: lazy_gettext("生体情報管理"),
    Permission.UNLOCK_OPERATORS: lazy_gettext("ロック解除"),
    Permission.REVOKE_CERTIFICATES: lazy_gettext("証明書の失効・保留解除"),
    Permission.MANAGE_TLS_CERTIFICATES: lazy_gettext("SSL通信証明書"),
    Permission.VIEW_CERTIFICATE_EXPIRY: lazy_gettext("証明書の有効期限照会"),
    Permission.MANAGE_SETTINGS: lazy_gettext("環境基本設定"),
    Permission.MANAGE_API_TOKENS: lazy_gettext("API トークン"),
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.SYSTEM_ADMIN: frozenset(Permission),
    Role.TENANT_MANAGER: frozenset({Permission.MANAGE_OPERATORS, Permission.MANAGE_IN_BUSINESS_IDS,
                                    Permission.MANAGE_BIOMETRICS, Permission.MANAGE_API_TOKENS}),
    Role.BUSINESS_ADMIN: frozenset({Permission.MANAGE_IN_BUSINESS_IDS, Permission.VIEW_CERTIFICATE_EXPIRY}),
    Role.OPERATOR: frozenset(),
}


def has_permission(operator: Operator, permission: Permission) -> bool:
    """True when the operator is active and their role grants ``permission``."""
    if operator.revoked_at is not None:
        return False
    return permission in ROLE_PERMISSIONS.get(operator.role, frozenset())
