"""カード障害切り分け: check the card in a reader step by step and explain what failed, in Japanese and English.

The steps: the reader is there, a card is in it, its ATR and protocol, SELECT of the card manager, the card's
identity (GET DATA), what GET STATUS lists, SELECT of each AP the tenant recorded on the card or the card lists
(type A: the PIN's tries left), free space per area (GET DATA FF21), the card status feed (a hook, see
:data:`STATUS_FEED_HOOK`), and the tenant's recent operations on this card from the operation log.

Steps are stored as codes and parameters (never sentences), so the history reads in the viewer's language.
A run is kept per card and terminal (:class:`apdl.models.Diagnosis`) and logged in the operation log.

Where it runs: on the module's own reader (APDL_READER), or, when the operator's session is paired with a
terminal (端末の組付け), on that terminal's reader through its card agent (:func:`run_on_terminal`), which
reports no reader, no card, no ATR and a mute card apart, and the ATR itself.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from flask_babel import lazy_gettext, ngettext
from sqlalchemy import or_

from apdl import cardstatus, oplog, terminals
from apdl.card import commands
from apdl.card.adapter import CardStatusError, GlobalPlatformCardSession, Transport
from apdl.card.apdu import StatusWord
from apdl.card.commands import Area as CardArea
from apdl.card.pcsc import PcscTransport, reader_names, reader_state
from apdl.cardops import agent_transport, card_session, one_at_a_time
from apdl.errors import CardError, CardUnavailable
from apdl.models import Area, CardAp, Diagnosis, Installation, InstallState, OperationLog, TerminalPairing
from apdl.tenancy import Operator, TenantScope

# app.extensions[STATUS_FEED_HOOK]: a callable (scope, card_identifier) -> dict | None that reports the card
# status feed's view of this card, e.g. {"status": "lost", "as_of": "2026-11-30", "stale": False}. The card
# status feed (カードステータス) registers it; without it the step says the feed is not connected.
STATUS_FEED_HOOK = "apdl.status_feed"
StatusFeed = Callable[[TenantScope, str], "dict[str, Any] | None"]

RECENT_OPERATIONS = 20
SECURITY_DOMAINS = {commands.CARD_MANAGER_AID.hex().upper(), commands.REGIONAL_AREA_AID.hex().upper(),
                    commands.EXTENDED_AREA_AID.hex().upper()}


class Outcome(enum.StrEnum):
    """How a step (and the whole run) went."""

    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    FAULT = "fault"
    SKIPPED = "skipped"


# The outcomes in words (the stored code stays the CSS class: outcome-ok, outcome-fault, ...).
OUTCOME_LABELS: dict[str, Any] = {
    Outcome.OK.value: lazy_gettext("正常"),
    Outcome.INFO.value: lazy_gettext("情報"),
    Outcome.WARNING.value: lazy_gettext("注意"),
    Outcome.FAULT.value: lazy_gettext("異常"),
    Outcome.SKIPPED.value: lazy_gettext("未実施"),
}

# Plain explanations of the status words, for operators: what it means and what to do.
SW_MESSAGES: dict[int, Any] = {
    0x9000: lazy_gettext("正常に終了しました。"),
    0x6310: lazy_gettext("続きのデータがあります（正常）。"),
    0x6300: lazy_gettext("認証に失敗しました。鍵が合っていないか、別のカードです。"),
    0x6700: lazy_gettext("コマンドの長さが正しくありません。カードの種類が違う可能性があります。"),
    0x6982: lazy_gettext("セキュリティ条件を満たしていません。認証または暗証番号の照合が必要です。"),
    0x6983: lazy_gettext("暗証番号がロックされています。本人確認のうえ、暗証番号の初期化が必要です。"),
    0x6985: lazy_gettext("使用条件を満たしていません。操作の順序や、カードの状態を確認してください。"),
    0x6A80: lazy_gettext("コマンドのデータが正しくありません。"),
    0x6A81: lazy_gettext("カードがこの機能に対応していません。"),
    0x6A82: lazy_gettext("カードAPが見つかりません。カードに搭載されていないか、削除されています。"),
    0x6A83: lazy_gettext("レコードが見つかりません。"),
    0x6A84: lazy_gettext("カードの空き容量が足りません。不要なカードAPを削除してください。"),
    0x6A86: lazy_gettext("コマンドのパラメータ（P1・P2）が正しくありません。"),
    0x6A88: lazy_gettext("指定されたデータがカードにありません。"),
    0x6A89: lazy_gettext("同じAIDのカードAPが既にカードにあります。"),
    0x6D00: lazy_gettext("カードがこの命令に対応していません。カードの種類が違う可能性があります。"),
    0x6E00: lazy_gettext("カードがこの命令クラスに対応していません。カードの種類が違う可能性があります。"),
    0x6F00: lazy_gettext("カード内部でエラーが発生しました。カードの故障が考えられます。"),
}
SW_UNKNOWN = lazy_gettext("カードがエラーを返しました（SW %(sw)s）。")

STEP_TITLES: dict[str, Any] = {
    "reader": lazy_gettext("カードリーダー"),
    "card": lazy_gettext("カードの挿入"),
    "atr": lazy_gettext("ATR・プロトコル"),
    "manager": lazy_gettext("カードマネージャの選択"),
    "card_info": lazy_gettext("カード情報"),
    "apps": lazy_gettext("カードAP一覧"),
    "ap": lazy_gettext("カードAPの選択"),
    "pin": lazy_gettext("暗証番号の状態"),
    "free": lazy_gettext("空き容量"),
    "status_feed": lazy_gettext("カードステータス"),
    "recent": lazy_gettext("最近の操作"),
}

MESSAGES: dict[str, Any] = {
    "agent_silent": lazy_gettext(
        "端末のカードエージェントが応答しません。端末でカードエージェントが動いているか確認してください。"),
    "pcsc_unavailable": lazy_gettext(
        "PC/SCサービスに接続できません。サービス（pcscd）が動いているか確認してください。"),
    "reader_missing": lazy_gettext(
        "カードリーダー「%(reader)s」が見つかりません。接続とドライバを確認してください。"),
    "reader_ok": lazy_gettext("カードリーダー「%(reader)s」を検出しました。"),
    "no_card": lazy_gettext("カードが挿入されていません。カードを挿入してください。"),
    "no_atr": lazy_gettext("カードは挿入されていますが、応答（ATR）がありません。カードの向きと汚れを確認し、"
                           "挿し直してください。改善しない場合はカードの故障が考えられます。"),
    "card_ok": lazy_gettext("カードが挿入されています。"),
    "atr": lazy_gettext("ATR %(atr)s、プロトコル %(protocol)s"),
    "mute": lazy_gettext("カードが応答しません（タイムアウト）。カードを挿し直してください。"
                         "改善しない場合はカードの故障が考えられます。"),
    "card_error": lazy_gettext("カードとの通信に失敗しました。"),
    "sw": lazy_gettext("%(command)s: %(explanation)s"),
    "manager_ok": lazy_gettext("カードマネージャを選択できました。"),
    "card_info": lazy_gettext("カードFID %(card)s、住所地コード %(residence)s"),
    "ap_ok": lazy_gettext("%(name)s を選択できました。"),
    "ap_missing": lazy_gettext("%(name)s は搭載済みと記録されていますが、カードにありません（6A82）。"
                               "カードAPが見つかりません。"),
    "ap_not_recorded": lazy_gettext("%(name)s はカードにありますが、この利用機関の搭載記録にありません。"),
    "pin_blocked": lazy_gettext("%(name)s の暗証番号: %(explanation)s"),
    "pin_verified": lazy_gettext("%(name)s の暗証番号は照合済みです。"),
    "free_short": lazy_gettext("%(area)s: 空き %(free)s バイト。搭載できるカードAPがありません（6A84）。"
                               "カードの空き容量が足りません。"),
    "area_absent": lazy_gettext("%(area)s はまだ設定されていません。"),
    "feed_unavailable": lazy_gettext("カードステータスは連携されていません。"),
    "feed": lazy_gettext("カードステータス: %(status)s（%(as_of)s 時点）"),
    "feed_stale": lazy_gettext("カードステータス: %(status)s（%(as_of)s 時点、情報が古くなっています）"),
    "feed_stopped": lazy_gettext("このカードは即時停止中です。"),
    "feed_stopped_stale": lazy_gettext("このカードは即時停止中です。なお、カードステータスの取込が古くなっています。"),
    "recent_none": lazy_gettext("この利用機関の操作記録はありません。"),
    "skipped": lazy_gettext("前の段階で失敗したため実施していません。"),
}
# The messages that count something: the count picks the plural form (English "1 card AP", "2 card APs").
COUNTED: dict[str, Callable[[dict[str, Any]], str]] = {
    "apps": lambda p: ngettext("カードAP %(num)d件（%(aids)s）", "カードAP %(num)d件（%(aids)s）", int(p["count"]),
                               aids=p["aids"]),
    "pin_left": lambda p: ngettext("%(name)s の暗証番号: 残り%(num)d回", "%(name)s の暗証番号: 残り%(num)d回",
                                   int(p["n"]), name=p["name"]),
    "free": lambda p: ngettext("%(area)s: 空き %(free)s バイト、カードAP %(num)d件",
                               "%(area)s: 空き %(free)s バイト、カードAP %(num)d件", int(p["apps"]), area=p["area"],
                               free=p["free"]),
    "recent": lambda p: ngettext("この利用機関の操作 %(num)d件", "この利用機関の操作 %(num)d件", int(p["count"])),
}
# A run's 要約 (the code of its first fault or warning) in words; an SW is shown with its explanation.
SUMMARY_LABELS: dict[str, Any] = {
    "agent_silent": lazy_gettext("カードエージェントが応答しない"),
    "pcsc_unavailable": lazy_gettext("PC/SCサービスに接続できない"),
    "reader_missing": lazy_gettext("カードリーダーが見つからない"),
    "no_card": lazy_gettext("カード未挿入"),
    "no_atr": lazy_gettext("カードの応答（ATR）なし"),
    "mute": lazy_gettext("カードが応答しない"),
    "card_error": lazy_gettext("カードとの通信失敗"),
    "feed": lazy_gettext("カードステータスが運用中ではない"),
    "feed_stale": lazy_gettext("カードステータスの情報が古い"),
    "feed_stopped": lazy_gettext("即時停止中"),
    "feed_stopped_stale": lazy_gettext("即時停止中"),
}
# The card status feed's statuses in words (a 即時停止 in force is "stopped").
FEED_STATUS_LABELS: dict[str, Any] = {**{k.value: v for k, v in cardstatus.STATUS_LABELS.items()},
                                      "stopped": lazy_gettext("即時停止中")}
AREA_NAMES: dict[str, Any] = {Area.REGIONAL.value: lazy_gettext("地域住民向け領域"),
                              Area.EXTENDED.value: lazy_gettext("拡張利用領域")}


def explain_sw(sw: int) -> str:
    """The plain explanation of a status word in the current language, with the code."""
    if sw & 0xFFF0 == 0x63C0:
        left = ngettext("暗証番号が違います。残り%(num)d回です。", "暗証番号が違います。残り%(num)d回です。", sw & 0x0F)
        return f"{sw:04X}: {left}"
    message = SW_MESSAGES.get(sw)
    if message is None:
        return str(SW_UNKNOWN % {"sw": f"{sw:04X}"})
    return f"{sw:04X}: {message}"


def outcome_label(outcome: str) -> str:
    """An outcome (ok, warning, ...) in words of the current language (an unknown code as it is)."""
    return str(OUTCOME_LABELS.get(outcome, outcome))


def summary_label(summary: str) -> str:
    """A run's stored 要約 in words: ``ok`` as 正常, ``sw:6A84`` as the SW and its explanation, a step's code as
    a short phrase (an unknown code as it is)."""
    if summary == Outcome.OK.value:
        return outcome_label(summary)
    if summary.startswith("sw:"):
        try:
            return explain_sw(int(summary[3:], 16))
        except ValueError:
            return summary
    return str(SUMMARY_LABELS.get(summary, summary))


def describe(step: dict[str, Any]) -> str:
    """One stored step as a sentence in the current language."""
    params = dict(step.get("params", {}))
    code = step["code"]
    if code in ("feed", "feed_stale") and params.get("status") == "stopped":  # runs stored before feed_stopped
        code = "feed_stopped_stale" if code == "feed_stale" else "feed_stopped"
    if "status" in params:
        params["status"] = str(FEED_STATUS_LABELS.get(params["status"], params["status"]))
    if "area" in params:
        params["area"] = str(AREA_NAMES.get(params["area"], params["area"]))
    if step.get("sw"):
        params.setdefault("explanation", explain_sw(int(step["sw"], 16)))
    counted = COUNTED.get(code)
    if counted is not None:
        try:
            return counted(params)
        except (KeyError, TypeError, ValueError):
            return str(code)
    message = MESSAGES.get(code)
    if message is None:
        return str(code)
    try:
        return str(message % params) if params else str(message)
    except (KeyError, TypeError, ValueError):
        return str(message)


def step_title(step: dict[str, Any]) -> str:
    """The step's name in the current language."""
    return str(STEP_TITLES.get(step["key"], step["key"]))


