"""apdl's tables. Tenant-owned rows carry ``tenant_code`` (the 利用機関 from the ID token) and are read
only through :mod:`apdl.tenancy`."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from apdl.db import Base, utcnow


class Area(enum.StrEnum):
    """The card area an AP lives in."""

    REGIONAL = "regional"  # 地域住民向け領域
    EXTENDED = "extended"  # 拡張利用領域


class PinPolicy(enum.StrEnum):
    """Who sets a card AP's PIN."""

    NONE = "none"  # type C: no PIN
    USER = "user"  # type A: the holder enters it at download


class TenantKind(enum.StrEnum):
    """What a 利用機関 is, for the area rules."""

    MUNICIPALITY = "municipality"  # 市町村
    PREFECTURE = "prefecture"  # 都道府県
    VOLUNTARY = "voluntary"  # 任意団体
    OTHER = "other"  # 国・行政機関・民間


class InstallState(enum.StrEnum):
    """Life of one AP installation row ("recorded or not done")."""

    PENDING = "pending"  # written before INSTALL
    INSTALLED = "installed"  # the card answered 9000 (or GET STATUS lists it)
    FAILED = "failed"  # the card refused, or GET STATUS does not list it after a crash
    DELETED = "deleted"


class OperatorSession(Base):
    """A module session opened by an OIDC login at opauth; ended by logout or back-channel logout."""

    __tablename__ = "apdl_operator_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sid: Mapped[str] = mapped_column(String(128), index=True)
    sub: Mapped[str] = mapped_column(String(128), index=True)
    tenant_code: Mapped[str] = mapped_column(String(64), index=True)
    tenant_name: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    in_business_id: Mapped[str] = mapped_column(String(128))
    permissions: Mapped[list[str]] = mapped_column(JSON)
    acr: Mapped[str] = mapped_column(String(100))
    id_token: Mapped[str] = mapped_column(Text, default="")  # the login's ID token: id_token_hint at logout
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_reason: Mapped[str] = mapped_column(String(40), default="")


class LogoutTokenSeen(Base):
    """A back-channel logout token's ``jti``, kept while a replay of it would still be fresh enough to accept."""

    __tablename__ = "apdl_logout_tokens_seen"

    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    forget_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class CardAp(Base):
    """カードAP: an application providers may have loaded into a card's free area (instance-wide registry)."""

    __tablename__ = "apdl_card_aps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    aid: Mapped[str] = mapped_column(String(32), unique=True)  # upper-case hex, 5..16 bytes
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    provider_name: Mapped[str] = mapped_column(String(100))
    area: Mapped[str] = mapped_column(String(16))
    ap_type: Mapped[str] = mapped_column(String(4))
    size_bytes: Mapped[int] = mapped_column(Integer)
    pin_policy: Mapped[str] = mapped_column(String(16))
    pin_max_tries: Mapped[int] = mapped_column(Integer, default=3)
    business_id: Mapped[str] = mapped_column(String(2))
    personalize_url: Mapped[str] = mapped_column(String(2000), default="")
    needs_standard_id: Mapped[bool] = mapped_column(Boolean, default=False)  # 標準IDを付番する
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TenantProfile(Base):
    """利用機関 as the module knows it: kind and 全国地方公共団体コード for the area rules."""

    __tablename__ = "apdl_tenant_profiles"

    tenant_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    municipality_code: Mapped[str] = mapped_column(String(6), default="")


