"""操作者登録・修正・失効 and the registration target list (登録対象リスト).

Every function takes the session and a tenancy ``Scope`` and never commits;
the view, API handler or CLI command owns the unit of work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flask_babel import lazy_gettext
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ca.authority import CaSettings
from ca.models import Certificate, RevocationReason
from db import utcnow
from kernel.audit import Actor, AuditAction, record_event
from kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from operators.login.passwords import check_policy, generate_password, hash_password
from operators.login.service import LoginSettings, set_password
from operators.models import (
    BusinessSystem,
    InBusinessId,
    Operator,
    Role,
    StagedOperator,
    Tenant,
    TenantKind,
)
from operators.operator_certs import (
    IssuedOperatorCertificate,
    issue_operator_certificate,
    reissue_for_permissions,
    revoke_all,
)
from operators.operator_data import ROLE_NAMES, OperatorData
from operators.tenancy import (
    Scope,
    ensure_can_manage_operators,
    joint_use_systems,
    staged_of,
)


@dataclass(frozen=True)
class RegistrationResult:
    """A registered operator, their one-time login password (if generated) and their certificate."""

    operator: Operator
    password: str | None
    issued: IssuedOperatorCertificate | None


@dataclass(frozen=True)
class UpdateResult:
    """The modified operator and the certificates re-issued for a change of 許可業務."""

    operator: Operator
    reissued: list[Certificate]


@dataclass(frozen=True)
class RevocationResult:
    """The revoked operator, their revoked certificates and how many biometric credentials went."""

    operator: Operator
    certificates: list[Certificate]
    biometric_credentials_removed: int


def target(tenant: Tenant, operator_id: str) -> str:
    """The audit target naming an operator."""
    return f"operator:{tenant.code}/{operator_id}"


def permitted_systems(session: Session, tenant: Tenant, business_ids: Sequence[str]) -> list[BusinessSystem]:
    """The systems named by ``business_ids``; each must be in ``tenant``'s joint use (共同利用)."""
    allowed = {s.business_id: s for s in joint_use_systems(session, tenant)}
    missing = [b for b in business_ids if b not in allowed]
    if missing:
        raise InvalidInput(lazy_gettext(
            "許可業務: %(ids)s はこの団体が利用できる業務ではありません（共同利用業務設定）。",
                                        ids=", ".join(missing)))
    return [allowed[b] for b in business_ids]


def check_role(session: Session, scope: Scope, tenant: Tenant, data: OperatorData) -> BusinessSystem | None:
    """Managers may create operators and managers of their tenant; only システム管理者 more."""
    if data.role in (Role.SYSTEM_ADMIN, Role.BUSINESS_ADMIN) and not scope.all_tenants:
        raise Forbidden(lazy_gettext("%(role)s を登録できるのはシステム管理者だけです。", role=ROLE_NAMES[data.role]))
    if data.role is Role.SYSTEM_ADMIN and tenant.kind is not TenantKind.SYSTEM:
        raise InvalidInput(lazy_gettext("システム管理者はシステム管理の団体にだけ登録できます。"))
    if data.role is Role.BUSINESS_ADMIN:
        system = session.scalar(select(BusinessSystem).where(
            BusinessSystem.business_id == data.administers_business_id))
        if system is None:
            raise InvalidInput(lazy_gettext(
                "管理する業務: 業務ID %(id)s の業務システムはありません。", id=data.administers_business_id))
        return system
    return None


def _check_password(password: str, operator_id: str) -> str:
    reason = check_policy(password, operator_id=operator_id)
    if reason is not None:
        raise InvalidInput(lazy_gettext("パスワード (password): %(reason)s", reason=reason))
    return hash_password(password)


def _ensure_new_operator_id(session: Session, tenant: Tenant, operator_id: str) -> None:
    taken = session.scalar(select(Operator.id).where(Operator.tenant_id == tenant.id,
                                                     Operator.operator_id == operator_id))
    if taken is not None:
        raise Conflict(lazy_gettext("オペレータID %(id)s はこの団体に登録済みです。", id=operator_id))


