"""The auditor's lightweight replay: per-campaign state folded from raw payload dicts.

The services fold typed envelopes with ``services.pledge.domain.evolve``; validating a pydantic
model per event would cost more than everything else the auditor does, so this fold reads the
payload dicts straight from the hash-verified JSON and is tolerant of every event type (an
unknown type is counted, never fatal). Totals, counts, statuses and outcomes equal what the
domain's ``evolve`` produces (a unit test replays the same histories through both).

While folding, the per-event rules of :mod:`services.audit.rules` are checked: each apply
function returns ``None`` or ``(rule, detail)`` for the event it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "APPLY",
    "FINAL_REFUSALS",
    "CampaignFold",
    "Problem",
    "SettlementEntry",
]

#: ``(rule name, what is wrong)`` for one event.
Problem = tuple[str, str]

#: Refusals that make a pledge id final (the domain's ``FINAL_PLEDGE_REFUSALS``; a unit test
#: pins the two sets together).
FINAL_REFUSALS = frozenset(
    {
        "campaign_not_found",
        "campaign_closed",
        "deadline_passed",
        "currency_mismatch",
        "invalid_amount",
        "unknown_tier",
        "below_tier_minimum",
        "tier_sold_out",
    }
)

# Indices of a pledge entry: [status, amount_minor, tier_id, backer_id, seq made, seq ended].
# A list rather than a class: the fold creates one per PledgeMade on the hot path.
STATUS, AMOUNT, TIER, BACKER, MADE_SEQ, ENDED_SEQ = range(6)


@dataclass(slots=True)
class SettlementEntry:
    """One settlement event kept for the end-of-stream rules (and the statement)."""

    event_type: str
    pledge_id: str
    amount_minor: int
    fee_minor: int
    currency: str
    seq: int
    ordinal: int


@dataclass(slots=True)
class CampaignFold:
    """Everything the auditor knows of one campaign after folding its streams."""

    campaign_id: str
    status: str = "absent"
    terms: dict[str, Any] | None = None
    currency: str | None = None
    goal_minor: int = 0
    funding_model: str | None = None
    settlement_mode: str | None = None
    commission_bps: int = 0
    total_minor: int = 0
    pledge_count: int = 0
    rejected_count: int = 0
    cancelled_count: int = 0
    cancelled_minor: int = 0
    #: ``pledge_id -> [status, amount_minor, tier_id, backer_id, seq made, seq ended]``;
    #: status is ``active``, ``cancelled`` or ``rejected`` (a final refusal, as the domain).
    pledges: dict[str, list[Any]] = field(default_factory=dict)
    goal_reached_seq: int | None = None
    #: Seq of the PledgeMade that first took the total to the goal, until GoalReached follows.
    goal_due_seq: int | None = None
    outcome: str | None = None
    close_reason: str | None = None
    closed_seq: int | None = None
    #: Last seq folded per stream (``campaign``, ``settlement``, ``notify``).
    seqs: dict[str, int] = field(default_factory=dict)
    #: Settlement events in their stream's order.
    settlement: list[SettlementEntry] = field(default_factory=list)
    settled: dict[str, Any] | None = None
    settled_seq: int = 0
    settled_ordinal: int = 0
    first_settlement_ordinal: int | None = None
    notifications: int = 0
    unknown_events: int = 0
    #: Ordinal (position in its partition) of events the end-of-stream rules may have to name.
    ordinals: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Plain-JSON figures of the campaign (the replay table, ``--json``, the read-model
        comparison)."""
        captured = [e for e in self.settlement if e.event_type == "PledgeCaptured"]
        refunded = [e for e in self.settlement if e.event_type == "PledgeRefunded"]
        settled = self.settled
        return {
            "campaign_id": self.campaign_id,
            "status": self.status,
            "currency": self.currency,
            "goal_minor": self.goal_minor,
            "funding_model": self.funding_model,
            "total_minor": self.total_minor,
            "pledges": self.pledge_count,
            "cancelled": self.cancelled_count,
            "rejected": self.rejected_count,
            "goal_reached": self.goal_reached_seq is not None,
            "outcome": self.outcome,
            "last_seq": self.seqs.get("campaign", 0),
            "captured_count": len(captured),
            "captured_minor": sum(e.amount_minor for e in captured),
            "fees_minor": sum(e.fee_minor for e in captured) - sum(e.fee_minor for e in refunded),
            "refunded_minor": sum(e.amount_minor for e in refunded),
            "settled": settled is not None,
            "commission_minor": None if settled is None else settled["commission"]["amount_minor"],
            "payout_minor": None if settled is None else settled["payout"]["amount_minor"],
        }