class TenantApAvailability(Base):
    """利用機関別ダウンロード可能AP: which APs a tenant's terminals may load."""

    __tablename__ = "apdl_tenant_ap_availability"
    __table_args__ = (UniqueConstraint("tenant_code", "card_ap_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_code: Mapped[str] = mapped_column(String(64), index=True)
    card_ap_id: Mapped[int] = mapped_column(ForeignKey("apdl_card_aps.id"))


class Preset(Base):
    """プリセット: a tenant's named set of APs; at most one per tenant loads automatically (自動搭載)."""

    __tablename__ = "apdl_presets"
    __table_args__ = (UniqueConstraint("tenant_code", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_code: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100))
    auto_load: Mapped[bool] = mapped_column(Boolean, default=False)
    card_ap_ids: Mapped[list[int]] = mapped_column(JSON)


class CustomField(Base):
    """A 利用者 item the tenant defines (at most 20 per tenant)."""

    __tablename__ = "apdl_custom_fields"
    __table_args__ = (UniqueConstraint("tenant_code", "label"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_code: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str] = mapped_column(String(100))
    max_length: Mapped[int] = mapped_column(Integer, default=100)
    required: Mapped[bool] = mapped_column(Boolean, default=False)


class Resident(Base):
    """利用者: a card holder registered by a tenant. Never the 個人番号 nor the 住民票コード."""

    __tablename__ = "apdl_residents"
    # The 利用者 list and search: one tenant's rows newest first, or one カードFID in it.
    __table_args__ = (UniqueConstraint("tenant_code", "card_identifier"),
                      Index("ix_apdl_residents_tenant_code_id", "tenant_code", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_code: Mapped[str] = mapped_column(String(64), index=True)
    card_status: Mapped[str] = mapped_column(String(16))  # カード運用状態
    card_identifier: Mapped[str] = mapped_column(String(32))  # カードFID
    kana_family: Mapped[str] = mapped_column(String(100))
    kana_given: Mapped[str] = mapped_column(String(100))
    kanji_family: Mapped[str] = mapped_column(String(100))
    kanji_given: Mapped[str] = mapped_column(String(100))
    birth_date: Mapped[date] = mapped_column(Date)
    gender: Mapped[str] = mapped_column(String(8))
    postal_code: Mapped[str] = mapped_column(String(8))
    address1: Mapped[str] = mapped_column(String(200))
    address2: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[str] = mapped_column(String(20), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    occupation: Mapped[str] = mapped_column(String(100), default="")
    custom: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    holder_request_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # 本人の申出
    holder_request_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))


class Installation(Base):
    """One AP on one card: pending before INSTALL, installed after 9000, reconciled from GET STATUS."""

    __tablename__ = "apdl_installations"
    __table_args__ = (UniqueConstraint("card_ap_id", "user_id_in_ap"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_code: Mapped[str] = mapped_column(String(64), index=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("apdl_residents.id"), index=True)
    card_identifier: Mapped[str] = mapped_column(String(32), index=True)
    card_ap_id: Mapped[int] = mapped_column(ForeignKey("apdl_card_aps.id"))
    user_id_in_ap: Mapped[str] = mapped_column(String(32))  # 利用者ID: random, never from personal data
    standard_id: Mapped[str | None] = mapped_column(String(16), unique=True)  # 標準ID: municipality code + random
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_by: Mapped[str] = mapped_column(String(128), default="")


class OperationLog(Base):
    """操作ログ: every card session, operation, registry change and login, hash-chained."""

    __tablename__ = "apdl_operation_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    tenant_code: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class OperationLogHead(Base):
    """The chain's head (one row): writing it first serialises appends so the chain cannot fork."""

    __tablename__ = "apdl_operation_log_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_hash: Mapped[str] = mapped_column(String(64))


class Diagnosis(Base):
    """カード障害切り分け: one run on the card in a terminal's reader, its steps kept for the history."""

    __tablename__ = "apdl_diagnoses"
    # The history of one card, or of one terminal, in one tenant, newest first.
    __table_args__ = (Index("ix_apdl_diagnoses_tenant_card", "tenant_code", "card_identifier", "id"),
                      Index("ix_apdl_diagnoses_tenant_terminal", "tenant_code", "terminal", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_code: Mapped[str] = mapped_column(String(64))
    card_identifier: Mapped[str] = mapped_column(String(32), default="")  # "" when the card could not be read
    terminal: Mapped[str] = mapped_column(String(200))  # the reader (the server's, or a terminal's)
    actor: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    duration_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # ok / warning / fault
    summary: Mapped[str] = mapped_column(String(64))  # the first fault's code, e.g. "sw:6A82", "no_card"
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


class RegisteredTerminal(Base):
    """端末管理: a terminal a 利用機関 allows to run a card agent (tenant-owned; read through :mod:`apdl.tenancy`).

    Its agent must present an SSL通信証明書 from the trusted CA whose subject is ``O=<organization>,
    OU=terminal <name>`` (what opauth issues for a terminal of that tenant); a renewed certificate with the
    same subject keeps working. With ``pinned_fingerprint`` only that one certificate is accepted.
    """

    __tablename__ = "apdl_terminals"
    __table_args__ = (UniqueConstraint("tenant_code", "name"), UniqueConstraint("organization", "name"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_code: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(63))  # 端末名 (OU=terminal <name>)
    organization: Mapped[str] = mapped_column(String(200))  # O= of the certificate: the tenant's name at opauth
    pinned_fingerprint: Mapped[str] = mapped_column(String(64), default="")  # SHA-256 of the DER, hex; "" = any
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    registered_by: Mapped[str] = mapped_column(String(200))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(200), default="")  # who disabled or enabled it last
    changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TerminalPairing(Base):
    """端末の組付け: a terminal's card agent (known by its SSL通信証明書) and the one operator session it serves.

    The agent asks for a one-time code (shown on the terminal's screen); the operator types it into the
    module; from then on that session's card operations go through that agent only.
    """

    __tablename__ = "apdl_terminal_pairings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    terminal_fingerprint: Mapped[str] = mapped_column(String(64), index=True)  # SHA-256 of the certificate
    terminal_name: Mapped[str] = mapped_column(String(200))
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("apdl_terminals.id"), index=True)  # the registry's
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the one-time code
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    operator_session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    paired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AgentExchange(Base):
    """One command APDU the server built for a terminal's card agent, and the card's answer.

    Under SCP03 both are protected (C-MAC/C-DECRYPTION, R-MAC): the agent relays bytes it cannot forge.
    """

    __tablename__ = "apdl_agent_exchanges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    terminal_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    command: Mapped[str] = mapped_column(Text)  # hex
    response: Mapped[str | None] = mapped_column(Text)  # hex, or None until answered
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued | sent | answered | failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FeedStatus(enum.StrEnum):
    """A card's state as the daily card status feed (カードステータス) reports it."""

    ACTIVE = "active"  # 運用中 (e.g. a suspension lifted)
    LOST = "lost"  # 紛失
    STOLEN = "stolen"  # 盗難
    SUSPENDED = "suspended"  # 一時停止
    ABOLISHED = "abolished"  # 廃止
    MOVED = "moved"  # 転出: with the new residence municipality code


class CardStatus(Base):
    """One card's latest state from the feed (instance-wide, keyed by カードFID; not tenant-owned).

    ``changed_at`` is when this module applied the change (what ``changes_since`` reads);
    ``regional_purge`` is set by a move and cleared when the next contact deleted the regional APs.
    """

    __tablename__ = "apdl_card_status"

    card_identifier: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    residence_code: Mapped[str] = mapped_column(String(6), default="")
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    batch_id: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    regional_purge: Mapped[bool] = mapped_column(Boolean, default=False)


class StatusBatch(Base):
    """One imported card status feed batch: its id and content digest make a re-import a no-op."""

    __tablename__ = "apdl_status_batches"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))  # SHA-256 of the batch's normalised rows
    rows: Mapped[int] = mapped_column(Integer)
    changed: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    imported_by: Mapped[str] = mapped_column(String(200))


class CardStop(Base):
    """即時停止: a service provider stopped a card at once; cancelling keeps the row (audited)."""

    __tablename__ = "apdl_card_stops"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    card_identifier: Mapped[str] = mapped_column(String(32), index=True)
    tenant_code: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(200))
    stopped_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    stopped_by: Mapped[str] = mapped_column(String(200))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    cancelled_by: Mapped[str] = mapped_column(String(200), default="")
    cancel_reason: Mapped[str] = mapped_column(String(200), default="")
