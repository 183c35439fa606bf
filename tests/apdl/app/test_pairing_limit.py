"""端末の組付け: an 8-digit code cannot be found by trying — after a few wrong codes the operator is refused
for a while (429), and every wrong code is in the operation log."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from apdl import db
from apdl.models import OperationLog
from apdl.terminals import PAIRING_MAX_FAILURES
from tests.apdl.app.conftest import Opauth, login, submit


def test_wrong_pairing_codes_are_limited_per_operator(opauth: Opauth, apdl_app: Flask) -> None:
    guesser = login(opauth, apdl_app, "kita")
    for attempt in range(PAIRING_MAX_FAILURES):
        wrong = submit(guesser, "/terminal", "/terminal", {"code": f"{attempt:08d}"})
        assert wrong.status_code == 400, wrong.get_data(as_text=True)[-300:]
    refused = submit(guesser, "/terminal", "/terminal", {"code": "12345678"})
    assert refused.status_code == 429 and "しばらく組付けできません" in refused.get_data(as_text=True)
    other = login(opauth, apdl_app, "minami")  # another operator is not affected
    assert submit(other, "/terminal", "/terminal", {"code": "00000000"}).status_code == 400
    with apdl_app.app_context():
        refusals = [e for e in db.get_session().scalars(select(OperationLog)) if e.target == "terminal"]
    assert [e.tenant_code for e in refusals] == ["kitaedo"] * (PAIRING_MAX_FAILURES + 1) + ["minamiedo"]
    assert refusals[PAIRING_MAX_FAILURES].detail == {"reason": "too many wrong pairing codes"}
