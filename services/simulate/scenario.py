"""A launch-day crowd as data: campaigns, people and timed requests, from a seed.

Pure and deterministic: :func:`generate` draws everything from ``random.Random(seed)`` and
reads no clock (times are seconds after the simulation's start; the driver adds the start).
The run id only names things (campaign, pledge and backer ids, Idempotency-Keys), so two runs
of one seed against one stack do the same things without colliding, and the same seed and run
id give the same requests byte for byte.

What a crowd holds, and why:

* campaigns of every kind the product has (all-or-nothing and keep-it-all rewards, donation,
  coproduction; both settlement modes) in 0-, 2- and 3-decimal currencies, with reward tiers,
  some limited to a few slots so that launch-day surges sell them out;
* pledges arriving in a U over each campaign's life (surge at launch, surge near the deadline:
  an arcsine law), spread over campaigns by a heavy-tailed popularity;
* goals set from the pledges each campaign will receive, so some are funded and some fail;
* payment tokens that fail at capture (``tok_declined``, ``tok_fail_once``), client retries of
  a pledge with the same Idempotency-Key, cancellations, and a share of invalid requests;
* every sixth campaign called off by its creator before its deadline (the others close at
  their deadline, by the processor's timer).

Kept as one module (just over 400 lines): every part draws from the one seeded generator in a
fixed order, and splitting it would hide that order, on which "same seed, same requests" rests.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.money import currency_exponent

__all__ = [
    "Action",
    "CampaignPlan",
    "CancelAction",
    "CloseAction",
    "InvalidAction",
    "Person",
    "PledgeAction",
    "Scenario",
    "TierPlan",
    "generate",
]

#: (kind, funding model, settlement mode), cycled so a few campaigns cover every kind.
KINDS: tuple[tuple[str, str, str], ...] = (
    ("reward", "all_or_nothing", "authorize_then_capture"),
    ("donation", "keep_it_all", "charge_then_refund"),
    ("coproduction", "all_or_nothing", "charge_then_refund"),
    ("reward", "keep_it_all", "authorize_then_capture"),
    ("reward", "all_or_nothing", "charge_then_refund"),
)
#: Currencies cycled with the kinds (0, 2 and 3 decimals), and a typical pledge in major units.
CURRENCIES: tuple[tuple[str, float], ...] = (("EUR", 30.0), ("JPY", 4000.0), ("KWD", 9.0))
#: Goal as a multiple of what the campaign will receive (below 1: likely funded), cycled with
#: the kinds so that every run of 3 campaigns or more has all-or-nothing ones on both sides.
GOAL_FACTORS = (0.6, 0.8, 2.0, 1.5)
TITLES = (
    "Jazz album", "Board game", "Documentary", "Solar lamp", "Comic book", "Bakery",
    "Theatre tour", "Bike light", "Poetry press", "Community garden", "Indie film", "Synth",
)  # fmt: skip

#: Every CALLED_OFF-th campaign (the 6th, 12th, ...) is called off by its creator at
#: ``CALLED_OFF_AT`` of its life; the others close at their deadline (the processor's timer).
CALLED_OFF = 6
CALLED_OFF_AT = 0.6
MAX_BACKERS = 5_000
#: Shares of the crowd's behaviours. Retries and cancellations come every 20th pledge (5 %),
#: at fixed places, so that even a short run has some.
DECLINED_SHARE = 0.03
FAIL_ONCE_SHARE = 0.03
EVERY = 20
RETRY_AT = 3
CANCEL_AT = 11
INVALID_SHARE = 0.04
Expect = Literal["invalid", "not_found", "refused"]
#: Invalid requests: the flaw and what the API does with it.
FLAWS: tuple[tuple[str, Expect], ...] = (
    ("float_amount", "invalid"),
    ("zero_amount", "invalid"),
    ("unknown_currency", "invalid"),
    ("unknown_campaign", "not_found"),
    ("currency_mismatch", "refused"),
    ("unknown_tier", "refused"),
)


@dataclass(frozen=True, slots=True)
class TierPlan:
    tier_id: str
    title: str
    min_amount_minor: int
    quantity_limit: int | None


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    """One campaign's terms; ``deadline_after`` is seconds after the start."""

    campaign_id: str
    title: str
    creator_id: str
    kind: str
    funding_model: str
    settlement_mode: str
    currency: str
    goal_minor: int
    deadline_after: float
    tiers: tuple[TierPlan, ...]
    revenue_share_bps: int | None = None

    def launch_body(self, deadline_iso: str) -> dict[str, Any]:
        """The ``POST /v1/campaigns`` body, given the deadline as RFC 3339."""
        body: dict[str, Any] = {
            "campaign_id": self.campaign_id,
            "title": self.title,
            "creator_id": self.creator_id,
            "goal": {"amount_minor": self.goal_minor, "currency": self.currency},
            "deadline": deadline_iso,
            "funding_model": self.funding_model,
            "settlement_mode": self.settlement_mode,
            "kind": self.kind,
            "tiers": [
                {
                    "tier_id": t.tier_id,
                    "title": t.title,
                    "min_amount_minor": t.min_amount_minor,
                    **({"quantity_limit": t.quantity_limit} if t.quantity_limit else {}),
                }
                for t in self.tiers
            ],
        }
        if self.revenue_share_bps is not None:
            body["revenue_share"] = {"share_bps": self.revenue_share_bps, "duration_months": 24}
        return body


