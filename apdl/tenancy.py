"""The tenancy guard: every read of tenant-owned rows goes through here, scoped to the operator's 利用機関.

The tenant is the ``https://opauth/tenant`` claim of the operator's ID token. Rows of another tenant
are indistinguishable from rows that do not exist (404). The AP registry is instance-wide; a tenant
sees only the APs made available to it, the admin tenant (``APDL_ADMIN_TENANT``) sees them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from flask import abort, g
from flask_babel import gettext as _
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from apdl.models import (
    CardAp,
    CustomField,
    Diagnosis,
    Installation,
    InstallState,
    OperationLog,
    Preset,
    RegisteredTerminal,
    Resident,
    TenantApAvailability,
    TenantProfile,
)
from apdl.permissions import Permission

TENANT_OWNED = (Resident, Installation, CustomField, TenantApAvailability, Preset, Diagnosis, OperationLog)
T = TypeVar("T", Resident, Installation, CustomField, TenantApAvailability, Preset, Diagnosis, OperationLog)


@dataclass(frozen=True)
class Operator:
    """The logged-in operator as the ID token describes them."""

    session_id: str
    sub: str
    sid: str
    name: str
    tenant_code: str
    tenant_name: str
    in_business_id: str
    permissions: frozenset[Permission]
    is_admin_tenant: bool

    @property
    def actor(self) -> str:
        """How the operation log names this operator (pairwise sub and 業務内ID, never a personal ID)."""
        return f"{self.in_business_id}@{self.tenant_code} ({self.sub[:16]})"


ACTOR = re.compile(r"([^\s@()]{1,128}@[^\s@()]{1,64})(?: \([^()]*\))?")
BUSINESS_ACTOR = re.compile(r"business:(\w{1,32}) \((.{0,60})\)")


def actor_label(actor: str) -> str:
    """A recorded actor as a person reads it: an operator as 業務内ID@利用機関 (as :attr:`Operator.actor` writes it,
    without the pairwise sub), the command line as ``コマンド（user）``, a business system through the API as
    ``業務システム ID（名前）``, a terminal's card agent as ``端末 name``; anything else (an opaque id) as ``-``."""
    match = ACTOR.fullmatch(actor)
    if match is not None:
        return match.group(1)
    if actor.startswith("cli:") and 0 < len(actor) - 4 <= 64:
        return str(_("コマンド（%(user)s）", user=actor[4:]))
    business = BUSINESS_ACTOR.fullmatch(actor)
    if business is not None:  # as bizapi.BusinessSystem.actor writes it
        return str(_("業務システム %(id)s（%(name)s）", id=business.group(1), name=business.group(2)))
    if actor.startswith("terminal:") and 0 < len(actor) - 9 <= 64:  # a card agent, by its registered name
        return str(_("端末 %(name)s", name=actor[9:]))
    return "-"