@dataclass
class Run:
    """Steps gathered so far."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    current: str = "reader"  # the step under way (where a card that stops answering is reported)

    def add(self, key: str, outcome: Outcome, code: str, *, sw: int | None = None, **params: Any) -> None:
        step: dict[str, Any] = {"key": key, "outcome": outcome.value, "code": code, "params": params}
        if sw is not None:
            step["sw"] = f"{sw:04X}"
        self.steps.append(step)

    def status_error(self, key: str, exc: CardStatusError, **params: Any) -> None:
        outcome = Outcome.WARNING if exc.sw & 0xFFF0 == 0x63C0 else Outcome.FAULT
        self.add(key, outcome, "sw", sw=exc.sw, command=exc.command, **params)

    def skip(self, *keys: str) -> None:
        for key in keys:
            self.add(key, Outcome.SKIPPED, "skipped")

    @property
    def outcome(self) -> Outcome:
        outcomes = {s["outcome"] for s in self.steps}
        if Outcome.FAULT.value in outcomes:
            return Outcome.FAULT
        return Outcome.WARNING if Outcome.WARNING.value in outcomes else Outcome.OK

    @property
    def summary(self) -> str:
        for wanted in (Outcome.FAULT.value, Outcome.WARNING.value):
            for step in self.steps:
                if step["outcome"] == wanted:
                    return f"sw:{step['sw']}" if step.get("sw") else step["code"]
        return "ok"


CARD_STEPS = ("atr", "manager", "card_info", "apps", "ap", "free", "status_feed", "recent")


def run(scope: TenantScope, *, operator: Operator, reader: str | None = None, terminal: str | None = None) -> Diagnosis:
    """Diagnose the card in ``reader`` (default APDL_READER), store the run and log it; committed."""
    reader = reader or current_app.config["READER"]
    started = time.monotonic()
    result = Run()
    with one_at_a_time(f"reader:{reader}"):  # not while a card operation runs on the same card
        card_identifier = _probe(scope, result, reader)
    return _store(scope, operator, result, card_identifier, terminal=terminal or reader, target=f"reader:{reader}",
                  started=started)


def run_on_terminal(scope: TenantScope, *, operator: Operator, paired: TerminalPairing) -> Diagnosis:
    """Diagnose the card in the reader of the terminal this session is paired with, through its card agent (the
    same relay and per-terminal lock as the card operations); the run names that terminal. Committed."""
    started = time.monotonic()
    result = Run()
    with agent_transport(paired) as agent:
        card_identifier = _probe_agent(scope, result, agent)
    return _store(scope, operator, result, card_identifier, terminal=paired.terminal_name,
                  target=f"terminal:{paired.terminal_fingerprint[:16]}", started=started)


def _store(scope: TenantScope, operator: Operator, result: Run, card_identifier: str, *, terminal: str, target: str,
           started: float) -> Diagnosis:
    diagnosis = Diagnosis(tenant_code=scope.tenant_code, card_identifier=card_identifier, terminal=terminal[:200],
                          actor=operator.actor, duration_ms=int((time.monotonic() - started) * 1000),
                          outcome=result.outcome.value, summary=result.summary[:64], steps=result.steps)
    db = scope.session
    db.add(diagnosis)
    db.flush()
    oplog.record(db, tenant_code=scope.tenant_code, actor=operator.actor, action=oplog.Action.CARD_DIAGNOSED,
                 target=f"card:{card_identifier}" if card_identifier else target,
                 detail={"diagnosis": diagnosis.id, "outcome": diagnosis.outcome, "summary": diagnosis.summary,
                         "terminal": diagnosis.terminal})
    db.commit()
    return diagnosis


def _probe(scope: TenantScope, result: Run, reader: str) -> str:
    """Run the steps into ``result``; the card's identifier when it could be read."""
    try:
        names = reader_names()
    except CardUnavailable:
        result.add("reader", Outcome.FAULT, "pcsc_unavailable")
        result.skip("card", *CARD_STEPS)
        return ""
    if reader not in names:
        result.add("reader", Outcome.FAULT, "reader_missing", reader=reader)
        result.skip("card", *CARD_STEPS)
        return ""
    result.add("reader", Outcome.OK, "reader_ok", reader=reader)
    try:
        state = reader_state(reader)
    except CardUnavailable:
        result.add("card", Outcome.FAULT, "card_error")
        result.skip(*CARD_STEPS)
        return ""
    if not state.present:
        result.add("card", Outcome.FAULT, "no_card")
        result.skip(*CARD_STEPS)
        return ""
    if state.mute or len(state.atr) < 2 or state.atr[0] not in (0x3B, 0x3F):  # TS: direct or inverse convention
        result.add("card", Outcome.FAULT, "no_atr")
        result.skip(*CARD_STEPS)
        return ""
    result.add("card", Outcome.OK, "card_ok")
    try:
        transport = PcscTransport(reader)
    except CardUnavailable:
        result.add("atr", Outcome.FAULT, "no_atr")
        result.skip(*CARD_STEPS[1:])
        return ""
    try:
        return _on_card(scope, result, transport, transport.atr, transport.protocol)
    finally:
        transport.close()