@dataclass(frozen=True, slots=True)
class Person:
    """A backer or a creator with the contact the API registers for them."""

    person_id: str
    email: str
    locale: str


@dataclass(frozen=True, slots=True)
class PledgeAction:
    """A pledge sent at ``at``; ``retries`` more times with the same Idempotency-Key."""

    at: float
    campaign_id: str
    pledge_id: str
    idempotency_key: str
    backer_id: str
    amount_minor: int
    currency: str
    tier_id: str | None
    payment_token: str | None
    locale: str
    retries: int = 0

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pledge_id": self.pledge_id,
            "backer_id": self.backer_id,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "locale": self.locale,
        }
        if self.tier_id is not None:
            out["tier_id"] = self.tier_id
        if self.payment_token is not None:
            out["payment_token"] = self.payment_token
        return out


@dataclass(frozen=True, slots=True)
class CancelAction:
    at: float
    campaign_id: str
    pledge_id: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class InvalidAction:
    """A request with a ``flaw``; ``expect`` is how the API answers it."""

    at: float
    campaign_id: str
    idempotency_key: str
    flaw: str
    expect: Expect
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloseAction:
    """The creator calls the campaign off before its deadline (``POST .../close``)."""

    at: float
    campaign_id: str
    idempotency_key: str
    reason: str = "creator_cancelled"


Action = PledgeAction | CancelAction | InvalidAction | CloseAction


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    run_id: str
    duration: float
    campaigns: tuple[CampaignPlan, ...]
    backers: tuple[Person, ...]
    creators: tuple[Person, ...]
    #: Every request after the launches, in time order.
    actions: tuple[Action, ...] = field(default=())

    @property
    def pledges(self) -> list[PledgeAction]:
        return [a for a in self.actions if isinstance(a, PledgeAction)]


def _amount(rng: random.Random, currency: str, typical: float) -> int:
    """A pledge in minor units: log-normal around ``typical`` major units, at least 1."""
    scale: int = 10 ** currency_exponent(currency)
    return max(1, round(typical * rng.lognormvariate(0.0, 0.6) * scale))


def _tiers(rng: random.Random, cid: str, currency: str, typical: float) -> tuple[TierPlan, ...]:
    scale = 10 ** currency_exponent(currency)
    early = TierPlan(f"{cid}-early", "Early bird", round(typical * 0.5 * scale), rng.randint(2, 6))
    standard = TierPlan(f"{cid}-std", "Standard", round(typical * scale), rng.randint(20, 80))
    deluxe = TierPlan(f"{cid}-deluxe", "Deluxe", round(typical * 3 * scale), None)
    return (early, standard, deluxe)


def _arrival(rng: random.Random, deadline_after: float) -> float:
    """When a pledge arrives: the arcsine law (surges at launch and near the deadline), kept
    clear of the deadline itself so that most are decided before it."""
    return deadline_after * (0.02 + 0.93 * rng.betavariate(0.5, 0.5))


