"""Builders of stamped campaign and settlement events for notify's unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.envelope import Envelope, stamp
from schemas.events import (
    CampaignClosed,
    CampaignLaunched,
    CampaignSettled,
    Event,
    GoalReached,
    PledgeCancelled,
    PledgeCaptured,
    PledgeCaptureFailed,
    PledgeMade,
    PledgeRefunded,
    PledgeReleased,
)
from schemas.money import Money

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Stream:
    """Stamps events of one campaign in order, a counter per stream."""

    def __init__(self, campaign_id: str = "c-1") -> None:
        self.campaign_id = campaign_id
        self.seq = {"campaign": 0, "settlement": 0, "notify": 0}

    def __call__(self, event: Event) -> Envelope:
        self.seq[event.stream] += 1
        n = self.seq[event.stream]
        return stamp(
            event,
            campaign_id=self.campaign_id,
            seq=n,
            occurred_at=NOW + timedelta(seconds=n),
            causation_id=f"{self.campaign_id}-{event.stream}-{n}",
            correlation_id="corr",
            index=0,
        )


def money(minor: int, currency: str = "EUR") -> Money:
    return Money(amount_minor=minor, currency=currency)


def launch(tenant: str = "tenant-a", currency: str = "EUR", goal: int = 10_000) -> CampaignLaunched:
    return CampaignLaunched(
        tenant_id=tenant,
        creator_id="creator-1",
        title="Mon album",
        goal=money(goal, currency),
        deadline=NOW + timedelta(days=30),
        funding_model="all_or_nothing",
        settlement_mode="authorize_then_capture",
        commission_bps=500,
    )


def pledge(
    pledge_id: str, backer: str, minor: int, currency: str = "EUR", locale: str | None = None
) -> PledgeMade:
    return PledgeMade(
        pledge_id=pledge_id,
        backer_id=backer,
        amount=money(minor, currency),
        locale=locale,
        payment_token="tok_secret",
    )


def cancel(pledge_id: str, minor: int, currency: str = "EUR") -> PledgeCancelled:
    return PledgeCancelled(pledge_id=pledge_id, amount=money(minor, currency), reason="backer")


def goal(total: int, count: int, currency: str = "EUR") -> GoalReached:
    return GoalReached(total=money(total, currency), pledge_count=count)


def close(
    outcome: str, total: int, count: int, last_seq: int, currency: str = "EUR"
) -> CampaignClosed:
    return CampaignClosed.model_validate(
        {
            "outcome": outcome,
            "reason": "deadline",
            "total": money(total, currency),
            "accepted_pledges": count,
            "last_seq": last_seq,
        }
    )


def captured(pledge_id: str, backer: str, minor: int, currency: str = "EUR") -> PledgeCaptured:
    return PledgeCaptured(
        pledge_id=pledge_id,
        backer_id=backer,
        amount=money(minor, currency),
        fee=money(minor // 20, currency),
        gateway_ref=f"gw-{pledge_id}",
    )


def capture_failed(
    pledge_id: str, backer: str, minor: int, currency: str = "EUR"
) -> PledgeCaptureFailed:
    return PledgeCaptureFailed(
        pledge_id=pledge_id,
        backer_id=backer,
        amount=money(minor, currency),
        reason="card_declined",
        retry_until=NOW + timedelta(days=7),
    )


def refunded(pledge_id: str, backer: str, minor: int, currency: str = "EUR") -> PledgeRefunded:
    return PledgeRefunded(
        pledge_id=pledge_id,
        backer_id=backer,
        amount=money(minor, currency),
        fee_refunded=money(0, currency),
        reason="campaign_failed",
        gateway_ref=f"rf-{pledge_id}",
    )


def released(pledge_id: str, minor: int, currency: str = "EUR") -> PledgeReleased:
    return PledgeReleased(pledge_id=pledge_id, amount=money(minor, currency), reason="failed")


def settled(gross: int, currency: str = "EUR") -> CampaignSettled:
    commission = gross // 20
    fees = gross // 50
    return CampaignSettled(
        outcome="funded",
        gross=money(gross, currency),
        commission=money(commission, currency),
        fees=money(fees, currency),
        payout=money(gross - commission - fees, currency),
        captured_count=2,
        failed_count=0,
        refunded_count=0,
        ledger_debits_minor=gross,
        ledger_credits_minor=gross,
    )