def _probe_agent(scope: TenantScope, result: Run, agent: terminals.AgentTransport) -> str:
    """The same steps through the terminal's card agent: its reader and the card's ATR first, then the APDUs."""
    status = agent.card_status()
    if status.error == "timeout":
        result.add("reader", Outcome.FAULT, "agent_silent")
        result.skip("card", *CARD_STEPS)
        return ""
    if status.error == "no_reader":
        result.add("reader", Outcome.FAULT, "reader_missing", reader=status.reader)
        result.skip("card", *CARD_STEPS)
        return ""
    result.add("reader", Outcome.OK, "reader_ok", reader=status.reader)
    if status.error or len(status.data) < 2 or status.data[0] not in (0x3B, 0x3F):
        result.add("card", Outcome.FAULT, "no_card" if status.error == "no_card" else
                   "no_atr" if status.error in ("no_atr", "") else "card_error")
        result.skip(*CARD_STEPS)
        return ""
    result.add("card", Outcome.OK, "card_ok")
    return _on_card(scope, result, agent, status.data, status.protocol)


def _on_card(scope: TenantScope, result: Run, transport: Transport, atr: bytes, protocol: str) -> str:
    """The steps from the ATR on, through ``transport``; the card's identifier when it could be read."""
    card_identifier = ""
    try:
        result.current = "atr"
        result.add("atr", Outcome.OK, "atr", atr=atr.hex(" ").upper(), protocol=protocol)
        card_identifier = _card_steps(scope, result, card_session(transport))  # SCP03 when on
    except CardUnavailable as exc:
        gone = isinstance(exc, terminals.AgentCardUnavailable) and exc.kind == "no_card"
        result.add(result.current, Outcome.FAULT, "no_card" if gone else "mute")
        done = {s["key"] for s in result.steps}
        result.skip(*[k for k in CARD_STEPS if k not in done and k not in ("pin", "status_feed", "recent")])
    except CardError:
        result.add(result.current, Outcome.FAULT, "card_error")
    if card_identifier:
        _status_feed(scope, result, card_identifier)
        _recent(scope, result, card_identifier)
    else:
        result.skip("status_feed", "recent")
    return card_identifier


