"""Folding: :func:`evolve` applies one campaign-stream event to the state in place, the same
function for live decisions and for replay (:func:`replay`), so a processor that crashed
resumes with exactly the state it had.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.envelope import Envelope
from schemas.events import (
    CampaignClosed,
    CampaignLaunched,
    GoalReached,
    PledgeCancelled,
    PledgeMade,
    PledgeRejected,
)
from services.pledge.domain.state import (
    DEDUP_HORIZON,
    FINAL_PLEDGE_REFUSALS,
    CampaignState,
    OutOfOrderEvent,
    PledgeRecord,
    set_terms,
)

__all__ = ["evolve", "replay"]


def evolve(state: CampaignState, envelope: Envelope) -> CampaignState:
    """Apply one event of ``state``'s campaign stream, in place; returns ``state``.

    An event at or below ``state.seq`` is already applied and is ignored (re-reading an overlap
    after a snapshot is harmless); one that skips a seq or does not chain to ``last_hash`` is a
    caller bug and raises :class:`OutOfOrderEvent`.
    """
    # Fields read from __dict__: pydantic models define __getattr__, which makes every
    # attribute read several times slower (this runs once per event written or replayed).
    fields = envelope.__dict__
    seq = fields["seq"]
    campaign_id = fields["campaign_id"]
    if seq != state.seq + 1 or fields["prev_hash"] != state.last_hash:
        if seq <= state.seq and campaign_id == state.campaign_id:
            return state
        raise OutOfOrderEvent(
            f"{envelope.event_type} seq {seq} of {campaign_id}/{envelope.stream} does "
            f"not follow seq {state.seq} of {state.campaign_id}"
        )
    if campaign_id != state.campaign_id or fields["stream"] != "campaign":
        raise OutOfOrderEvent(
            f"{envelope.event_type} of {campaign_id}/{envelope.stream} is not on "
            f"{state.campaign_id}/campaign"
        )
    payload = fields["payload"]
    match payload:
        case PledgeMade():
            made = payload.__dict__
            tier_id = made["tier_id"]
            minor = made["amount"].__dict__["amount_minor"]
            state.pledges[made["pledge_id"]] = PledgeRecord(
                "active", minor, tier_id, made["backer_id"]
            )
            state.pledge_commands.setdefault(fields["causation_id"], made["pledge_id"])
            state.total_minor += minor
            state.pledge_count += 1
            if tier_id is not None:
                state.tier_used[tier_id] = state.tier_used.get(tier_id, 0) + 1
        case PledgeRejected():
            pledge_id = payload.pledge_id
            state.pledge_commands.setdefault(fields["causation_id"], pledge_id)
            if payload.reason in FINAL_PLEDGE_REFUSALS and pledge_id not in state.pledges:
                state.pledges[pledge_id] = PledgeRecord(
                    "rejected", payload.amount.amount_minor, None, payload.backer_id
                )
        case PledgeCancelled():
            record = state.pledges.get(payload.pledge_id)
            if record is None or record.status != "active":
                raise OutOfOrderEvent(f"PledgeCancelled of {payload.pledge_id}, not active")
            record.status = "cancelled"
            state.total_minor -= record.amount_minor
            state.pledge_count -= 1
            if record.tier_id is not None:
                state.tier_used[record.tier_id] -= 1
        case GoalReached():
            if state.goal_reached_at is None:
                state.goal_reached_at = envelope.occurred_at
        case CampaignLaunched():
            set_terms(state, payload)
            state.status = "open"
        case CampaignClosed():
            state.status = "closed"
            state.outcome = payload.outcome
        case _:
            raise OutOfOrderEvent(f"{envelope.event_type} is not a campaign-stream event")
    state.seq = seq
    state.last_hash = fields["hash"]
    processed = state.processed
    occurred_at = fields["occurred_at"]
    processed.setdefault(fields["causation_id"], occurred_at)
    # Forget command ids older than the horizon (oldest first: events come in seq order).
    horizon = occurred_at - DEDUP_HORIZON
    while processed[oldest := next(iter(processed))] < horizon:
        del processed[oldest]
        state.pledge_commands.pop(oldest, None)
    return state


def replay(campaign_id: str, envelopes: Iterable[Envelope]) -> CampaignState:
    """The state of ``campaign_id`` after its campaign-stream events, in seq order."""
    state = CampaignState.empty(campaign_id)
    for envelope in envelopes:
        evolve(state, envelope)
    return state
