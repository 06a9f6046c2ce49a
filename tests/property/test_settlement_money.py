"""Properties of settlement money: rounding in 0-, 2- and 3-decimal currencies, every
settlement balances and passes the auditor's rules, revenue shares sum exactly."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import encode
from schemas.events import PledgeCaptured, PledgeRefunded
from schemas.money import FeeSchedule, allocate, bps_of
from schemas.settlement_commands import ReportRevenue
from services.audit.engine import PartitionAuditor
from services.settlement.adapters.memory_gateway import MemoryGateway
from services.settlement.domain import Policy
from tests.support.settlement import T0, CampaignBook, settle

CURRENCIES = st.sampled_from(["JPY", "EUR", "TND"])
TOKENS = st.sampled_from(["tok_ok", None, "tok_declined", "tok_fail_once", "tok_slow"])

campaigns = st.fixed_dictionaries(
    {
        "currency": CURRENCIES,
        "mode": st.sampled_from(["authorize_then_capture", "charge_then_refund"]),
        "funding": st.sampled_from(["all_or_nothing", "keep_it_all"]),
        "commission_bps": st.integers(0, 2_000),
        "pledges": st.lists(
            st.tuples(st.integers(1, 5_000_000), TOKENS, st.booleans()), min_size=0, max_size=25
        ),
        "goal_minor": st.integers(1, 40_000_000),
        "cancel_campaign": st.booleans(),
    }
)


def run(spec: dict) -> CampaignBook:  # type: ignore[type-arg]
    book = CampaignBook(
        currency=spec["currency"], settlement_mode=spec["mode"], funding_model=spec["funding"],
        commission_bps=spec["commission_bps"], goal_minor=spec["goal_minor"],
    ).launch()  # fmt: skip
    gateway = MemoryGateway()
    for i, (amount, token, cancel) in enumerate(spec["pledges"]):
        book.pledge(f"p{i}", amount, token)
        if cancel:
            settle(book, gateway)  # charge (or verify) before the cancellation
            book.cancel(f"p{i}")
    active = [p for p in book.state.pledges.values() if not p.cancelled]
    total = sum(p.amount_minor for p in active)
    if spec["cancel_campaign"]:
        outcome = "cancelled"
    elif total >= spec["goal_minor"] or (spec["funding"] == "keep_it_all" and active):
        outcome = "funded"
    else:
        outcome = "failed"
    book.close(outcome)  # type: ignore[arg-type]
    settle(book, gateway)
    assert max(gateway.collected.values(), default=0) <= 1  # never two captures of a pledge
    return book


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(campaigns)
def test_every_settlement_balances_and_passes_the_audit(spec: dict) -> None:  # type: ignore[type-arg]
    book = run(spec)
    state = book.state
    settled = state.settled
    assert settled is not None
    gross, commission, fees = (
        settled.gross.amount_minor, settled.commission.amount_minor, settled.fees.amount_minor
    )  # fmt: skip
    assert settled.payout.amount_minor == gross - commission - fees
    assert commission == bps_of(gross, spec["commission_bps"])
    debits = sum(d for d, _ in state.ledger.values())
    credits = sum(c for _, c in state.ledger.values())
    assert debits == credits
    assert state.balance("backer_funds") == gross
    assert state.balance("payment_fees") == fees
    assert state.balance("platform_revenue") == commission
    assert state.balance("creator_payable") == settled.payout.amount_minor
    captured = [e.payload for e in book.log if isinstance(e.payload, PledgeCaptured)]
    refunded = [e.payload for e in book.log if isinstance(e.payload, PledgeRefunded)]
    assert gross == sum(c.amount.amount_minor for c in captured) - sum(
        r.amount.amount_minor for r in refunded
    )
    if settled.outcome != "funded":
        assert gross == fees == commission == 0
    auditor = PartitionAuditor(0)
    auditor.feed([encode(e) for e in book.log], 0)
    assert [(f.rule, f.detail) for f in auditor.finish().findings] == []


@given(CURRENCIES, st.integers(0, 10**12))
def test_a_fee_is_the_schedule_rate_rounded_half_up_plus_the_fixed_part(
    currency: str, amount: int
) -> None:
    schedule = FeeSchedule.kickstarter_default(currency)
    fee = schedule.fee_for(amount)
    small = (
        schedule.small_pledge_threshold_minor is not None
        and amount < schedule.small_pledge_threshold_minor
    )
    rate = schedule.small_percent_bps if small else schedule.percent_bps
    fixed = schedule.small_fixed_minor if small else schedule.fixed_minor
    # Half up: the rounded percentage is within half a minor unit of the exact one.
    assert abs((fee - fixed) * 10_000 - amount * rate) <= 5_000
    assert (fee - fixed) * 10_000 - amount * rate != -5_000


@given(st.integers(0, 10**15), st.integers(0, 10_000))
def test_commission_rounds_half_up_and_a_refund_mirrors_it(gross: int, bps: int) -> None:
    commission = bps_of(gross, bps)
    assert -5_000 < commission * 10_000 - gross * bps <= 5_000
    assert bps_of(-gross, bps) == -commission


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**9), min_size=1, max_size=60))
def test_largest_remainder_shares_sum_exactly_and_stay_within_a_unit(
    total: int, weights: list[int]
) -> None:
    if sum(weights) == 0:
        weights = [*weights, 1]
    parts = allocate(total, weights)
    assert sum(parts) == total
    for part, weight in zip(parts, weights, strict=True):
        exact_times_sum = total * weight
        assert abs(part * sum(weights) - exact_times_sum) < sum(weights)


@settings(max_examples=50, deadline=None)
@given(CURRENCIES, st.integers(0, 10**11), st.lists(st.integers(1, 10**7), min_size=1, max_size=30))
def test_revenue_reports_distribute_the_shared_amount_to_the_unit(
    currency: str, revenue: int, amounts: list[int]
) -> None:
    book = CampaignBook(currency=currency, coproduction=True, goal_minor=1).launch()
    for i, amount in enumerate(amounts):
        book.pledge(f"p{i}", amount)
    book.close("funded")
    settle(book, MemoryGateway(), T0, Policy())
    [event] = book.decide(
        ReportRevenue(
            command_id="rev", tenant_id="t", correlation_id="r", issued_at=T0,
            campaign_id="camp-1", period="2027-Q2", amount_minor=revenue, currency=currency,
        )
    )  # fmt: skip
    shares = event.shares  # type: ignore[attr-defined]
    assert sum(s.amount_minor for s in shares) == bps_of(revenue, 1_000)
    assert [s.amount_minor for s in shares] == allocate(bps_of(revenue, 1_000), amounts)