def _card_steps(scope: TenantScope, result: Run, card: GlobalPlatformCardSession) -> str:
    result.current = "manager"
    try:
        card.select(commands.CARD_MANAGER_AID)
        result.add("manager", Outcome.OK, "manager_ok")
    except CardStatusError as exc:
        result.status_error("manager", exc)
    card_identifier = ""
    result.current = "card_info"
    try:
        info = card.card_info()
        card_identifier = info.card_identifier[:32]
        result.add("card_info", Outcome.OK, "card_info", card=info.card_identifier, residence=info.residence_code)
    except CardStatusError as exc:
        result.status_error("card_info", exc)
    on_card: list[str] | None
    result.current = "apps"
    try:
        on_card = [e.aid.hex().upper() for e in card.list_apps()]
        aps = [a for a in on_card if a not in SECURITY_DOMAINS]
        result.add("apps", Outcome.OK, "apps", count=len(aps), aids=", ".join(aps) or "-")
    except CardStatusError as exc:
        on_card = None
        result.status_error("apps", exc)
    _ap_steps(scope, result, card, card_identifier, on_card)
    if on_card is None or commands.REGIONAL_AREA_AID.hex().upper() in on_card:
        _free_step(scope, result, card, Area.REGIONAL.value)
    else:
        result.add("free", Outcome.INFO, "area_absent", area=Area.REGIONAL.value)
    _free_step(scope, result, card, Area.EXTENDED.value)
    return card_identifier


