"""What a server certificate may name: registered host names only, and subject values as given.

A business server certificate or an SSL communication certificate bound to a
business system names only the host names registered for that system (the
hosts of its three URLs). A name asked for by a CSR (its CN or a requested
subjectAltName) that is not registered is refused with a message naming it;
a wildcard is accepted only if that exact wildcard is registered. Subject
values are checked against the RFC 5280 upper bounds and refused, never cut,
when too long or when they hold control characters.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID
from flask_babel import gettext as _
from flask_babel import lazy_gettext

from kernel.errors import InvalidCsr, InvalidInput, OpauthError

# RFC 5280 Appendix A upper bounds (ub-*), in characters.
UPPER_BOUNDS: dict[x509.ObjectIdentifier, int] = {
    NameOID.COUNTRY_NAME: 2,
    NameOID.STATE_OR_PROVINCE_NAME: 128,
    NameOID.LOCALITY_NAME: 128,
    NameOID.ORGANIZATION_NAME: 64,
    NameOID.ORGANIZATIONAL_UNIT_NAME: 64,
    NameOID.COMMON_NAME: 64,
}
ATTRIBUTE_LABELS = {
    NameOID.COUNTRY_NAME: lazy_gettext("国名/地域(C)"),
    NameOID.STATE_OR_PROVINCE_NAME: lazy_gettext("都道府県(ST)"),
    NameOID.LOCALITY_NAME: lazy_gettext("市区町村(L)"),
    NameOID.ORGANIZATION_NAME: lazy_gettext("組織(O)"),
    NameOID.ORGANIZATIONAL_UNIT_NAME: lazy_gettext("部門名(OU)"),
    NameOID.COMMON_NAME: lazy_gettext("一般名(CN)"),
}
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
# Control characters (C0, C1, DEL, NUL), format characters (bidi overrides, zero-width), surrogates,
# private use and line/paragraph separators: none belongs in a name a person or a TLS client reads.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


class _UrlFault(enum.Enum):
    """Why a URL names no host we accept (the message is made only when one is refused)."""

    MISSING = enum.auto()
    TOO_LONG = enum.auto()
    MALFORMED = enum.auto()
    NOT_HTTPS = enum.auto()
    CREDENTIALS = enum.auto()
    BAD_HOST = enum.auto()


_URL_LIMIT = 2000


@functools.lru_cache(maxsize=1024)
def _host_or_fault(url: str) -> str | _UrlFault:
    """The host of an https URL, lower-cased and IDNA-encoded, or why not; pure, so kept per URL string."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return _UrlFault.MALFORMED
    if parts.scheme != "https" or not hostname:
        return _UrlFault.NOT_HTTPS
    if "@" in parts.netloc:  # user:password@ would be shown to operators and kept in the audit log
        return _UrlFault.CREDENTIALS
    try:
        ipaddress.ip_address(hostname)
        return hostname
    except ValueError:
        pass
    ascii_host = _ascii_host_name(hostname)
    return _UrlFault.BAD_HOST if ascii_host is None else ascii_host


def _ascii_host_name(name: str) -> str | None:
    """``name`` as a DNS host name, IDNA-encoded and lower-cased, or None when it is not one."""
    try:
        ascii_host = name.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return ascii_host.lower() if _HOSTNAME.fullmatch(ascii_host) else None


def host_of(url: str, field: str = "url", *, label: str | None = None) -> str:
    """The host of an https URL, lower-cased and IDNA-encoded; ``InvalidInput`` otherwise."""
    if not url:
        found: str | _UrlFault = _UrlFault.MISSING
    elif len(url) > _URL_LIMIT:
        found = _UrlFault.TOO_LONG
    else:
        found = _host_or_fault(url)
    if isinstance(found, str):
        return found
    label = field if label is None else label  # a lazy label is translated only here, for the message
    if found is _UrlFault.MISSING:
        raise InvalidInput(lazy_gettext("%(label)s (%(field)s) は必須です。", label=label, field=field))
    if found is _UrlFault.TOO_LONG:
        raise InvalidInput(lazy_gettext("%(label)s (%(field)s) は%(limit)s文字以内で指定してください。", label=label,
                                        field=field, limit=_URL_LIMIT))
    if found is _UrlFault.MALFORMED:
        raise InvalidInput(lazy_gettext("%(label)s (%(field)s) の URL が正しくありません。", label=label,
                                        field=field))
    if found is _UrlFault.NOT_HTTPS:
        raise InvalidInput(lazy_gettext("%(label)s (%(field)s) はホスト名を含む https:// の URL で指定してください。",
                                        label=label, field=field))
    if found is _UrlFault.CREDENTIALS:
        raise InvalidInput(lazy_gettext("%(label)s (%(field)s) の URL にユーザ名やパスワードを含めないでください。",
                                        label=label, field=field))
    raise InvalidInput(lazy_gettext("%(label)s (%(field)s) のホスト名が正しくありません。", label=label, field=field))


