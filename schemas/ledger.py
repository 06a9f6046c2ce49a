"""The settlement ledger's chart of accounts and the double-entry lines each money event posts.

One campaign's ledger, in its currency, minor units. The lines of an event are a pure function
of its amounts, so the writer, the upcasters of older events (which carried none) and every
reader agree on them:

* ``PledgeCaptured(amount A, fee F)``: Dr ``backer_funds`` A; Cr ``payment_fees`` F;
  Cr ``creator_payable`` A - F (the processor keeps its fee, the rest is owed to the creator).
* ``PledgeRefunded(amount R, fee_refunded Fr)``: Cr ``backer_funds`` R; Dr ``payment_fees`` Fr;
  Dr ``creator_payable`` R - Fr (``Fr`` is the part of the fee the campaign no longer bears:
  all of it when the campaign failed or the pledge was cancelled, none after a funded
  campaign's capture - see ``docs/settlement.md``).
* ``CampaignSettled(commission C)``: Dr ``creator_payable`` C; Cr ``platform_revenue`` C.

So at any point ``backer_funds`` (debit balance) is what was collected net of refunds,
``payment_fees`` the fees charged, ``platform_revenue`` the commission and ``creator_payable``
the payout (credit balances); debits equal credits on every event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

__all__ = [
    "LEDGER_ACCOUNTS",
    "LedgerAccount",
    "LedgerLine",
    "balances",
    "capture_lines",
    "check_balanced",
    "refund_lines",
    "settled_lines",
]

LedgerAccount = Literal["backer_funds", "payment_fees", "platform_revenue", "creator_payable"]
#: Every account, in the order statements print them.
LEDGER_ACCOUNTS: tuple[LedgerAccount, ...] = (
    "backer_funds",
    "payment_fees",
    "platform_revenue",
    "creator_payable",
)

_Minor = Annotated[StrictInt, Field(ge=0)]


class LedgerLine(BaseModel):
    """One posting: a debit or a credit (exactly one of the two is positive) to an account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account: LedgerAccount
    debit_minor: _Minor = 0
    credit_minor: _Minor = 0

    @model_validator(mode="after")
    def _one_side(self) -> LedgerLine:
        if (self.debit_minor > 0) == (self.credit_minor > 0):
            raise ValueError("a ledger line is either a debit or a credit, and not zero")
        return self


def _lines(*postings: tuple[LedgerAccount, int, int]) -> tuple[LedgerLine, ...]:
    # Zero postings are left out (a zero fee, a zero commission): a line always moves money.
    return tuple(
        LedgerLine(account=account, debit_minor=debit, credit_minor=credit)
        for account, debit, credit in postings
        if debit or credit
    )


def capture_lines(amount_minor: int, fee_minor: int) -> tuple[LedgerLine, ...]:
    """The lines of a capture of ``amount_minor`` that cost ``fee_minor``."""
    if not 0 <= fee_minor <= amount_minor:
        raise ValueError(f"fee {fee_minor} must be between 0 and the amount {amount_minor}")
    return _lines(
        ("backer_funds", amount_minor, 0),
        ("payment_fees", 0, fee_minor),
        ("creator_payable", 0, amount_minor - fee_minor),
    )


def refund_lines(amount_minor: int, fee_refunded_minor: int) -> tuple[LedgerLine, ...]:
    """The lines of a refund of ``amount_minor`` that hands ``fee_refunded_minor`` of the fee
    back to the campaign."""
    if not 0 <= fee_refunded_minor <= amount_minor:
        raise ValueError(
            f"fee_refunded {fee_refunded_minor} must be between 0 and the amount {amount_minor}"
        )
    return _lines(
        ("payment_fees", fee_refunded_minor, 0),
        ("creator_payable", amount_minor - fee_refunded_minor, 0),
        ("backer_funds", 0, amount_minor),
    )


def settled_lines(commission_minor: int) -> tuple[LedgerLine, ...]:
    """The lines of a settlement: the commission moves from the creator to the platform."""
    if commission_minor < 0:
        raise ValueError(f"commission must be >= 0, got {commission_minor}")
    return _lines(
        ("creator_payable", commission_minor, 0),
        ("platform_revenue", 0, commission_minor),
    )


def check_balanced(lines: Iterable[LedgerLine]) -> None:
    """ValueError unless the lines' debits equal their credits."""
    debits = credits = 0
    for line in lines:
        debits += line.debit_minor
        credits += line.credit_minor
    if debits != credits:
        raise ValueError(f"ledger lines do not balance: debits {debits} != credits {credits}")


def balances(lines: Iterable[LedgerLine]) -> dict[LedgerAccount, tuple[int, int]]:
    """``account -> (debits, credits)`` summed over ``lines``, every account present."""
    totals: dict[LedgerAccount, tuple[int, int]] = {a: (0, 0) for a in LEDGER_ACCOUNTS}
    for line in lines:
        debit, credit = totals[line.account]
        totals[line.account] = (debit + line.debit_minor, credit + line.credit_minor)
    return totals
