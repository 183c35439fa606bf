"""Pure rules of the module: 全国地方公共団体コード check digit, area rights, 個人番号 detection, 生年月日 forms."""

from __future__ import annotations

from datetime import date

import pytest

from apdl.areas import may_use_area, municipality_code_valid
from apdl.errors import InvalidInput
from apdl.models import Area, TenantKind, TenantProfile
from apdl.residents import is_my_number, parse_birth_date


@pytest.mark.parametrize("code", ["131016", "011002", "010006", "271004"])
def test_published_municipality_codes_pass_the_check_digit(code: str) -> None:
    assert municipality_code_valid(code)


@pytest.mark.parametrize("code", ["131017", "01100", "0110021", "13101a", ""])
def test_wrong_check_digits_and_shapes_are_refused(code: str) -> None:
    assert not municipality_code_valid(code)


def test_only_the_residence_municipality_may_use_the_regional_area() -> None:
    home = TenantProfile(tenant_code="a", kind=TenantKind.MUNICIPALITY, municipality_code="131016")
    elsewhere = TenantProfile(tenant_code="b", kind=TenantKind.MUNICIPALITY, municipality_code="011002")
    prefecture = TenantProfile(tenant_code="c", kind=TenantKind.PREFECTURE, municipality_code="131016")
    assert may_use_area(home, Area.REGIONAL, residence_code="131016")
    assert not may_use_area(elsewhere, Area.REGIONAL, residence_code="131016")
    assert not may_use_area(prefecture, Area.REGIONAL, residence_code="131016")
    assert not may_use_area(None, Area.REGIONAL, residence_code="131016")
    assert all(may_use_area(p, Area.EXTENDED, residence_code="131016") for p in (home, elsewhere, prefecture, None))


def test_a_valid_individual_number_is_recognised_anywhere_in_a_text() -> None:
    assert is_my_number("123456789018") and is_my_number("番号は１２３４５６７８９０１８です")
    assert not is_my_number("123456789012") and not is_my_number("1234567890183") and not is_my_number("03-1234")


@pytest.mark.parametrize(("raw", "expected"), [("1986-06-02", date(1986, 6, 2)), ("3610602", date(1986, 6, 2)),
                                               ("4010108", date(1989, 1, 8)), ("5060401", date(2024, 4, 1))])
def test_birth_dates_in_iso_and_era_code_forms(raw: str, expected: date) -> None:
    assert parse_birth_date(raw) == expected


@pytest.mark.parametrize("raw", ["1986-13-01", "3611302", "6010101", "86-06-02", "", "３６１０６０２"])
def test_bad_birth_dates_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        parse_birth_date(raw)
