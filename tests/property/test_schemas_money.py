"""Properties of the exact money arithmetic."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from schemas import Money, allocate, bps_of, format_money

amounts = st.integers(min_value=-(10**15), max_value=10**15)
weights = st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=30).filter(
    lambda ws: sum(ws) > 0
)


@given(amounts, weights)
def test_allocation_parts_sum_to_the_whole(total: int, ws: list[int]) -> None:
    assert sum(allocate(total, ws)) == total


@given(st.integers(min_value=0, max_value=10**15), weights)
def test_allocation_parts_are_never_negative(total: int, ws: list[int]) -> None:
    assert all(part >= 0 for part in allocate(total, ws))


@given(amounts, weights)
def test_allocation_is_deterministic(total: int, ws: list[int]) -> None:
    assert allocate(total, ws) == allocate(total, list(ws))


@given(amounts, weights)
def test_each_part_is_within_one_unit_of_its_exact_share(total: int, ws: list[int]) -> None:
    weight_sum = sum(ws)
    for part, w in zip(allocate(total, ws), ws, strict=True):
        assert abs(part - Fraction(total * w, weight_sum)) < 1


@given(amounts, weights)
def test_zero_weights_get_nothing(total: int, ws: list[int]) -> None:
    for part, w in zip(allocate(total, ws), ws, strict=True):
        if w == 0:
            assert part == 0


@given(amounts, st.integers(min_value=0, max_value=10_000))
def test_bps_of_is_the_exact_share_rounded_half_up(amount: int, bps: int) -> None:
    exact = Fraction(abs(amount) * bps, 10_000)
    rounded = bps_of(abs(amount), bps)
    assert -Fraction(1, 2) < rounded - exact <= Fraction(1, 2)
    assert bps_of(-amount, bps) == -bps_of(amount, bps)


@given(amounts, st.sampled_from(["EUR", "JPY", "KWD", "USD", "TND"]))
def test_formatted_money_parses_back(amount: int, currency: str) -> None:
    money = Money(amount_minor=amount, currency=currency)
    assert Money.parse(format_money(money).split(" ")[0].replace(",", ""), currency) == money