def _apply(session: Session, operator: Operator, data: OperatorData, systems: list[BusinessSystem],
           administers: BusinessSystem | None) -> None:
    for name in ("name", "department", "gender", "phone", "extension", "email", "info", "extra_info",
                 "auth_method", "role"):
        setattr(operator, name, getattr(data, name))
    operator.administers_business_system_id = administers.id if administers else None
    operator.permitted_systems = systems
    if data.in_business_id:
        existing = {m.business_system_id: m for m in session.scalars(
            select(InBusinessId).where(InBusinessId.operator_id == operator.id))}
        for system in systems:
            mapping = existing.get(system.id)
            if mapping is None:
                session.add(InBusinessId(operator_id=operator.id, business_system_id=system.id,
                                         in_business_id=data.in_business_id, permissions=[]))
            else:
                mapping.in_business_id = data.in_business_id


def administered_business_id(session: Session, operator: Operator) -> str:
    """The 業務ID a business system administrator administers ('' for other roles)."""
    if operator.administers_business_system_id is None:
        return ""
    system = session.get(BusinessSystem, operator.administers_business_system_id)
    return system.business_id if system else ""


def register_operator(session: Session, *, scope: Scope, tenant: Tenant, data: OperatorData,
                      password_hash: str, actor: Actor) -> Operator:
    """操作者登録 without a certificate (the caller issues one); ``Conflict`` for a taken ID."""
    ensure_can_manage_operators(scope, tenant)
    administers = check_role(session, scope, tenant, data)
    systems = permitted_systems(session, tenant, data.business_ids)
    _ensure_new_operator_id(session, tenant, data.operator_id)
    operator = Operator(tenant_id=tenant.id, operator_id=data.operator_id, name=data.name, role=data.role,
                        password_hash=password_hash, must_change_password=True, tenant=tenant)
    session.add(operator)
    try:
        session.flush()
    except IntegrityError:  # registered concurrently after the check above
        raise Conflict(lazy_gettext("オペレータID %(id)s はこの団体に登録済みです。", id=data.operator_id)) from None
    _apply(session, operator, data, systems, administers)
    session.flush()
    record_event(session, action=AuditAction.OPERATOR_REGISTERED, actor=actor,
                 target=target(tenant, data.operator_id), detail=data.as_json())
    return operator


def register_and_issue(session: Session, *, scope: Scope, settings: CaSettings, tenant: Tenant,
                       data: OperatorData, password: str | None, actor: Actor,
                       csr_bytes: bytes | None = None) -> RegistrationResult:
    """Register one operator and issue their certificate (PKCS#12, or from ``csr_bytes``)."""
    generated = None
    if not password:
        password = generated = generate_password()
    operator = register_operator(session, scope=scope, tenant=tenant, data=data,
                                 password_hash=_check_password(password, data.operator_id), actor=actor)
    issued = issue_operator_certificate(session, settings=settings, operator=operator, actor=actor,
                                        csr_bytes=csr_bytes)
    return RegistrationResult(operator=operator, password=generated, issued=issued)


def update_operator(session: Session, *, scope: Scope, settings: CaSettings, operator: Operator,
                    data: OperatorData, actor: Actor) -> UpdateResult:
    """照会・修正: change the operator's fields; a change of 許可業務 re-issues their certificates."""
    tenant = operator.tenant
    ensure_can_manage_operators(scope, tenant)
    if operator.revoked_at is not None:
        raise Conflict(lazy_gettext("操作者 %(id)s は失効しているため修正できません。", id=operator.operator_id))
    if data.operator_id != operator.operator_id:
        raise InvalidInput(lazy_gettext("オペレータIDは変更できません。"))
    changes_role = data.role is not operator.role or data.role is Role.BUSINESS_ADMIN
    administers = check_role(session, scope, tenant, data) if changes_role else None
    systems = permitted_systems(session, tenant, data.business_ids)
    before = sorted(s.business_id for s in operator.permitted_systems)
    _apply(session, operator, data, systems, administers)
    removed = [s.id for s in session.scalars(select(BusinessSystem).where(BusinessSystem.business_id.in_(
        set(before) - set(data.business_ids))))]
    if removed:  # an in-business ID without the permission would be a dangling grant
        session.execute(delete(InBusinessId).where(InBusinessId.operator_id == operator.id,
                                                   InBusinessId.business_system_id.in_(removed)))
    session.flush()
    record_event(session, action=AuditAction.OPERATOR_UPDATED, actor=actor,
                 target=target(tenant, operator.operator_id),
                 detail=dict(data.as_json(), business_ids_before=before))
    reissued: list[Certificate] = []
    if before != list(data.business_ids):
        reissued = reissue_for_permissions(session, settings=settings, operator=operator, actor=actor)
    return UpdateResult(operator=operator, reissued=reissued)


