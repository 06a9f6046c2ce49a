"""Realistic event histories for audit tests and benchmarks, decided by the pure domain.

``generate_history`` launches several campaigns (all-or-nothing and keep-it-all, both
settlement modes), sends pledges (some refused: unknown tier, below the tier minimum), cancels
some, closes them at the deadline or by the creator, so that outcomes are funded, failed and
cancelled; every event comes from ``services.pledge.domain.decide``. There is no settlement
service yet, so the settlement stream is generated here by the rules ``services.audit``
checks: funded campaigns capture every active pledge (a few captures fail and are released),
failed or cancelled ones release authorisations (or refund charges), then ``CampaignSettled``
balances the ledger.

``replicate`` copies a history under new campaign ids (re-stamping ids and hashes) to build a
large archive cheaply.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import (
    CampaignSettled,
    CancelPledge,
    CloseCampaign,
    Envelope,
    LaunchCampaign,
    MakePledge,
    Money,
    PledgeCaptured,
    PledgeCaptureFailed,
    PledgeRefunded,
    PledgeReleased,
    Tier,
    bps_of,
    encode,
    stamp,
)
from schemas.canonical import GENESIS_HASH, chain_hash, dumps
from schemas.envelope import event_id_for
from schemas.money import FeeSchedule
from services.pledge.domain import CampaignState, deadline_close, decide, evolve

__all__ = ["History", "generate_history", "replicate", "restamp_chain"]

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@dataclass
class History:
    """Envelopes in a valid log order (each chain in seq order, campaigns interleaved)."""

    envelopes: list[Envelope] = field(default_factory=list)
    states: dict[str, CampaignState] = field(default_factory=dict)

    @property
    def lines(self) -> list[bytes]:
        """Each envelope's canonical bytes (the Kafka value and the archive line)."""
        return [encode(e) for e in self.envelopes]

    def of(self, campaign_id: str, stream: str = "campaign") -> list[Envelope]:
        """One chain, in seq order."""
        return [e for e in self.envelopes if e.campaign_id == campaign_id and e.stream == stream]

    @property
    def outcomes(self) -> dict[str, str | None]:
        return {cid: state.outcome for cid, state in self.states.items()}


@dataclass(frozen=True)
class _Plan:
    campaign_id: str
    funding_model: str
    settlement_mode: str
    goal_minor: int
    pledges: int
    close: str  # "deadline" or "creator_cancelled"
    currency: str = "EUR"


def _plans(
    rng: random.Random, campaigns: int, pledges: tuple[int, int], prefix: str
) -> list[_Plan]:
    plans = []
    for i in range(campaigns):
        n = rng.randint(*pledges)
        # Roughly 2 500 per pledge on average: goals above or below make funded and failed.
        kind = i % 4
        goal = n * 2_500 * (6 if kind == 1 else 1) // 2
        plans.append(
            _Plan(
                campaign_id=f"{prefix}{i:04d}",
                funding_model="keep_it_all" if kind == 2 else "all_or_nothing",
                settlement_mode="charge_then_refund" if i % 3 == 2 else "authorize_then_capture",
                goal_minor=max(goal, 1_000),
                pledges=n,
                close="creator_cancelled" if kind == 3 and i % 8 == 7 else "deadline",
            )
        )
    return plans