def check_host(value: str, field: str = "hosts", *, label: str | None = None) -> str:
    """A host name or IP address as a certificate names it, not a URL (an IPv6 address may be bracketed):
    lower-cased and IDNA-encoded; ``InvalidInput`` otherwise.

    An IPv6 zone ID (``fe80::1%eth0``) names an interface of one machine and has no place in a certificate.
    """
    bracketed = value.startswith("[") and value.endswith("]")
    candidate = value[1:-1] if bracketed else value
    label = field if label is None else label
    if "%" in candidate and ":" in candidate:
        raise InvalidInput(lazy_gettext(
            "%(label)s (%(field)s) の「%(host)s」は正しくありません。IPv6 アドレスにゾーンID(%%eth0 など)は"
            "指定できません。", label=label, field=field, host=_shown(value)))
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        address = None
    if address is not None and (address.version == 6 or not bracketed):
        return candidate.lower()
    ascii_host = None if bracketed else _ascii_host_name(candidate)  # brackets hold an IPv6 address only
    if ascii_host is None:
        raise InvalidInput(lazy_gettext("%(label)s (%(field)s) の「%(host)s」は正しくありません。", label=label,
                                        field=field, host=_shown(value)))
    return ascii_host


def general_name_for_host(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _shown(value: str) -> str:
    """A value safe to repeat in a message: control characters made visible, long ones shortened."""
    visible = "".join(ch if unicodedata.category(ch) not in _FORBIDDEN_CATEGORIES
                      else f"\\u{ord(ch):04x}" for ch in value)
    return visible if len(visible) <= 80 else visible[:77] + "..."


def check_subject_value(oid: x509.ObjectIdentifier, value: object, *, from_csr: bool) -> str:
    """``value`` unchanged if it may stand in the subject as ``oid``; refused otherwise (never cut).

    Raises ``InvalidCsr`` for what a CSR asked for, ``InvalidInput`` for values taken from the registry.
    """
    error: type[OpauthError] = InvalidCsr if from_csr else InvalidInput
    label = ATTRIBUTE_LABELS.get(oid, oid.dotted_string)  # translated only if a message is made
    if not isinstance(value, str):
        raise error(_("%(attribute)s は文字列で指定してください。", attribute=label))
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        raise error(_("%(attribute)s に制御文字が含まれています(%(value)s)。", attribute=label,
                      value=_shown(value)))
    limit = UPPER_BOUNDS.get(oid, 64)
    if len(value) > limit:
        raise error(_("%(attribute)s が長すぎます(%(length)d 文字。%(limit)d 文字まで): %(value)s",
                      attribute=label, length=len(value), limit=limit, value=_shown(value)))
    return value


def _normalised(name: str) -> str | None:
    """A host name or IP address in the form ``host_of`` registers it; None if it is neither."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    prefix, rest = ("*.", name[2:]) if name.startswith("*.") else ("", name)
    try:
        return prefix + host_of(f"https://{rest}/", "host")
    except InvalidInput:
        return None


def allowed_host(name: str, *, registered: Sequence[str], from_csr: bool) -> str:
    """The registered form of ``name`` if it is one of ``registered``; refused with its name otherwise."""
    error: type[OpauthError] = InvalidCsr if from_csr else InvalidInput
    normalised = _normalised(name)
    if normalised is not None and normalised in registered:
        return normalised
    if name.startswith("*"):
        raise error(_("ワイルドカード %(host)s は業務システムに登録されていないため、証明書に記載できません"
                      "(登録されているホスト名: %(registered)s)。", host=_shown(name),
                      registered=", ".join(registered)))
    raise error(_("%(host)s は業務システムに登録されたホスト名ではないため、証明書に記載できません"
                  "(登録されているホスト名: %(registered)s)。", host=_shown(name), registered=", ".join(registered)))


def allowed_hosts(names: Iterable[str], *, registered: Sequence[str], from_csr: bool) -> list[str]:
    """Every name of ``names`` in its registered form; the first unregistered one is refused."""
    return [allowed_host(name, registered=registered, from_csr=from_csr) for name in names]


def requested_names(csr: x509.CertificateSigningRequest) -> list[str]:
    """The host names a CSR asks for in a subjectAltName extension request (DNS names and IP addresses)."""
    try:
        ext = csr.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return []
    assert isinstance(ext.value, x509.SubjectAlternativeName)
    names: list[str] = []
    for general_name in ext.value:
        if isinstance(general_name, x509.DNSName):
            names.append(general_name.value)
        elif isinstance(general_name, x509.IPAddress):
            names.append(str(general_name.value))
        else:
            raise InvalidCsr(_("証明書発行要求の subjectAltName にホスト名以外の名前があります(%(name)s)。"
                               "ホスト名と IP アドレスだけを指定できます。", name=_shown(str(general_name))))
    return names


def common_name_for(hosts: Sequence[str]) -> str | None:
    """The CN when a CSR asks for none: the first host that fits in a CN, else no CN (the SAN names them)."""
    return next((host for host in hosts if len(host) <= UPPER_BOUNDS[NameOID.COMMON_NAME]), None)