def _ap_steps(scope: TenantScope, result: Run, card: GlobalPlatformCardSession, card_identifier: str,
              on_card: list[str] | None) -> None:
    db = scope.session
    recorded: dict[str, CardAp] = {}
    if card_identifier:
        rows = db.execute(scope.select(Installation).join(CardAp, CardAp.id == Installation.card_ap_id)
                          .add_columns(CardAp).where(Installation.card_identifier == card_identifier,
                                                     Installation.state.in_((InstallState.INSTALLED,
                                                                             InstallState.PENDING)))).all()
        recorded = {ap.aid: ap for _row, ap in rows}
    visible = {ap.aid: ap for ap in db.scalars(scope.visible_aps(include_withdrawn=True))}
    aids = list(recorded) + [a for a in (on_card or []) if a not in SECURITY_DOMAINS and a not in recorded]
    for aid in aids:
        result.current = "ap"
        ap = recorded.get(aid) or visible.get(aid)
        name = f"{ap.name} ({aid})" if ap is not None else aid
        try:
            card.select(bytes.fromhex(aid))
        except CardStatusError as exc:
            if exc.sw == StatusWord.NOT_FOUND and aid in recorded:
                result.add("ap", Outcome.FAULT, "ap_missing", sw=exc.sw, name=name, aid=aid)
            else:
                result.status_error("ap", exc, name=name, aid=aid)
            continue
        if aid in recorded or on_card is None:
            result.add("ap", Outcome.OK, "ap_ok", name=name, aid=aid)
        else:
            result.add("ap", Outcome.INFO, "ap_not_recorded", name=name, aid=aid)
        if ap is not None and ap.ap_type == "A":
            try:
                left = card.pin_retries()
            except CardStatusError as exc:
                result.status_error("pin", exc, name=name, aid=aid)
                continue
            if left < 0:
                result.add("pin", Outcome.OK, "pin_verified", name=name, aid=aid)
            elif left == 0:  # 6983 (or 63C0): no tries left
                result.add("pin", Outcome.FAULT, "pin_blocked", sw=StatusWord.PIN_BLOCKED, name=name, aid=aid)
            else:
                result.add("pin", Outcome.OK, "pin_left", name=name, aid=aid, n=left)


