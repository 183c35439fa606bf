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
                                               ("4010108", date(1989, 1, 8)), ("5060401", date(2024, 4, 1)),
                                               ("３６１０６０２", date(1986, 6, 2)),  # full-width, from an IME
                                               ("１９８６－０６－０２", date(1986, 6, 2))])
def test_birth_dates_in_iso_and_era_code_forms(raw: str, expected: date) -> None:
    assert parse_birth_date(raw) == expected


@pytest.mark.parametrize("raw", ["1986-13-01", "3611302", "6010101", "86-06-02", "", "３６１０６０２Ｘ"])
def test_bad_birth_dates_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        parse_birth_date(raw)


TODAY = date(2026, 11, 30)


@pytest.mark.parametrize(("raw", "expected"), [
    ("1450729", date(1912, 7, 29)), ("2010730", date(1912, 7, 30)), ("2151224", date(1926, 12, 24)),
    ("3011225", date(1926, 12, 25)), ("3640107", date(1989, 1, 7)), ("4310430", date(2019, 4, 30)),
    ("5010501", date(2019, 5, 1)), ("5081130", TODAY), ("1868-01-25", date(1868, 1, 25)), ("2026-11-30", TODAY)])
def test_birth_dates_at_the_edges_of_each_era(raw: str, expected: date) -> None:
    assert parse_birth_date(raw, today=TODAY) == expected


@pytest.mark.parametrize(("raw", "message"), [
    ("3000602", "昭和00年はありません"), ("5000101", "令和00年はありません"),
    ("3650101", "昭和は64年まで"), ("4320101", "平成は31年まで"), ("2160101", "大正は15年まで"),
    ("1460101", "明治は45年まで"),
    ("5010101", "2019-01-01は令和の期間外です（令和は2019-05-01から）"), ("4310501", "2019-05-01は平成の期間外です"),
    ("3640108", "1989-01-08は昭和の期間外です"), ("3011224", "1926-12-24は昭和の期間外です"),
    ("2010729", "1912-07-29は大正の期間外です"), ("1010124", "1868-01-24は明治の期間外です"),
    ("5081201", "未来の日付"), ("5990101", "未来の日付"), ("2026-12-01", "未来の日付"),
    ("1868-01-24", "1868-01-25（明治元年）以降"), ("1800-01-01", "以降の日付"), ("3610231", "存在しない日付"),
    ("1986-02-30", "存在しない日付"), ("0010101", "YYYY-MM-DD")])
def test_birth_dates_outside_their_era_or_in_the_future_are_refused(raw: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_birth_date(raw, today=TODAY)
    assert message in str(refused.value)


def test_today_is_japans_today() -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    tomorrow = datetime.now(ZoneInfo("Asia/Tokyo")).date() + timedelta(days=1)
    with pytest.raises(InvalidInput):
        parse_birth_date(tomorrow.isoformat())
    assert parse_birth_date((tomorrow - timedelta(days=1)).isoformat()) == tomorrow - timedelta(days=1)
