"""Words shown to people for certificate states, kinds and RFC 5280 revocation reasons, in the UI's language.

The machine values (``valid``, ``operator``, ``keyCompromise``…) stay in the API, the CLI and the
database; screens show these labels, with the RFC name beside a reason so it can be looked up.
"""

from __future__ import annotations

from flask_babel import lazy_gettext
from flask_babel.speaklater import LazyString

from ca.models import CertificateProfile, RevocationReason

STATUS_LABELS: dict[str, LazyString] = {
    "valid": lazy_gettext("有効"),
    "expired": lazy_gettext("期限切れ"),
    "revoked": lazy_gettext("失効"),
    "on_hold": lazy_gettext("保留"),
}

PROFILE_LABELS: dict[str, LazyString] = {
    CertificateProfile.ROOT_CA.value: lazy_gettext("ルートCA"),
    CertificateProfile.ISSUING_CA.value: lazy_gettext("発行CA"),
    CertificateProfile.BUSINESS_SERVER.value: lazy_gettext("業務サーバ証明書"),
    CertificateProfile.OPERATOR.value: lazy_gettext("オペレータ証明書"),
    CertificateProfile.TLS.value: lazy_gettext("SSL通信証明書"),
    CertificateProfile.OCSP_SIGNING.value: lazy_gettext("OCSP応答署名"),
}

REASON_LABELS: dict[str, LazyString] = {
    RevocationReason.UNSPECIFIED.value: lazy_gettext("理由の指定なし"),
    RevocationReason.KEY_COMPROMISE.value: lazy_gettext("鍵の危殆化"),
    RevocationReason.CA_COMPROMISE.value: lazy_gettext("認証局の危殆化"),
    RevocationReason.AFFILIATION_CHANGED.value: lazy_gettext("所属の変更"),
    RevocationReason.SUPERSEDED.value: lazy_gettext("再発行による置き換え"),
    RevocationReason.CESSATION_OF_OPERATION.value: lazy_gettext("運用の停止"),
    RevocationReason.CERTIFICATE_HOLD.value: lazy_gettext("保留"),
    RevocationReason.PRIVILEGE_WITHDRAWN.value: lazy_gettext("権限の取り消し"),
    "removeFromCRL": lazy_gettext("保留解除"),
}


def status_label(status: str) -> str:
    """The certificate state (``Certificate.status``) as a word in the current language."""
    label = STATUS_LABELS.get(status)
    return str(label) if label is not None else status


def profile_label(profile: object) -> str:
    """The kind of certificate (``root_ca``, ``operator``…) as words in the current language."""
    name = profile.value if isinstance(profile, CertificateProfile) else str(profile)
    label = PROFILE_LABELS.get(name)
    return str(label) if label is not None else name


def reason_label(reason: object) -> str:
    """A revocation reason as words in the current language, followed by its RFC 5280 name."""
    if reason is None:
        return ""
    name = reason.value if isinstance(reason, RevocationReason) else str(reason)
    label = REASON_LABELS.get(name)
    return f"{label} ({name})" if label is not None else name