def withdraw_business_system(session: Session, *, settings: CaSettings, tenant: Tenant, system: BusinessSystem,
                             actor: Actor) -> list[Operator]:
    """After ``tenant`` lost the joint use of ``system``: take it from every active operator of the tenant.

    Their in-business IDs for it are removed and their certificates re-issued without it
    (the old ones revoked as superseded), so no operator keeps a permission the tenant lacks.
    """
    operators = list(session.scalars(select(Operator).where(
        Operator.tenant_id == tenant.id, Operator.revoked_at.is_(None),
        Operator.permitted_systems.any(BusinessSystem.id == system.id)).order_by(Operator.operator_id)))
    for operator in operators:
        before = sorted(s.business_id for s in operator.permitted_systems)
        operator.permitted_systems = [s for s in operator.permitted_systems if s.id != system.id]
        session.execute(delete(InBusinessId).where(InBusinessId.operator_id == operator.id,
                                                   InBusinessId.business_system_id == system.id))
        session.flush()
        record_event(session, action=AuditAction.OPERATOR_UPDATED, actor=actor,
                     target=target(tenant, operator.operator_id),
                     detail={"business_ids_before": before, "reason": "joint use withdrawn",
                             "business_ids": sorted(s.business_id for s in operator.permitted_systems)})
        reissue_for_permissions(session, settings=settings, operator=operator, actor=actor)
    return operators


# What else an operator holds that must go when they are revoked (biometric credentials, registered by
# bio.service): each cleanup runs in the revoking transaction, audits itself and returns how many it removed.
RevocationCleanup = Callable[[Session, Operator, Actor], int]
_revocation_cleanups: dict[str, RevocationCleanup] = {}


def on_operator_revoked(name: str, cleanup: RevocationCleanup) -> None:
    """Run ``cleanup`` inside every 操作者失効 (registering the same name again replaces it)."""
    _revocation_cleanups[name] = cleanup


def _remove_biometrics(session: Session, operator: Operator, actor: Actor) -> int:
    """The biometric credentials removed by the cleanups registered with ``on_operator_revoked``."""
    return sum(cleanup(session, operator, actor) for cleanup in _revocation_cleanups.values())


def revoke_operator(session: Session, *, scope: Scope, operator: Operator, actor: Actor) -> RevocationResult:
    """操作者失効: no login anywhere, every certificate revoked, biometrics removed; the record stays."""
    ensure_can_manage_operators(scope, operator.tenant)
    if operator.revoked_at is not None:
        raise Conflict(lazy_gettext("操作者 %(id)s は既に失効しています。", id=operator.operator_id))
    if operator.id == scope.actor_id:
        raise InvalidInput(lazy_gettext("自分自身は失効できません。"))
    operator.revoked_at = utcnow()
    operator.session_version += 1  # ends every browser session at its next request
    operator.password_hash = ""
    certificates = revoke_all(session, operator=operator, actor=actor,
                              reason=RevocationReason.PRIVILEGE_WITHDRAWN)
    removed = _remove_biometrics(session, operator, actor)
    mappings = session.execute(delete(InBusinessId).where(InBusinessId.operator_id == operator.id))
    session.flush()
    record_event(session, action=AuditAction.OPERATOR_REVOKED, actor=actor,
                 target=target(operator.tenant, operator.operator_id),
                 detail={"certificates": [c.serial for c in certificates],
                         "biometric_credentials_removed": removed,
                         "in_business_ids_removed": int(getattr(mappings, "rowcount", 0) or 0)})
    return RevocationResult(operator=operator, certificates=certificates, biometric_credentials_removed=removed)


# --- 登録対象リスト -------------------------------------------------------------------------------

MAX_STAGED = 200


