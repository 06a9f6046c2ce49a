"""Deciding: a command on a campaign's state at ``now`` -> its events, stamped on the chain.

:func:`decide` (envelopes), its hot-path twins :func:`decide_with_bodies` (plus their
canonical dicts) and :func:`decide_encoded` (plus their canonical bytes), and the processor's
timer, :func:`deadline_close`. Idempotency lives here (a command id seen within the horizon
yields nothing; a reused one is refused under a causation id of its own); the rules per
command are in :mod:`~services.pledge.domain.rules`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from schemas.commands import CancelPledge, CloseCampaign, LaunchCampaign, MakePledge
from schemas.envelope import Envelope, Stamped, stamp_chain
from schemas.events import Event, RejectionReason
from services.pledge.domain.rules import (
    closed,
    decide_cancel,
    decide_close,
    decide_launch,
    decide_pledge,
    pledge_refused,
)
from services.pledge.domain.state import DEFAULT_POLICY, CampaignState, Command, Policy

__all__ = [
    "deadline_causation_id",
    "deadline_close",
    "decide",
    "decide_encoded",
    "decide_with_bodies",
]

R = RejectionReason


def decide(
    state: CampaignState, command: Command, now: datetime, policy: Policy = DEFAULT_POLICY
) -> list[Envelope]:
    """The events ``command`` causes on ``state`` at ``now``, stamped and chained.

    Pure: ``state`` is not changed. Events get ``seq = state.seq + 1, ...``, chain from
    ``state.last_hash``, ``causation_id = command.command_id``, ``correlation_id =
    command.correlation_id``, ``index`` = position in the decision, ``occurred_at = now``.
    An empty list means the command changes nothing (a duplicate, or nothing to do).
    """
    return [envelope for envelope, _ in decide_with_bodies(state, command, now, policy)]


def decide_with_bodies(
    state: CampaignState, command: Command, now: datetime, policy: Policy = DEFAULT_POLICY
) -> list[tuple[Envelope, dict[str, Any]]]:
    """:func:`decide`, also returning each envelope's canonical dict (with ``hash``) so the
    processor encodes with ``schemas.canonical.dumps(body)`` without a second dump."""
    return [(envelope, body) for envelope, body, _ in decide_encoded(state, command, now, policy)]


def decide_encoded(
    state: CampaignState, command: Command, now: datetime, policy: Policy = DEFAULT_POLICY
) -> list[Stamped]:
    """:func:`decide_with_bodies`, also returning each envelope's canonical bytes (exactly
    ``schemas.encode(envelope)``), which the processor writes as they are."""
    fields = command.__dict__  # faster than pydantic attribute reads (hot path)
    campaign_id = fields["campaign_id"]
    if campaign_id != state.campaign_id:
        raise ValueError(f"command for campaign {campaign_id!r} decided on {state.campaign_id!r}")
    causation_id = fields["command_id"]
    if causation_id in state.processed:
        if type(command) is not MakePledge:
            return []
        reused = _reused_command(state, command)
        if reused is None:
            return []
        causation_id, events = reused
        return _stamp_all(state, events, now, causation_id, fields["correlation_id"])
    if type(command) is MakePledge:  # the hot path skips the dispatch below
        events = decide_pledge(state, command, now)
    else:
        events = _decide_events(state, command, now, policy)
    return _stamp_all(state, events, now, causation_id, fields["correlation_id"])


def _reused_command(state: CampaignState, command: MakePledge) -> tuple[str, list[Event]] | None:
    """A ``MakePledge`` whose command id was decided before: None for a retry of the same
    pledge, else (its own causation id, its ``idempotency_key_reused`` refusal)."""
    fields = command.__dict__
    command_id, pledge_id = fields["command_id"], fields["pledge_id"]
    if state.pledge_commands.get(command_id) == pledge_id or pledge_id in state.pledges:
        return None  # the same pledge again, or a pledge id decided already: nothing new
    mark = fields["fingerprint"] or hashlib.sha256(pledge_id.encode()).hexdigest()
    causation_id = f"{command_id}:reused-{mark[:16]}"
    if causation_id in state.processed:
        return None
    first = state.pledge_commands.get(command_id)
    what = f"pledge {first}" if first is not None else "another command"
    detail = f"Idempotency-Key (command {command_id}) was already used for {what}"
    return causation_id, pledge_refused(command, R.IDEMPOTENCY_KEY_REUSED, detail)


def _stamp_all(
    state: CampaignState,
    events: list[Event],
    now: datetime,
    causation_id: str,
    correlation_id: str,
) -> list[Stamped]:
    if not events:
        return []
    return stamp_chain(
        events,
        campaign_id=state.campaign_id,
        seq=state.seq + 1,
        prev_hash=state.last_hash,
        occurred_at=now,
        causation_id=causation_id,
        correlation_id=correlation_id,
    )


def _decide_events(
    state: CampaignState, command: Command, now: datetime, policy: Policy
) -> list[Event]:
    match command:
        case MakePledge():
            return decide_pledge(state, command, now)
        case CancelPledge():
            return decide_cancel(state, command, now, policy)
        case LaunchCampaign():
            return decide_launch(state, command, now)
        case CloseCampaign():
            return decide_close(state, command, now)
    raise TypeError(f"not a command: {type(command).__name__}")  # pragma: no cover


def deadline_causation_id(campaign_id: str) -> str:
    """The causation (and correlation) id of the timer's deadline close of a campaign."""
    return f"deadline:{campaign_id}"


def deadline_close(state: CampaignState, now: datetime) -> list[Envelope]:
    """The processor's timer: ``[CampaignClosed(reason='deadline')]`` when the campaign is open
    and ``now`` has reached its deadline, else ``[]``. Deterministic ids (a retried close is
    the same event)."""
    terms = state.terms
    if terms is None or state.status != "open" or now < terms.deadline:
        return []
    causation_id = deadline_causation_id(state.campaign_id)
    stamped = _stamp_all(state, [closed(state, terms, "deadline")], now, causation_id, causation_id)
    return [envelope for envelope, _, _ in stamped]