def generate(seed: int, run_id: str, *, campaigns: int, duration: float, rate: float) -> Scenario:
    """The crowd of ``campaigns`` campaigns over ``duration`` seconds at ``rate`` requests/s
    on average (surging at launches and deadlines)."""
    if campaigns < 1 or duration <= 0 or rate <= 0:
        raise ValueError("campaigns, duration and rate must be positive")
    rng = random.Random(seed)
    # A backer pledges about three times; capped, since each one's contact is registered.
    n_backers = min(MAX_BACKERS, max(10, int(rate * duration / 3)))
    backers = tuple(
        Person(f"{run_id}-b{n}", f"{run_id}-b{n}@backers.example", rng.choice(("en", "fr")))
        for n in range(n_backers)
    )
    creators: list[Person] = []
    plans: list[CampaignPlan] = []
    typicals: dict[str, float] = {}
    for n in range(campaigns):
        kind, funding, mode = KINDS[n % len(KINDS)]
        currency, typical = CURRENCIES[n % len(CURRENCIES)]
        cid = f"{run_id}-c{n}"
        creator = Person(
            f"{run_id}-u{n}", f"{run_id}-u{n}@creators.example", rng.choice(("en", "fr"))
        )
        creators.append(creator)
        tiers = _tiers(rng, cid, currency, typical) if kind != "donation" else ()
        plans.append(
            CampaignPlan(
                campaign_id=cid,
                title=f"{TITLES[n % len(TITLES)]} {run_id}-{n}",
                creator_id=creator.person_id,
                kind=kind,
                funding_model=funding,
                settlement_mode=mode,
                currency=currency,
                goal_minor=1,  # set below from the pledges it will receive
                deadline_after=round(duration * rng.uniform(0.75, 1.0), 3),
                tiers=tiers,
                revenue_share_bps=rng.choice((500, 1000, 1500)) if kind == "coproduction" else None,
            )
        )
        typicals[cid] = typical
    popularity = list(itertools.accumulate(rng.paretovariate(1.2) for _ in plans))

    actions: list[Action] = []
    received: dict[str, int] = {p.campaign_id: 0 for p in plans}
    total_requests = max(campaigns, round(rate * duration))
    pledge_no = 0
    for n in range(total_requests):
        plan = rng.choices(plans, cum_weights=popularity)[0]
        at = round(_arrival(rng, plan.deadline_after), 3)
        key = f"{run_id}:req:{n}"
        if rng.random() < INVALID_SHARE:
            actions.append(_invalid(rng, plan, at, key, run_id, n, backers))
            continue
        backer = rng.choice(backers)
        amount = _amount(rng, plan.currency, typicals[plan.campaign_id])
        tier_id = None
        if plan.tiers and rng.random() < 0.7:
            tier = rng.choices(plan.tiers, weights=(1, 6, 2))[0]
            tier_id = tier.tier_id
            amount = max(amount, tier.min_amount_minor)
        draw = rng.random()
        token = (
            "tok_declined"
            if draw < DECLINED_SHARE
            else "tok_fail_once"
            if draw < DECLINED_SHARE + FAIL_ONCE_SHARE
            else "tok_ok"
            if draw < 0.6
            else None
        )
        pledge = PledgeAction(
            at=at,
            campaign_id=plan.campaign_id,
            pledge_id=f"{run_id}-p{pledge_no}",
            idempotency_key=key,
            backer_id=backer.person_id,
            amount_minor=amount,
            currency=plan.currency,
            tier_id=tier_id,
            payment_token=token,
            locale=backer.locale,
            retries=1 if pledge_no % EVERY == RETRY_AT else 0,
        )
        actions.append(pledge)
        received[plan.campaign_id] += amount
        cancel = pledge_no % EVERY == CANCEL_AT
        pledge_no += 1
        if cancel:
            later = round(at + (plan.deadline_after * 0.97 - at) * rng.uniform(0.1, 0.6), 3)
            actions.append(CancelAction(later, plan.campaign_id, pledge.pledge_id, f"{key}:cancel"))
    actions.extend(
        CloseAction(
            round(plan.deadline_after * CALLED_OFF_AT, 3),
            plan.campaign_id,
            f"{run_id}:close:{plan.campaign_id}",
        )
        for n, plan in enumerate(plans)
        if n % CALLED_OFF == CALLED_OFF - 1
    )
    plans = [
        _with_goal(plan, received[plan.campaign_id], GOAL_FACTORS[n % len(GOAL_FACTORS)])
        for n, plan in enumerate(plans)
    ]
    actions.sort(key=lambda a: a.at)
    return Scenario(
        seed=seed,
        run_id=run_id,
        duration=duration,
        campaigns=tuple(plans),
        backers=backers,
        creators=tuple(creators),
        actions=tuple(actions),
    )


def _with_goal(plan: CampaignPlan, received: int, factor: float) -> CampaignPlan:
    floor = 10 ** currency_exponent(plan.currency) * 10
    goal = max(floor, round(received * factor))
    return CampaignPlan(
        plan.campaign_id, plan.title, plan.creator_id, plan.kind, plan.funding_model,
        plan.settlement_mode, plan.currency, goal, plan.deadline_after, plan.tiers,
        plan.revenue_share_bps,
    )  # fmt: skip


def _invalid(
    rng: random.Random,
    plan: CampaignPlan,
    at: float,
    key: str,
    run_id: str,
    n: int,
    backers: tuple[Person, ...],
) -> InvalidAction:
    flaw, expect = rng.choice(FLAWS)
    body: dict[str, Any] = {
        "pledge_id": f"{run_id}-x{n}",
        "backer_id": rng.choice(backers).person_id,
        "amount_minor": 10 ** currency_exponent(plan.currency) * 5,
        "currency": plan.currency,
    }
    campaign_id = plan.campaign_id
    match flaw:
        case "float_amount":
            body["amount_minor"] = 12.5
        case "zero_amount":
            body["amount_minor"] = 0
        case "unknown_currency":
            body["currency"] = "ZZZ"
        case "unknown_campaign":
            campaign_id = f"{run_id}-nowhere"
        case "currency_mismatch":
            body["currency"] = "USD"
        case "unknown_tier":
            body["tier_id"] = f"{plan.campaign_id}-no-such-tier"
    return InvalidAction(at, campaign_id, key, flaw, expect, body)
