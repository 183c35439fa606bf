"""Area rules: who may create the regional area and load or delete regional APs.

Only a 市町村 whose 全国地方公共団体コード (check digit verified) equals the card's residence municipality
code may touch the regional area (地域住民向け領域); prefectures and voluntary organisations never. Any
tenant the AP is available to may use the extended area (拡張利用領域).
"""

from __future__ import annotations

import re

from apdl.models import Area, TenantKind, TenantProfile

WEIGHTS = (6, 5, 4, 3, 2)


def municipality_code_valid(code: str) -> bool:
    """6 digits whose last is the check digit: last digit of 11 − (Σ digit×weight mod 11), weights 6,5,4,3,2."""
    if not re.fullmatch(r"[0-9]{6}", code):
        return False
    remainder = sum(int(d) * w for d, w in zip(code[:5], WEIGHTS, strict=True)) % 11
    return (11 - remainder) % 10 == int(code[5])


def may_use_area(profile: TenantProfile | None, area: Area, *, residence_code: str) -> bool:
    """Whether a tenant with ``profile`` may change ``area`` on a card whose holder lives in ``residence_code``."""
    if area is Area.EXTENDED:
        return True
    return (profile is not None and profile.kind == TenantKind.MUNICIPALITY
            and municipality_code_valid(profile.municipality_code)
            and profile.municipality_code == residence_code)