@dataclass(frozen=True)
class TenantScope:
    """Queries of one tenant."""

    session: Session
    tenant_code: str
    is_admin_tenant: bool = False

    @property
    def viewer(self) -> str | None:
        """Whose eyes a card's 即時停止 is shown to (:func:`apdl.cardstatus.status_of`): this 利用機関's, or
        ``None`` for the system administrator's tenant, which sees every reason."""
        return None if self.is_admin_tenant else self.tenant_code

    def select(self, model: type[T]) -> Select[T]:
        """``SELECT model`` limited to this tenant."""
        if model not in TENANT_OWNED:
            raise TypeError(f"{model.__name__} is not tenant-owned")
        return select(model).where(model.tenant_code == self.tenant_code)

    def get_or_404(self, model: type[T], pk: int) -> T:
        """The row with ``pk`` if it belongs to this tenant; 404 otherwise."""
        row = self.session.scalars(self.select(model).where(model.id == pk)).first()
        if row is None:
            abort(404)
        # What this request found in its tenant: an error page may offer the way back to it (error.html).
        g.setdefault("apdl_found", {})[model.__name__] = pk
        return row

    def recorded_on_card(self, card_identifier: str) -> Select[Installation, str]:
        """Every tenant's ``installed`` and ``pending`` installations on the card in the reader, with their
        AIDs (installed rows first, then by id): the one read across tenants, for :func:`apdl.cardops.contact`
        only. The card just read is the evidence that settles them, whoever reads it; waiting for the
        recording tenant would let another tenant's INSTALL or DELETE of the same AID change the evidence
        first. The rows are settled and logged under their own tenant, never shown to this one."""
        return (select(Installation, CardAp.aid).join(CardAp, CardAp.id == Installation.card_ap_id)
                .where(Installation.card_identifier == card_identifier,
                       Installation.state.in_((InstallState.INSTALLED, InstallState.PENDING)))
                .order_by(Installation.state != InstallState.INSTALLED, Installation.id))

    def visible_aps(self, *, include_withdrawn: bool = False, loadable: bool = False) -> Select[CardAp]:
        """APs this tenant may see: all for the admin tenant (its registry), else those available to it.
        ``loadable``: those its terminals may load, by the availability list for every tenant, the admin
        tenant's too."""
        query = select(CardAp).order_by(CardAp.aid)
        if not include_withdrawn:
            query = query.where(CardAp.withdrawn_at.is_(None))
        if loadable or not self.is_admin_tenant:
            query = query.join(TenantApAvailability, TenantApAvailability.card_ap_id == CardAp.id).where(
                TenantApAvailability.tenant_code == self.tenant_code)
        return query

    def ap_or_404(self, pk: int, *, include_withdrawn: bool = False, loadable: bool = False) -> CardAp:
        """One visible (or loadable) AP, or 404."""
        row = self.session.scalars(self.visible_aps(include_withdrawn=include_withdrawn, loadable=loadable)
                                   .where(CardAp.id == pk)).first()
        if row is None:
            abort(404)
        return row

    def profile(self) -> TenantProfile | None:
        """This tenant's own profile (kind, 全国地方公共団体コード)."""
        return self.session.get(TenantProfile, self.tenant_code)

    def operation_log(self) -> Select[OperationLog]:
        """Operation log entries this tenant may read and count (the 操作ログ screen, the report): every
        tenant's for the admin tenant, else this tenant's."""
        query = select(OperationLog)
        return query if self.is_admin_tenant else query.where(OperationLog.tenant_code == self.tenant_code)

    def terminals(self) -> Select[RegisteredTerminal]:
        """端末管理: this tenant's registered terminals; every tenant's for the admin tenant."""
        query = select(RegisteredTerminal).order_by(RegisteredTerminal.tenant_code, RegisteredTerminal.name,
                                                    RegisteredTerminal.id)
        return query if self.is_admin_tenant else query.where(RegisteredTerminal.tenant_code == self.tenant_code)

    def terminal_or_404(self, pk: int) -> RegisteredTerminal:
        """One terminal this tenant manages, or 404 (another tenant's is as missing as none)."""
        row = self.session.scalars(self.terminals().where(RegisteredTerminal.id == pk)).first()
        if row is None:
            abort(404)
        return row

    def require_terminals_of(self, tenant_code: str) -> None:
        """A tenant registers terminals for itself only, the admin tenant for any: 404 otherwise."""
        if tenant_code != self.tenant_code and not self.is_admin_tenant:
            abort(404)

    def require_admin_tenant(self) -> None:
        """Registry screens exist only for the admin tenant: 404 for everyone else."""
        if not self.is_admin_tenant:
            abort(404)


def scope_for(session: Session, operator: Operator) -> TenantScope:
    """The scope of ``operator``'s tenant."""
    return TenantScope(session, operator.tenant_code, operator.is_admin_tenant)




@dataclass(frozen=True)
class BusinessScope:
    """Queries of one business system (業務ID from its SSL通信証明書, never from the request): only the
    installed APs whose registered 業務ID is its own, across tenants, and the 利用者 and cards holding them.
    Another system's APs, their 利用者 and cards that hold none of this system's APs do not exist for it."""

    session: Session
    business_id: str

    def installations(self) -> Select[Installation, Resident, CardAp]:
        """This system's installed APs with their 利用者, by installation id."""
        return (select(Installation, Resident, CardAp)
                .join(CardAp, CardAp.id == Installation.card_ap_id)
                .join(Resident, Resident.id == Installation.resident_id)
                .where(CardAp.business_id == self.business_id, Installation.state == InstallState.INSTALLED)
                .order_by(Installation.id))

    def cards(self) -> Select[str]:
        """カードFIDs of the cards holding one of this system's APs."""
        return (select(Installation.card_identifier).join(CardAp, CardAp.id == Installation.card_ap_id)
                .where(CardAp.business_id == self.business_id, Installation.state == InstallState.INSTALLED)
                .distinct())

    def tenant_on_card(self, card_identifier: str) -> str | None:
        """The 利用機関 that loaded this system's (first) AP on the card, or None when the card holds none of them."""
        return self.session.scalars(
            select(Installation.tenant_code).join(CardAp, CardAp.id == Installation.card_ap_id)
            .where(CardAp.business_id == self.business_id, Installation.state == InstallState.INSTALLED,
                   Installation.card_identifier == card_identifier)
            .order_by(Installation.id)).first()

    def field_labels(self, tenant_codes: set[str]) -> dict[str, str]:
        """The labels of the items these tenants defined, by id (what a 利用者's ``custom`` is keyed by)."""
        if not tenant_codes:
            return {}
        rows = self.session.scalars(select(CustomField).where(CustomField.tenant_code.in_(sorted(tenant_codes))))
        return {str(f.id): f.label for f in rows}