def _money(value: Any) -> tuple[int, str]:
    return value["amount_minor"], value["currency"]


# --- campaign stream ---------------------------------------------------------------------


def _goal_due(fold: CampaignFold, seq: int) -> Problem | None:
    due = fold.goal_due_seq
    if due is not None:
        fold.goal_due_seq = None
        return (
            "goal_reached_consistent",
            f"the total crossed the goal at seq {due} but no GoalReached followed",
        )
    return None


def _launched(fold: CampaignFold, p: dict[str, Any], seq: int, ordinal: int) -> Problem | None:
    problem = _goal_due(fold, seq)
    if fold.status != "absent":
        return ("launched_once", f"CampaignLaunched at seq {seq} but the campaign was launched")
    fold.terms = p
    fold.goal_minor, fold.currency = _money(p["goal"])
    fold.funding_model = p.get("funding_model")
    fold.settlement_mode = p.get("settlement_mode")
    fold.commission_bps = p.get("commission_bps", 0)
    fold.status = "open"
    return problem


def _pledge_made(fold: CampaignFold, p: dict[str, Any], seq: int, ordinal: int) -> Problem | None:
    problem = _goal_due(fold, seq) if fold.goal_due_seq is not None else None
    pledge_id = p["pledge_id"]
    amount = p["amount"]
    minor = amount["amount_minor"]
    pledges = fold.pledges
    if pledge_id in pledges:
        problem = problem or (
            "pledge_id_unique",
            f"pledge id {pledge_id!r} was already used at seq {pledges[pledge_id][MADE_SEQ]}",
        )
    elif fold.status != "open":
        problem = problem or ("pledge_on_open_campaign", f"PledgeMade on a {fold.status} campaign")
    elif amount["currency"] != fold.currency:
        problem = problem or (
            "pledge_currency",
            f"pledge in {amount['currency']} on a {fold.currency} campaign",
        )
    pledges[pledge_id] = ["active", minor, p.get("tier_id"), p["backer_id"], seq, None]
    total = fold.total_minor + minor
    fold.total_minor = total
    fold.pledge_count += 1
    if fold.goal_reached_seq is None and fold.status == "open" and total >= fold.goal_minor:
        fold.goal_due_seq = seq
        fold.ordinals["goal_due"] = ordinal
    return problem


def _pledge_rejected(
    fold: CampaignFold, p: dict[str, Any], seq: int, ordinal: int
) -> Problem | None:
    problem = _goal_due(fold, seq) if fold.goal_due_seq is not None else None
    fold.rejected_count += 1
    pledge_id = p["pledge_id"]
    if p.get("reason") in FINAL_REFUSALS and pledge_id not in fold.pledges:
        fold.pledges[pledge_id] = [
            "rejected", p["amount"]["amount_minor"], None, p.get("backer_id"), seq, seq,
        ]  # fmt: skip
    return problem


def _pledge_cancelled(
    fold: CampaignFold, p: dict[str, Any], seq: int, ordinal: int
) -> Problem | None:
    problem = _goal_due(fold, seq) if fold.goal_due_seq is not None else None
    pledge_id = p["pledge_id"]
    record = fold.pledges.get(pledge_id)
    if record is None or record[STATUS] != "active":
        state = "unknown" if record is None else record[STATUS]
        return problem or ("cancel_active_pledge", f"cancels pledge {pledge_id!r} ({state})")
    if fold.status != "open":
        problem = problem or ("closed_is_final", f"PledgeCancelled on a {fold.status} campaign")
    minor = record[AMOUNT]
    if p["amount"]["amount_minor"] != minor:
        problem = problem or (
            "cancel_active_pledge",
            f"cancels {p['amount']['amount_minor']} of pledge {pledge_id!r} made for {minor}",
        )
    record[STATUS] = "cancelled"
    record[ENDED_SEQ] = seq
    fold.total_minor -= minor
    fold.pledge_count -= 1
    fold.cancelled_count += 1
    fold.cancelled_minor += minor
    return problem


