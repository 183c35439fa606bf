"""端末管理: the registry of terminals a 利用機関 allows to run a card agent, each bound to one tenant.

**What a terminal must present.** opauth issues a terminal's SSL通信証明書 with the subject ``C=JP,
O=<tenant name>, OU=terminal <端末名>, CN=<first host>``. A registered terminal names its tenant (the
module's ``tenant_code``), its 端末名 and the ``O`` its certificate carries (the tenant's name as opauth
writes it; the screen fills in the operator's own). :func:`apdl.terminals.authenticate_terminal` accepts a
certificate that passed the module's client-certificate check (the trusted terminal CA, validity, clientAuth,
the CRL) only when its ``O`` and ``OU`` name a registered, enabled terminal.

**Renewal.** The match is on the subject's ``O`` and ``OU`` (the issuer is the CA the module trusts), not on
the certificate itself: a renewed or reissued certificate of the same terminal keeps working, and a revoked
one stops at the CRL as before. The host (``CN``) is not matched. A terminal registered with a pinned
fingerprint (SHA-256 of the DER certificate) accepts only that certificate; renewing it means changing the
pin (``flask --app apdl.app apdl terminal pin``). A tenant renamed at opauth writes a new ``O`` into the
certificates it issues from then on: register the terminals again under the new name.

Every change is in the operation log under the terminal's tenant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from cryptography import x509
from cryptography.x509.oid import NameOID
from flask_babel import gettext as _
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from apdl import oplog, validation
from apdl.db import utcnow
from apdl.errors import Conflict, InvalidInput
from apdl.models import RegisteredTerminal, TerminalPairing

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # opauth's 端末名 (certs/tls_certs.py)
OU_PREFIX = "terminal "
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
ORGANIZATION_MAX = 200


def subject_of(cert: x509.Certificate) -> tuple[str, str] | None:
    """(O, 端末名) of a terminal's certificate, or None when its subject is not a terminal's."""
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if len(units) != 1 or len(orgs) != 1 or not str(units[0].value).startswith(OU_PREFIX):
        return None
    return str(orgs[0].value), str(units[0].value).removeprefix(OU_PREFIX)


def find(db: Session, organization: str, name: str) -> RegisteredTerminal | None:
    """The registered terminal (enabled or not) a certificate with this ``O`` and 端末名 belongs to."""
    return db.scalars(select(RegisteredTerminal).where(RegisteredTerminal.organization == organization,
                                                       RegisteredTerminal.name == name)).first()


def normalise_fingerprint(raw: str) -> str:
    """A SHA-256 fingerprint as hex (colons, spaces and case as tools print them are accepted); "" for none."""
    value = raw.strip().replace(":", "").replace(" ", "").lower()
    if value and not FINGERPRINT.match(value):
        raise InvalidInput(_("証明書のフィンガープリントはSHA-256（16進数64桁）で入力してください。"))
    return value


def checked_name(raw: str) -> str:
    """A 端末名 as opauth allows it: ASCII letters, digits, ``.``, ``_``, ``-``, at most 63."""
    name = validation.text({"name": raw}, "name", _("端末名"), max_length=63)
    if not NAME.match(name):
        raise InvalidInput(_("端末名に使えるのは半角英数字と . _ - だけです（63文字以内）。"))
    return name


def register(db: Session, form: Mapping[str, str], *, tenant_code: str, actor: str) -> RegisteredTerminal:
    """Register a terminal of ``tenant_code`` (form: ``name``, ``organization``, ``pinned_fingerprint``)."""
    name = checked_name(form.get("name") or "")
    organization = validation.text(form, "organization", _("証明書の組織名（O）"), max_length=ORGANIZATION_MAX)
    pinned = normalise_fingerprint(form.get("pinned_fingerprint") or "")
    if db.scalars(select(RegisteredTerminal.id).where(RegisteredTerminal.tenant_code == tenant_code,
                                                      RegisteredTerminal.name == name)).first() is not None:
        raise Conflict(_("この端末名はすでに登録されています。"))
    if find(db, organization, name) is not None:  # one certificate subject, one terminal
        raise Conflict(_("この組織名と端末名の証明書はすでに別の端末として登録されています。"))
    row = RegisteredTerminal(tenant_code=tenant_code, name=name, organization=organization,
                             pinned_fingerprint=pinned, enabled=True, registered_by=actor[:200],
                             registered_at=utcnow(), changed_by="")
    db.add(row)
    db.flush()
    oplog.record(db, tenant_code=tenant_code, actor=actor, action=oplog.Action.TERMINAL_REGISTERED,
                 target=f"terminal:{row.id}",
                 detail={"terminal": name, "organization": organization, "pinned": pinned[:16]})
    return row


def set_enabled(db: Session, row: RegisteredTerminal, enabled: bool, *, actor: str) -> None:
    """Enable or disable ``row``. Disabling ends its pairings and withdraws its pending codes: its agent is
    refused from its next request on, and the operators it served must pair again once it is enabled."""
    if row.enabled == enabled:
        return
    row.enabled, row.changed_by, row.changed_at = enabled, actor[:200], utcnow()
    if not enabled:
        db.execute(update(TerminalPairing).where(TerminalPairing.terminal_id == row.id)
                   .values(operator_session_id=None, expires_at=utcnow()))
    oplog.record(db, tenant_code=row.tenant_code, actor=actor,
                 action=oplog.Action.TERMINAL_ENABLED if enabled else oplog.Action.TERMINAL_DISABLED,
                 target=f"terminal:{row.id}", detail={"terminal": row.name})


def set_pin(db: Session, row: RegisteredTerminal, fingerprint: str, *, actor: str) -> None:
    """Pin ``row`` to one certificate (SHA-256 hex), or accept any certificate of its subject again ("")."""
    row.pinned_fingerprint = normalise_fingerprint(fingerprint)
    row.changed_by, row.changed_at = actor[:200], utcnow()
    oplog.record(db, tenant_code=row.tenant_code, actor=actor, action=oplog.Action.TERMINAL_PINNED,
                 target=f"terminal:{row.id}", detail={"terminal": row.name, "pinned": row.pinned_fingerprint[:16]})
