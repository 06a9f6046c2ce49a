"""Campaign histories for settlement tests, and a loop that drives the pure domain to the end.

``CampaignBook`` stamps campaign-stream events (launch, pledges, cancellations, close) and
folds them into a :class:`SettlementState`; ``settle`` runs plan -> gateway -> decide ->
evolve with an injected clock until the campaign is settled (or nothing is left to do),
jumping the clock to the next retry when only retries are owed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.canonical import GENESIS_HASH
from schemas.envelope import Envelope, stamp
from schemas.events import (
    CampaignClosed,
    CampaignLaunched,
    CloseOutcome,
    Event,
    GoalReached,
    PledgeCancelled,
    PledgeMade,
    RevenueShare,
)
from schemas.money import FeeSchedule, Money
from services.settlement.adapters.memory_gateway import MemoryGateway
from services.settlement.domain import Input, Policy, Tick, decide, plan
from services.settlement.state import SettlementState, evolve

__all__ = ["T0", "CampaignBook", "settle"]

T0 = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)


@dataclass
class CampaignBook:
    """One campaign's two streams, stamped and folded as the worker would."""

    campaign_id: str = "camp-1"
    settlement_mode: str = "authorize_then_capture"
    funding_model: str = "all_or_nothing"
    currency: str = "EUR"
    goal_minor: int = 10_000
    commission_bps: int = 500
    fee_schedule: FeeSchedule | None = None
    coproduction: bool = False
    state: SettlementState = field(init=False)
    log: list[Envelope] = field(default_factory=list)
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    counter: int = 0
    goal_reached: bool = False
    total_minor: int = 0
    active_count: int = 0

    def __post_init__(self) -> None:
        self.state = SettlementState(self.campaign_id)

    def money(self, minor: int) -> Money:
        return Money(amount_minor=minor, currency=self.currency)

    def append(self, event: Event, at: datetime = T0, cause: str | None = None) -> Envelope:
        """Stamp ``event`` at the head of its stream and fold it."""
        seq, prev = self.heads.get(event.stream, (0, GENESIS_HASH))
        self.counter += 1
        envelope = stamp(
            event, campaign_id=self.campaign_id, seq=seq + 1, prev_hash=prev, occurred_at=at,
            causation_id=cause or f"cause-{self.counter}", correlation_id="corr", index=0,
        )  # fmt: skip
        self.heads[event.stream] = (seq + 1, envelope.hash)
        self.log.append(envelope)
        evolve(self.state, envelope)
        return envelope

    def launch(self) -> CampaignBook:
        extra: dict[str, Any] = {}
        if self.coproduction:
            extra = {
                "kind": "coproduction",
                "revenue_share": RevenueShare(share_bps=1_000, duration_months=24),
            }
        self.append(
            CampaignLaunched(
                tenant_id="tenant-1", creator_id="creator-1", title="A film",
                goal=self.money(self.goal_minor), deadline=T0 + timedelta(days=30),
                funding_model=self.funding_model,  # type: ignore[arg-type]
                settlement_mode=self.settlement_mode,  # type: ignore[arg-type]
                commission_bps=self.commission_bps,
                fee_schedule=self.fee_schedule or FeeSchedule.kickstarter_default(self.currency),
                **extra,
            )
        )  # fmt: skip
        return self

    def pledge(self, pledge_id: str, amount_minor: int, token: str | None = "tok_ok") -> Envelope:
        """A PledgeMade, followed by GoalReached when it first takes the total to the goal
        (as the processor writes them)."""
        envelope = self.append(
            PledgeMade(
                pledge_id=pledge_id, backer_id=f"backer-{pledge_id}",
                amount=self.money(amount_minor), payment_token=token,
            )
        )  # fmt: skip
        self.total_minor += amount_minor
        self.active_count += 1
        if not self.goal_reached and self.total_minor >= self.goal_minor:
            self.goal_reached = True
            self.append(
                GoalReached(total=self.money(self.total_minor), pledge_count=self.active_count)
            )
        return envelope

    def cancel(self, pledge_id: str) -> Envelope:
        amount = self.state.pledges[pledge_id].amount_minor
        self.total_minor -= amount
        self.active_count -= 1
        return self.append(
            PledgeCancelled(pledge_id=pledge_id, amount=self.money(amount), reason="backer_request")
        )

    def close(self, outcome: CloseOutcome, at: datetime = T0) -> Envelope:
        active = [p for p in self.state.pledges.values() if not p.cancelled]
        seq = self.heads.get("campaign", (0, ""))[0] + 1
        return self.append(
            CampaignClosed(
                outcome=outcome,
                reason="deadline" if outcome != "cancelled" else "creator_cancelled",
                total=self.money(sum(p.amount_minor for p in active)),
                accepted_pledges=len(active), last_seq=seq,
            ),
            at,
        )  # fmt: skip

    def decide(self, given: Input, now: datetime = T0, policy: Policy | None = None) -> list[Event]:
        """Decide ``given`` and append (fold) what it yields, caused by ``cause_of(given)``."""
        events = decide(self.state, given, now, policy or Policy())
        for event in events:
            self.append(event, now, cause_of(given))
        return events


def cause_of(given: Input) -> str:
    """The causation id the worker stamps on what ``given`` yields."""
    call = getattr(given, "call", None)
    if call is not None:
        return str(call.key)
    command_id = getattr(given, "command_id", None)
    return str(command_id) if command_id is not None else "settle"


def settle(
    book: CampaignBook,
    gateway: MemoryGateway,
    now: datetime = T0,
    policy: Policy | None = None,
    max_rounds: int = 100,
) -> datetime:
    """Run the campaign's settlement to the end; return the clock at the end."""
    policy = policy or Policy()
    verified: set[str] = set()
    for _ in range(max_rounds):
        calls = plan(book.state, now, policy, skip=verified)
        for call in calls:
            result = gateway.answer(call)
            if call.kind == "authorize":
                verified.add(call.key)
            book.decide(result, now, policy)
        if book.decide(Tick(), now, policy) or book.state.settled is not None:
            return now
        if not [c for c in calls if c.kind != "authorize"]:
            # Only retries may be owed: jump to the next one.
            waits = [
                p.first_failed_at + policy.retry_schedule[p.attempts - 1]
                for p in book.state.pledges.values()
                if p.status == "failed" and p.first_failed_at is not None
                and p.attempts <= len(policy.retry_schedule)
            ]  # fmt: skip
            if not waits:
                return now
            now = max(now, min(waits))
    raise AssertionError(f"not settled after {max_rounds} rounds")