def _free_step(scope: TenantScope, result: Run, card: GlobalPlatformCardSession, area: str) -> None:
    result.current = "free"
    try:
        space = card.free_space(CardArea(area))
    except CardStatusError as exc:
        if exc.sw == StatusWord.NOT_FOUND and area == Area.REGIONAL.value:
            result.add("free", Outcome.INFO, "area_absent", area=area)
            return
        result.status_error("free", exc, area=area)
        return
    sizes = [ap.size_bytes for ap in scope.session.scalars(scope.visible_aps(loadable=True)) if ap.area == area]
    if sizes and min(sizes) > space.free_bytes:
        result.add("free", Outcome.WARNING, "free_short", sw=StatusWord.NOT_ENOUGH_MEMORY, area=area,
                   free=space.free_bytes, apps=space.installed_apps)
    else:
        result.add("free", Outcome.OK, "free", area=area, free=space.free_bytes, apps=space.installed_apps)


def _status_feed(scope: TenantScope, result: Run, card_identifier: str) -> None:
    """The card status feed's view of the card, through the STATUS_FEED_HOOK slot (empty until it exists)."""
    hook: StatusFeed | None = current_app.extensions.get(STATUS_FEED_HOOK)
    state = hook(scope, card_identifier) if hook is not None else None
    if state is None:
        result.add("status_feed", Outcome.INFO, "feed_unavailable")
        return
    status, as_of, stale = str(state.get("status", "")), str(state.get("as_of", "")), bool(state.get("stale"))
    bad = status not in ("", "active")
    if status == "stopped":  # a 即時停止 in force is live, whatever the feed's age
        code = "feed_stopped_stale" if stale else "feed_stopped"
    else:
        code = "feed_stale" if stale else "feed"
    result.add("status_feed", Outcome.WARNING if bad or stale else Outcome.OK, code, status=status, as_of=as_of)


