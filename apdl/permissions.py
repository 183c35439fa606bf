"""業務内ID permissions the module reads from opauth's ID token (``https://opauth/permissions``)."""

from __future__ import annotations

import enum


class Permission(enum.StrEnum):
    """Permission tokens an operator's 業務内ID carries for this business system."""

    AP_DOWNLOAD = "ap.download"  # カードAP搭載
    AP_DELETE = "ap.delete"  # カードAP削除
    AP_MANAGE = "ap.manage"  # カードAP管理, availability, tenant profiles (admin tenant)
    USER_REGISTER = "user.register"  # 利用者登録 and the tenant's own items


def granted(tokens: list[str]) -> frozenset[Permission]:
    """The known permissions among ``tokens`` (unknown ones are ignored)."""
    known = {p.value: p for p in Permission}
    return frozenset(known[t] for t in tokens if t in known)