def _goal_reached(fold: CampaignFold, p: dict[str, Any], seq: int, ordinal: int) -> Problem | None:
    fold.goal_due_seq = None
    if fold.goal_reached_seq is not None:
        return ("goal_reached_once", f"GoalReached again (first at seq {fold.goal_reached_seq})")
    fold.goal_reached_seq = seq
    total, _ = _money(p["total"])
    if fold.status != "open":
        return ("closed_is_final", f"GoalReached on a {fold.status} campaign")
    if total != fold.total_minor or p.get("pledge_count") != fold.pledge_count:
        return (
            "goal_reached_consistent",
            f"GoalReached says {total} from {p.get('pledge_count')} pledges, the log "
            f"{fold.total_minor} from {fold.pledge_count}",
        )
    if total < fold.goal_minor:
        return ("goal_reached_consistent", f"GoalReached at {total} below goal {fold.goal_minor}")
    return None


def expected_outcome(fold: CampaignFold, reason: str) -> str:
    """The outcome the domain gives a close for ``reason`` on the folded totals."""
    if reason != "deadline":
        return "cancelled"
    if fold.total_minor >= fold.goal_minor or (
        fold.funding_model == "keep_it_all" and fold.pledge_count > 0
    ):
        return "funded"
    return "failed"


def _closed(fold: CampaignFold, p: dict[str, Any], seq: int, ordinal: int) -> Problem | None:
    problem = _goal_due(fold, seq) if fold.goal_due_seq is not None else None
    if fold.status != "open":
        return problem or ("closed_once", f"CampaignClosed on a {fold.status} campaign")
    outcome, reason = p.get("outcome"), p.get("reason")
    total, _ = _money(p["total"])
    fold.status = "closed"
    fold.outcome = outcome
    fold.close_reason = reason
    fold.closed_seq = seq
    fold.ordinals["closed"] = ordinal
    if total != fold.total_minor or p.get("accepted_pledges") != fold.pledge_count:
        return problem or (
            "close_consistent",
            f"CampaignClosed says {total} from {p.get('accepted_pledges')} pledges, the log "
            f"{fold.total_minor} from {fold.pledge_count}",
        )
    if p.get("last_seq") != seq:
        return problem or ("close_consistent", f"last_seq {p.get('last_seq')} at seq {seq}")
    wanted = expected_outcome(fold, str(reason))
    if outcome != wanted:
        return problem or (
            "close_outcome",
            f"outcome {outcome!r} but {fold.funding_model} with {fold.total_minor} of goal "
            f"{fold.goal_minor} closed for {reason!r} is {wanted!r}",
        )
    return problem


# --- settlement and notify streams --------------------------------------------------------


def _settlement(kind: str, fee_key: str | None) -> ApplyFn:
    def apply(fold: CampaignFold, p: dict[str, Any], seq: int, ordinal: int) -> Problem | None:
        minor, currency = _money(p["amount"])
        fee = p[fee_key]["amount_minor"] if fee_key is not None else 0
        if fold.first_settlement_ordinal is None:
            fold.first_settlement_ordinal = ordinal
        entry = SettlementEntry(kind, p["pledge_id"], minor, fee, currency, seq, ordinal)
        fold.settlement.append(entry)
        return None

    return apply


def _settled(fold: CampaignFold, p: dict[str, Any], seq: int, ordinal: int) -> Problem | None:
    if fold.first_settlement_ordinal is None:
        fold.first_settlement_ordinal = ordinal
    if fold.settled is not None:
        return ("settled_once", f"CampaignSettled again (first at seq {fold.settled_seq})")
    fold.settled = p
    fold.settled_seq = seq
    fold.settled_ordinal = ordinal
    return None


def _notified(fold: CampaignFold, p: dict[str, Any], seq: int, ordinal: int) -> Problem | None:
    fold.notifications += 1
    return None


ApplyFn = Callable[[CampaignFold, dict[str, Any], int, int], "Problem | None"]

#: The fold of every known event type, keyed by the type's wire name as bytes (how the hot
#: path reads it from the line). Types missing here are counted as unknown, never fatal.
APPLY: dict[bytes, ApplyFn] = {
    b"CampaignLaunched": _launched,
    b"PledgeMade": _pledge_made,
    b"PledgeRejected": _pledge_rejected,
    b"PledgeCancelled": _pledge_cancelled,
    b"GoalReached": _goal_reached,
    b"CampaignClosed": _closed,
    b"PledgeCaptured": _settlement("PledgeCaptured", "fee"),
    b"PledgeCaptureFailed": _settlement("PledgeCaptureFailed", None),
    b"PledgeReleased": _settlement("PledgeReleased", None),
    b"PledgeRefunded": _settlement("PledgeRefunded", "fee_refunded"),
    b"CampaignSettled": _settled,
    b"NotificationSent": _notified,
    b"NotificationFailed": _notified,
}
