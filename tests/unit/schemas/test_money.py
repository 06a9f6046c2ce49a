"""Money: ISO 4217 validation, human formatting, exact bps rounding and allocation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import (
    CURRENCY_EXPONENTS,
    FeeSchedule,
    Money,
    allocate,
    bps_of,
    currency_exponent,
    format_money,
)

REQUIRED = {
    "EUR", "BGN", "CZK", "DKK", "HUF", "PLN", "RON", "SEK", "GBP", "USD", "CHF", "JPY",
    "CAD", "AUD", "BRL", "KRW", "ISK", "CLP", "XOF", "KWD", "BHD", "TND", "JOD", "OMR",
}  # fmt: skip


def test_table_covers_required_currencies() -> None:
    assert set(CURRENCY_EXPONENTS) >= REQUIRED


@pytest.mark.parametrize(
    ("code", "exponent"), [("EUR", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("TND", 3), ("GBP", 2)]
)
def test_exponents_follow_iso_4217(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


def test_unknown_currency_error_names_the_code() -> None:
    with pytest.raises(ValidationError, match="unknown currency code 'XYZ'"):
        Money(amount_minor=100, currency="XYZ")


def test_lowercase_currency_is_rejected() -> None:
    with pytest.raises(ValidationError, match="'eur'"):
        Money(amount_minor=100, currency="eur")


@pytest.mark.parametrize("amount", [1.5, 100.0, "100", True])
def test_amount_must_be_an_integer(amount: object) -> None:
    with pytest.raises(ValidationError):
        Money(amount_minor=amount, currency="EUR")  # type: ignore[arg-type]


def test_money_is_frozen() -> None:
    money = Money(amount_minor=1, currency="EUR")
    with pytest.raises(ValidationError):
        money.amount_minor = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (123456, "EUR", "1,234.56 EUR"),
        (5, "EUR", "0.05 EUR"),
        (-1999, "USD", "-19.99 USD"),
        (1500000, "JPY", "1,500,000 JPY"),
        (1234, "KWD", "1.234 KWD"),
        (0, "TND", "0.000 TND"),
    ],
)
def test_format_money_uses_the_currency_exponent(minor: int, currency: str, text: str) -> None:
    assert format_money(Money(amount_minor=minor, currency=currency)) == text


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("12.50", "EUR", 1250), ("12.5", "EUR", 1250), ("7", "JPY", 7), ("1.005", "KWD", 1005)],
)
def test_parse_decimal_text_exactly(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency) == Money(amount_minor=minor, currency=currency)


def test_parse_refuses_more_decimals_than_the_currency_has() -> None:
    with pytest.raises(ValueError, match="more than 0 decimals for JPY"):
        Money.parse("1.5", "JPY")


def test_adding_different_currencies_is_an_error() -> None:
    with pytest.raises(ValueError, match="currency mismatch"):
        _ = Money(amount_minor=1, currency="EUR") + Money(amount_minor=1, currency="USD")


def test_same_currency_arithmetic() -> None:
    a, b = Money(amount_minor=150, currency="EUR"), Money(amount_minor=50, currency="EUR")
    assert a + b == Money(amount_minor=200, currency="EUR")
    assert a - b == Money(amount_minor=100, currency="EUR")
    assert -a == Money(amount_minor=-150, currency="EUR")


@pytest.mark.parametrize(
    ("amount", "bps", "expected"),
    [
        (1000, 300, 30),  # exact
        (50, 100, 1),  # 0.5 rounds half up
        (49, 100, 0),  # 0.49 rounds down
        (150, 100, 2),  # 1.5 rounds half up
        (-50, 100, -1),  # ties away from zero: mirrors the positive amount
        (12345, 0, 0),
        (12345, 10000, 12345),
    ],
)
def test_bps_of_rounds_half_up(amount: int, bps: int, expected: int) -> None:
    assert bps_of(amount, bps) == expected


def test_bps_of_refuses_floats() -> None:
    with pytest.raises(TypeError):
        bps_of(100.0, 300)  # type: ignore[arg-type]


def test_allocate_gives_leftover_to_largest_remainders_then_lowest_index() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(10, [3, 3, 4]) == [3, 3, 4]
    assert allocate(5, [1, 2]) == [2, 3]  # remainders 2/3 and 1/3 of a unit
    assert allocate(1, [0, 5, 5]) == [0, 1, 0]


def test_allocate_negative_total_mirrors_positive() -> None:
    assert allocate(-100, [1, 1, 1]) == [-34, -33, -33]


def test_allocate_needs_a_positive_weight() -> None:
    with pytest.raises(ValueError, match="positive weight"):
        allocate(10, [0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        allocate(10, [1, -1])


def test_default_fee_schedule_is_kickstarter_like() -> None:
    fees = FeeSchedule()
    assert fees.fee_for(10_000) == 300 + 20  # 3 % + 0.20 on 100.00
    assert fees.fee_for(999) == 50 + 5  # under 10.00: 5 % + 0.05 (49.95 rounds half up)
    assert fees.fee_for(1_000) == 30 + 20  # the threshold itself uses the normal rate


def test_fee_schedule_scales_to_the_currency_exponent() -> None:
    assert FeeSchedule.kickstarter_default("EUR") == FeeSchedule()
    kwd = FeeSchedule.kickstarter_default("KWD")
    assert (kwd.fixed_minor, kwd.small_pledge_threshold_minor, kwd.small_fixed_minor) == (
        200, 10_000, 50,
    )  # fmt: skip
    jpy = FeeSchedule.kickstarter_default("JPY")
    assert (jpy.fixed_minor, jpy.small_pledge_threshold_minor) == (0, 10)