def _campaign_events(
    plan: _Plan, rng: random.Random, start: datetime, tenant: str = "tenant-1"
) -> tuple[CampaignState, list[Envelope]]:
    """Decide one campaign's whole life: its final domain state and its events."""
    cid = plan.campaign_id
    log: list[Envelope] = []
    state = CampaignState.empty(cid)
    now = start
    deadline = start + timedelta(days=30)
    counter = 0

    def run(command: Any, at: datetime) -> None:
        for envelope in decide(state, command, at):
            evolve(state, envelope)
            log.append(envelope)

    def ids() -> dict[str, Any]:
        nonlocal counter
        counter += 1
        return {
            "command_id": f"cmd-{cid}-{counter}",
            "tenant_id": tenant,
            "correlation_id": f"req-{cid}-{counter}",
            "issued_at": now,
            "campaign_id": cid,
        }

    tiers = (
        Tier(tier_id="early", title="Early bird", min_amount_minor=1_500, quantity_limit=5),
        Tier(tier_id="std", title="Standard", min_amount_minor=2_500),
    )
    run(
        LaunchCampaign(
            **ids(),
            creator_id=f"creator-{cid}",
            title=f"Campaign {cid}",
            goal=Money(amount_minor=plan.goal_minor, currency=plan.currency),
            deadline=deadline,
            funding_model=plan.funding_model,  # type: ignore[arg-type]
            settlement_mode=plan.settlement_mode,  # type: ignore[arg-type]
            commission_bps=500,
            fee_schedule=FeeSchedule.kickstarter_default(plan.currency),
            tiers=tiers,
        ),
        now,
    )
    made: list[str] = []
    step = timedelta(days=25) / max(plan.pledges, 1)
    for n in range(plan.pledges):
        now += step
        pledge_id = f"pl-{cid}-{n}"
        roll = rng.random()
        tier: str | None = rng.choice(["early", "std", None])
        amount = rng.choice([500, 1_000, 1_500, 2_500, 4_000, 10_000])
        if roll < 0.04:
            tier = "platinum"  # refused: unknown_tier
        elif roll < 0.08:
            tier, amount = "std", 900  # refused: below_tier_minimum
        run(
            MakePledge(
                **ids(),
                pledge_id=pledge_id,
                backer_id=f"backer-{rng.randint(1, 10_000)}",
                amount=Money(amount_minor=amount, currency=plan.currency),
                tier_id=tier,
                payment_token=f"tok_{rng.getrandbits(48):012x}",
                locale=rng.choice(["fr-FR", "en-GB", "de-DE", None]),
            ),
            now,
        )
        if state.pledges.get(pledge_id) is not None and state.pledges[pledge_id].status == "active":
            made.append(pledge_id)
        if made and rng.random() < 0.1:
            victim = made.pop(rng.randrange(len(made)))
            run(CancelPledge(**ids(), pledge_id=victim, reason="backer_request"), now)
    if plan.close == "creator_cancelled":
        run(CloseCampaign(**ids(), reason="creator_cancelled"), now + timedelta(hours=1))
    else:
        for envelope in deadline_close(state, deadline):
            evolve(state, envelope)
            log.append(envelope)
    return state, log


def _settlement(state: CampaignState, closed: Envelope, rng: random.Random) -> list[Envelope]:
    """The settlement stream a correct settlement service would write after the close."""
    terms = state.terms
    assert terms is not None and state.outcome is not None
    currency = terms.goal.currency
    fees = terms.fee_schedule
    at = closed.occurred_at + timedelta(hours=2)
    cause = str(closed.event_id)
    events: list[Any] = []
    active = [(pid, p) for pid, p in state.pledges.items() if p.status == "active"]

    def money(minor: int) -> Money:
        return Money(amount_minor=minor, currency=currency)

    captured: list[tuple[int, int]] = []
    refunded: list[tuple[int, int]] = []
    failed = 0
    for pid, p in active:
        amount = money(p.amount_minor)
        fee = fees.fee_for(p.amount_minor)
        if state.outcome == "funded":
            if rng.random() < 0.05:
                failed += 1
                events.append(
                    PledgeCaptureFailed(
                        pledge_id=pid, backer_id=p.backer_id, amount=amount,
                        reason="card_declined", retry_until=at + timedelta(days=7),
                    )
                )  # fmt: skip
                events.append(PledgeReleased(pledge_id=pid, amount=amount, reason="dropped"))
                continue
            events.append(
                PledgeCaptured(
                    pledge_id=pid, backer_id=p.backer_id, amount=amount, fee=money(fee),
                    gateway_ref=f"ch_{pid}",
                )
            )  # fmt: skip
            captured.append((p.amount_minor, fee))
        elif terms.settlement_mode == "charge_then_refund":
            events.append(
                PledgeCaptured(
                    pledge_id=pid, backer_id=p.backer_id, amount=amount, fee=money(fee),
                    gateway_ref=f"ch_{pid}",
                )
            )  # fmt: skip
            events.append(
                PledgeRefunded(
                    pledge_id=pid, backer_id=p.backer_id, amount=amount, fee_refunded=money(fee),
                    reason=f"campaign_{state.outcome}", gateway_ref=f"re_{pid}",
                )
            )  # fmt: skip
            captured.append((p.amount_minor, fee))
            refunded.append((p.amount_minor, fee))
        else:
            events.append(
                PledgeReleased(pledge_id=pid, amount=amount, reason=f"campaign_{state.outcome}")
            )
    gross = sum(a for a, _ in captured) - sum(a for a, _ in refunded)
    fee_total = sum(f for _, f in captured) - sum(f for _, f in refunded)
    commission = bps_of(gross, terms.commission_bps)
    payout = gross - commission - fee_total
    events.append(
        CampaignSettled(
            outcome=state.outcome,
            gross=money(gross),
            commission=money(commission),
            fees=money(fee_total),
            payout=money(payout),
            captured_count=len(captured),
            failed_count=failed,
            refunded_count=len(refunded),
            ledger_debits_minor=gross,
            ledger_credits_minor=payout + commission + fee_total,
        )
    )
    stamped: list[Envelope] = []
    prev = GENESIS_HASH
    for index, event in enumerate(events):
        envelope = stamp(
            event, campaign_id=state.campaign_id, seq=index + 1, prev_hash=prev,
            occurred_at=at, causation_id=cause, correlation_id=cause, index=index,
        )  # fmt: skip
        prev = envelope.hash
        stamped.append(envelope)
    return stamped