def stage_operator(session: Session, *, scope: Scope, tenant: Tenant, data: OperatorData, password: str,
                   actor: Actor, staged: StagedOperator | None = None) -> StagedOperator:
    """Validate and put an operator on (or change an entry of) the manager's registration target list."""
    ensure_can_manage_operators(scope, tenant)
    check_role(session, scope, tenant, data)
    permitted_systems(session, tenant, data.business_ids)
    _ensure_new_operator_id(session, tenant, data.operator_id)
    others = staged_of(scope, tenant).where(StagedOperator.operator_id == data.operator_id)
    if staged is not None:
        others = others.where(StagedOperator.id != staged.id)
    if session.scalar(others) is not None:
        raise Conflict(lazy_gettext("オペレータID %(id)s は既に登録対象リストにあります。", id=data.operator_id))
    if staged is None:
        count = session.scalar(select(func.count()).select_from(staged_of(scope, tenant).subquery())) or 0
        if count >= MAX_STAGED:
            raise InvalidInput(lazy_gettext(
                "登録対象リストには %(max)s 名までしか登録できません。先に証明書を発行するか、"
                                            "CSV で一括登録してください。", max=MAX_STAGED))
        if not password:
            raise InvalidInput(lazy_gettext("パスワード (password) は必須です（「生成」で作成できます）。"))
        staged = StagedOperator(manager_id=scope.actor_id, tenant_id=tenant.id, operator_id=data.operator_id)
        session.add(staged)
    staged.operator_id = data.operator_id
    staged.fields = data.as_json()
    if password:
        staged.password_hash = _check_password(password, data.operator_id)
    session.flush()
    record_event(session, action=AuditAction.OPERATOR_STAGED, actor=actor, target=target(tenant, data.operator_id),
                 detail=data.as_json())
    return staged


def unstage(session: Session, *, scope: Scope, tenant: Tenant, staged: StagedOperator, actor: Actor) -> None:
    """Remove an entry from the registration target list (選択データを削除する)."""
    ensure_can_manage_operators(scope, tenant)
    session.delete(staged)
    session.flush()
    record_event(session, action=AuditAction.OPERATOR_UNSTAGED, actor=actor,
                 target=target(tenant, staged.operator_id))


def issue_staged(session: Session, *, scope: Scope, settings: CaSettings, tenant: Tenant,
                 actor: Actor) -> list[RegistrationResult]:
    """証明書発行: register every staged operator and issue each one's PKCS#12, all or nothing."""
    entries = list(session.scalars(staged_of(scope, tenant)))
    if not entries:
        raise InvalidInput(lazy_gettext("登録対象リストは空です。"))
    results = []
    for entry in entries:
        data = OperatorData.from_mapping(entry.fields)
        operator = register_operator(session, scope=scope, tenant=tenant, data=data,
                                     password_hash=entry.password_hash, actor=actor)
        issued = issue_operator_certificate(session, settings=settings, operator=operator, actor=actor)
        results.append(RegistrationResult(operator=operator, password=None, issued=issued))
        session.delete(entry)
    session.flush()
    return results


# --- パスワード一括変更 ---------------------------------------------------------------------------

def bulk_change_passwords(session: Session, *, scope: Scope, tenant: Tenant, operators: Sequence[Operator],
                          actor: Actor, settings: LoginSettings) -> list[tuple[Operator, str]]:
    """New generated passwords for ``operators`` (returned once; only hashes are stored).

    Goes through ``login_service.set_password``: the old password enters the history, every session ends.
    """
    ensure_can_manage_operators(scope, tenant)
    if not operators:
        raise InvalidInput(lazy_gettext("操作者を一人以上選択してください。"))
    results = []
    for operator in operators:
        if operator.tenant_id != tenant.id:
            raise NotFound(lazy_gettext("この団体に操作者 %(id)s はいません。", id=operator.operator_id))
        if operator.revoked_at is not None:
            raise Conflict(lazy_gettext("操作者 %(id)s は失効しています。", id=operator.operator_id))
        password = generate_password()
        set_password(session, operator=operator, new_hash=hash_password(password), settings=settings,
                     must_change=True)
        results.append((operator, password))
    session.flush()
    record_event(session, action=AuditAction.OPERATOR_PASSWORDS_RESET, actor=actor,
                 target=f"tenant:{tenant.code}", detail={"operators": [o.operator_id for o, _ in results]})
    return results
