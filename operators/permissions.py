"""Who may do what: roles map to permissions here and nowhere else."""

from __future__ import annotations

import enum

from operators.models import Operator, Role


class Permission(enum.StrEnum):
    VIEW_CERTIFICATES = "certificates.view"
    ISSUE_BUSINESS_SERVER_CERTIFICATES = "business_server_certificates.issue"
    MANAGE_BUSINESS_SYSTEMS = "business_systems.manage"
    VIEW_AUDIT = "audit.view"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.SYSTEM_ADMIN: frozenset(Permission),
    Role.TENANT_MANAGER: frozenset(),
    Role.BUSINESS_ADMIN: frozenset(),
    Role.OPERATOR: frozenset(),
}


def has_permission(operator: Operator, permission: Permission) -> bool:
    """True when the operator is active and their role grants ``permission``."""
    if operator.revoked_at is not None:
        return False
    return permission in ROLE_PERMISSIONS.get(operator.role, frozenset())
