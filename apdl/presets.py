"""プリセット: a tenant's named AP sets; the one marked 自動搭載 is loaded without the selection screen."""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import update

from apdl import oplog, validation
from apdl.errors import Conflict, InvalidInput
from apdl.models import Preset
from apdl.tenancy import Operator, TenantScope


def presets(scope: TenantScope) -> list[Preset]:
    """The tenant's presets."""
    return list(scope.session.scalars(scope.select(Preset).order_by(Preset.name)))


def auto_preset(scope: TenantScope) -> Preset | None:
    """The tenant's automatic preset, if any."""
    return scope.session.scalars(scope.select(Preset).where(Preset.auto_load.is_(True))).first()


def save(scope: TenantScope, *, name: str, ap_ids: list[int], auto_load: bool, operator: Operator) -> Preset:
    """Create a preset of APs this tenant may load; marking it automatic unmarks any other."""
    name = validation.text({"name": name}, "name", _("プリセット名"), max_length=100)
    if not ap_ids:
        raise InvalidInput(_("カードAPを選択してください。"))
    aps = [scope.ap_or_404(ap_id) for ap_id in dict.fromkeys(ap_ids)]
    if any(p.name == name for p in presets(scope)):
        raise Conflict(_("同じ名前のプリセットがあります。"))
    if auto_load:
        scope.session.execute(update(Preset).where(Preset.tenant_code == scope.tenant_code).values(auto_load=False))
    preset = Preset(tenant_code=scope.tenant_code, name=name, auto_load=auto_load, card_ap_ids=[a.id for a in aps])
    scope.session.add(preset)
    scope.session.flush()
    oplog.record(scope.session, tenant_code=scope.tenant_code, actor=operator.actor,
                 action=oplog.Action.PRESET_SAVED, target=f"preset:{preset.id}",
                 detail={"name": name, "aps": [a.aid for a in aps], "auto_load": auto_load})
    return preset


def remove(scope: TenantScope, preset: Preset, *, operator: Operator) -> None:
    """Delete a preset."""
    scope.session.delete(preset)
    oplog.record(scope.session, tenant_code=scope.tenant_code, actor=operator.actor,
                 action=oplog.Action.PRESET_REMOVED, target=f"preset:{preset.id}", detail={"name": preset.name})