def _recent(scope: TenantScope, result: Run, card_identifier: str) -> None:
    entries = recent_operations(scope, card_identifier)
    if not entries:
        result.add("recent", Outcome.INFO, "recent_none")
        return
    result.add("recent", Outcome.INFO, "recent", count=len(entries),
               entries=[{"at": e.at.isoformat(timespec="seconds"), "action": e.action, "target": e.target,
                         "sw": str(e.detail.get("sw", ""))} for e in entries])


def recent_operations(scope: TenantScope, card_identifier: str, limit: int = RECENT_OPERATIONS) -> list[OperationLog]:
    """This tenant's newest operation log entries about the card (its target or the card in the detail), other
    than the diagnoses themselves (their history is the diagnosis list)."""
    query = scope.select(OperationLog).where(or_(OperationLog.target == f"card:{card_identifier}",
                                                 OperationLog.detail["card"].as_string() == card_identifier),
                                             OperationLog.action != oplog.Action.CARD_DIAGNOSED.value)
    return list(scope.session.scalars(query.order_by(OperationLog.id.desc()).limit(limit)))


def history(scope: TenantScope, *, card: str = "", terminal: str = "", limit: int = 50) -> list[Diagnosis]:
    """This tenant's diagnoses, newest first, of one card and/or one terminal."""
    query = scope.select(Diagnosis)
    if card:
        query = query.where(Diagnosis.card_identifier == card)
    if terminal:
        query = query.where(Diagnosis.terminal == terminal)
    return list(scope.session.scalars(query.order_by(Diagnosis.id.desc()).limit(limit)))