def generate_history(
    *,
    seed: int = 7,
    campaigns: int = 8,
    pledges: tuple[int, int] = (12, 40),
    settlement: bool = True,
    prefix: str = "camp-",
    tenant: str = "tenant-1",
) -> History:
    """A history of ``campaigns`` campaigns (funded, failed and cancelled outcomes, with
    cancellations and refusals) decided by the domain, plus generated settlement streams."""
    rng = random.Random(seed)
    history = History()
    chains: list[list[Envelope]] = []
    for i, plan in enumerate(_plans(rng, campaigns, pledges, prefix)):
        state, log = _campaign_events(plan, rng, START + timedelta(hours=i), tenant)
        closed = log[-1] if log[-1].event_type == "CampaignClosed" else None
        if settlement and closed is not None:
            log += _settlement(state, closed, rng)
        history.states[plan.campaign_id] = state
        chains.append(log)
    # Interleave campaigns by time; the sort is stable so each chain keeps its order.
    merged = [(e.occurred_at, i, e) for i, chain in enumerate(chains) for e in chain]
    merged.sort(key=lambda item: (item[0], item[1]))
    history.envelopes = [e for _, _, e in merged]
    return history


def restamp_chain(bodies: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Re-number and re-hash one chain of raw envelope dicts (for building tampered-but-
    chained histories, e.g. a duplicated pledge a buggy writer would produce)."""
    prev = GENESIS_HASH
    for seq, raw in enumerate(bodies, 1):
        body = {k: v for k, v in raw.items() if k != "hash"}
        body["seq"] = seq
        body["prev_hash"] = prev
        prev = body["hash"] = chain_hash(prev, dumps(body))
        yield body


def replicate(lines: list[bytes], copies: int) -> Iterator[bytes]:
    """``lines`` (a valid log) repeated ``copies`` times under new campaign ids, re-stamped
    (new causation ids, event ids and hash chains), copy by copy."""
    import orjson

    raws = [orjson.loads(line) for line in lines]
    for copy in range(copies):
        heads: dict[tuple[str, str], str] = {}
        index: dict[str, int] = {}
        for raw in raws:
            body = dict(raw)
            del body["hash"]
            cid = f"{raw['campaign_id']}-x{copy}"
            key = (cid, raw["stream"])
            body["campaign_id"] = cid
            body["causation_id"] = f"{raw['causation_id']}-x{copy}"
            at = index[body["causation_id"]] = index.get(body["causation_id"], -1) + 1
            body["event_id"] = str(event_id_for(raw["stream"], body["causation_id"], at))
            body["prev_hash"] = heads.get(key, GENESIS_HASH)
            body["hash"] = heads[key] = chain_hash(body["prev_hash"], dumps(body))
            yield dumps(body)
