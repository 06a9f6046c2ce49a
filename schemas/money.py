"""Money as integer minor units plus an ISO 4217 code, and the exact arithmetic on it.

Floats never appear: amounts are ``int`` minor units (cents, yen, fils) and every rounding is
an explicit, documented integer rule so that ledgers balance to the unit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

__all__ = [
    "CURRENCY_EXPONENTS",
    "BasisPoints",
    "FeeSchedule",
    "Money",
    "allocate",
    "bps_of",
    "currency_exponent",
    "format_money",
]

#: ISO 4217 minor-unit exponents. Covers the EU (euro area + BGN, CZK, DKK, HUF, PLN, RON, SEK),
#: UK, US, CH, JP, CA, AU, BR, other common platform currencies, and the 0- and 3-decimal ones.
CURRENCY_EXPONENTS: dict[str, int] = {
    # 2 decimals
    "EUR": 2, "BGN": 2, "CZK": 2, "DKK": 2, "HUF": 2, "PLN": 2, "RON": 2, "SEK": 2,
    "GBP": 2, "USD": 2, "CHF": 2, "CAD": 2, "AUD": 2, "BRL": 2, "NOK": 2, "NZD": 2,
    "MXN": 2, "HKD": 2, "SGD": 2, "INR": 2, "CNY": 2, "ZAR": 2, "TRY": 2, "ILS": 2,
    "ARS": 2, "COP": 2, "PEN": 2, "MAD": 2, "EGP": 2, "NGN": 2, "KES": 2, "THB": 2,
    "MYR": 2, "PHP": 2, "IDR": 2, "TWD": 2, "UAH": 2, "RSD": 2, "AED": 2, "SAR": 2,
    # 0 decimals
    "JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "XOF": 0, "XAF": 0, "XPF": 0, "VND": 0,
    "PYG": 0, "UGX": 0, "RWF": 0, "KMF": 0, "GNF": 0, "DJF": 0, "VUV": 0, "BIF": 0,
    # 3 decimals
    "KWD": 3, "BHD": 3, "TND": 3, "JOD": 3, "OMR": 3, "IQD": 3, "LYD": 3,
}  # fmt: skip

BPS_DENOMINATOR = 10_000

#: A rate in basis points (1 bps = 0.01 %); 10 000 bps = 100 %.
BasisPoints = Annotated[StrictInt, Field(ge=0, le=BPS_DENOMINATOR)]


def currency_exponent(code: str) -> int:
    """Return the number of minor-unit decimals of ``code``; ValueError names an unknown code."""
    try:
        return CURRENCY_EXPONENTS[code]
    except KeyError:
        raise ValueError(
            f"unknown currency code {code!r}: not an ISO 4217 code supported by Pledgeflow"
        ) from None


class Money(BaseModel):
    """An exact amount: integer minor units of one ISO 4217 currency (never a float)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount_minor: StrictInt
    currency: str

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        currency_exponent(value)
        return value

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Zero in ``currency`` (start value for sums)."""
        return cls(amount_minor=0, currency=currency)

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Parse a decimal string such as ``"12.50"`` exactly; more decimals than the currency
        has is an error rather than a silent rounding."""
        exponent = currency_exponent(currency)
        match = re.fullmatch(r"(-?)(\d+)(?:\.(\d+))?", text.strip())
        if match is None:
            raise ValueError(f"amount {text!r} is not a decimal number")
        sign, whole, frac = match.group(1), match.group(2), match.group(3) or ""
        if len(frac) > exponent:
            raise ValueError(f"amount {text!r} has more than {exponent} decimals for {currency}")
        minor = int(whole) * 10**exponent + (int(frac.ljust(exponent, "0")) if exponent else 0)
        return cls(amount_minor=-minor if sign else minor, currency=currency)

    @property
    def exponent(self) -> int:
        """Minor-unit decimals of this amount's currency."""
        return CURRENCY_EXPONENTS[self.currency]

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} vs {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money.model_construct(
            amount_minor=self.amount_minor + other.amount_minor, currency=self.currency
        )

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money.model_construct(
            amount_minor=self.amount_minor - other.amount_minor, currency=self.currency
        )

    def __neg__(self) -> Money:
        return Money.model_construct(amount_minor=-self.amount_minor, currency=self.currency)

    def __str__(self) -> str:
        return format_money(self)


def format_money(money: Money) -> str:
    """Human form with a thousands separator and the currency's decimals: ``1,234.50 EUR``."""
    exponent = money.exponent
    sign = "-" if money.amount_minor < 0 else ""
    whole, frac = divmod(abs(money.amount_minor), 10**exponent)
    text = f"{whole:,}"
    if exponent:
        text += f".{frac:0{exponent}d}"
    return f"{sign}{text} {money.currency}"


def bps_of(amount_minor: int, bps: int) -> int:
    """``amount_minor * bps / 10 000`` in whole minor units.

    Rounding rule: round half up on the magnitude (ties away from zero), so a refund of a
    charge is exactly the negation of that charge's fee: ``bps_of(-a, r) == -bps_of(a, r)``.
    """
    if type(amount_minor) is not int or type(bps) is not int:
        raise TypeError("bps_of takes integers only (minor units and basis points)")
    if bps < 0:
        raise ValueError(f"bps must be >= 0, got {bps}")
    quotient, remainder = divmod(abs(amount_minor) * bps, BPS_DENOMINATOR)
    if 2 * remainder >= BPS_DENOMINATOR:
        quotient += 1
    return -quotient if amount_minor < 0 else quotient


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` into ``len(weights)`` integer parts proportional to ``weights``.

    Largest-remainder method: each part gets the floor of its exact share, then the leftover
    units go one each to the largest remainders, ties to the lower index. The parts always sum
    to ``total``, a zero weight always gets 0, and the result is deterministic. A negative
    total is allocated as the negation of the positive one (so refunds mirror payouts).
    """
    if type(total) is not int or any(type(w) is not int for w in weights):
        raise TypeError("allocate takes integers only (minor units and integer weights)")
    if any(w < 0 for w in weights):
        raise ValueError("allocation weights must be >= 0")
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("allocation needs at least one positive weight")
    if total < 0:
        return [-part for part in allocate(-total, weights)]
    shares = [divmod(total * w, weight_sum) for w in weights]
    parts = [floor for floor, _ in shares]
    leftover = total - sum(parts)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-shares[i][1], i))
    for i in by_remainder[:leftover]:
        parts[i] += 1
    return parts


class FeeSchedule(BaseModel):
    """Payment-processing fee per pledge: ``percent_bps`` of the amount plus ``fixed_minor``;
    pledges below ``small_pledge_threshold_minor`` use the ``small_*`` pair instead.

    The defaults are Kickstarter's published card fees for a 2-decimal currency (3 % + 0.20;
    under 10.00: 5 % + 0.05); use :meth:`kickstarter_default` for other exponents.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    percent_bps: BasisPoints = 300
    fixed_minor: Annotated[StrictInt, Field(ge=0)] = 20
    small_pledge_threshold_minor: Annotated[StrictInt, Field(ge=0)] | None = 1_000
    small_percent_bps: BasisPoints = 500
    small_fixed_minor: Annotated[StrictInt, Field(ge=0)] = 5

    @classmethod
    def kickstarter_default(cls, currency: str) -> Self:
        """The default schedule scaled to ``currency``'s exponent (half-up on the fixed parts)."""
        scale = 10 ** currency_exponent(currency)
        return cls(
            percent_bps=300,
            fixed_minor=(20 * scale + 50) // 100,
            small_pledge_threshold_minor=10 * scale,
            small_percent_bps=500,
            small_fixed_minor=(5 * scale + 50) // 100,
        )

    def fee_for(self, amount_minor: int) -> int:
        """Fee in minor units for one pledge of ``amount_minor`` (``bps_of`` rounding)."""
        threshold = self.small_pledge_threshold_minor
        if threshold is not None and amount_minor < threshold:
            return bps_of(amount_minor, self.small_percent_bps) + self.small_fixed_minor
        return bps_of(amount_minor, self.percent_bps) + self.fixed_minor
