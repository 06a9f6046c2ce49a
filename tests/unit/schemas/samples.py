"""One valid example of every event type, and a helper to chain them, for the schema tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from schemas import (
    GENESIS_HASH,
    CampaignClosed,
    CampaignLaunched,
    CampaignSettled,
    Envelope,
    Event,
    FeeSchedule,
    GoalReached,
    Money,
    NotificationFailed,
    NotificationSent,
    PledgeCancelled,
    PledgeCaptured,
    PledgeCaptureFailed,
    PledgeMade,
    PledgeRefunded,
    PledgeRejected,
    PledgeReleased,
    RejectionReason,
    RevenueShare,
    Tier,
    stamp,
)
from schemas.events import (
    PaymentMethodUpdated,
    RefundRequested,
    RevenueShared,
    RevenueShareLine,
    SettlementCommandRejected,
)

T0 = datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def eur(minor: int) -> Money:
    return Money(amount_minor=minor, currency="EUR")


def sample_events() -> list[Event]:
    """Every event type once, with optional fields filled in."""
    cause = UUID("6e4a1709-39bc-5960-a0fe-085acca2a7bc")
    return [
        CampaignLaunched(
            tenant_id="tenant-a",
            creator_id="creator-1",
            title="Coproduced film",
            goal=eur(1_000_000),
            deadline=T0 + timedelta(days=30),
            funding_model="all_or_nothing",
            settlement_mode="authorize_then_capture",
            commission_bps=500,
            fee_schedule=FeeSchedule(),
            tiers=[
                Tier(tier_id="early", title="Early bird", min_amount_minor=2500, quantity_limit=100)
            ],
            kind="coproduction",
            revenue_share=RevenueShare(share_bps=1000, duration_months=36),
        ),
        PledgeMade(
            pledge_id="pl-1", backer_id="b-1", amount=eur(2500), tier_id="early",
            payment_token="tok_1", locale="fr-FR",
        ),
        PledgeRejected(
            pledge_id="pl-2", backer_id="b-2", amount=eur(100),
            reason=RejectionReason.BELOW_TIER_MINIMUM, detail="early needs 25.00 EUR",
        ),
        PledgeCancelled(
            pledge_id="pl-1", amount=eur(2500), tier_id="early", reason="backer_request",
        ),
        GoalReached(total=eur(1_000_000), pledge_count=400),
        CampaignClosed(
            outcome="funded", reason="deadline", total=eur(1_002_500), accepted_pledges=401,
            last_seq=420,
        ),
        PledgeCaptured(
            pledge_id="pl-3", backer_id="b-3", amount=eur(2500), fee=eur(95), gateway_ref="ch_1",
        ),
        PledgeCaptureFailed(
            pledge_id="pl-4", backer_id="b-4", amount=eur(2500), reason="card_declined",
            detail="insufficient funds", attempt=2, retry_until=T0 + timedelta(days=7),
        ),
        PledgeReleased(pledge_id="pl-5", amount=eur(2500), reason="campaign_failed"),
        PledgeRefunded(
            pledge_id="pl-6", backer_id="b-6", amount=eur(2500), fee_refunded=eur(0),
            reason="campaign_failed", gateway_ref="re_1",
        ),
        CampaignSettled(
            outcome="funded", gross=eur(1_000_000), commission=eur(50_000), fees=eur(38_000),
            payout=eur(912_000), captured_count=400, failed_count=1, refunded_count=0,
            ledger_debits_minor=1_000_000, ledger_credits_minor=1_000_000,
        ),
        PaymentMethodUpdated(pledge_id="pl-4"),
        RefundRequested(
            refund_id="rf-1", pledge_id="pl-3", amount=eur(1000), reason="item_not_delivered",
            requested_by="creator-1",
        ),
        RevenueShared(
            period="2027-Q1", revenue=eur(100_000), shared=eur(10_000),
            shares=(
                RevenueShareLine(pledge_id="pl-3", backer_id="b-3", amount_minor=6_667),
                RevenueShareLine(pledge_id="pl-7", backer_id="b-7", amount_minor=3_333),
            ),
        ),
        SettlementCommandRejected(
            command_id="cmd-9", command_type="RefundPledge", pledge_id="pl-5",
            reason="pledge_not_captured", detail="pl-5 was released",
        ),
        NotificationSent(
            notification_id="n-1", cause_event_id=cause, channel="email",
            recipient_kind="backer", recipient="b-1", template="pledge_confirmed",
        ),
        NotificationFailed(
            notification_id="n-2", cause_event_id=cause, channel="webhook",
            recipient_kind="creator", recipient="creator-1", template="goal_reached",
            reason="http_503", detail="upstream unavailable", will_retry=True,
        ),
    ]  # fmt: skip


def chain(events: list[Event], campaign_id: str = "camp-1") -> list[Envelope]:
    """Stamp ``events`` as one campaign's chains (one chain per stream), in order."""
    heads: dict[str, tuple[int, str]] = {}
    out = []
    for i, event in enumerate(events):
        seq, prev = heads.get(event.stream, (0, GENESIS_HASH))
        envelope = stamp(
            event, campaign_id=campaign_id, seq=seq + 1, prev_hash=prev,
            occurred_at=T0 + timedelta(seconds=i), causation_id=f"cmd-{i}",
            correlation_id="corr-1", index=0,
        )  # fmt: skip
        heads[event.stream] = (seq + 1, envelope.hash)
        out.append(envelope)
    return out
