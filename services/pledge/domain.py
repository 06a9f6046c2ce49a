"""The pure domain of the pledge processor: campaign state, ``decide`` and ``evolve``.

Kept as one module: ``decide`` and ``evolve`` share the state's private layout and every
rule has its decision and its fold side by side; split apart they are how live state and
replay drift.

No I/O, no clock, no randomness: the processor passes ``now`` in, and the state is exactly the
fold of ``evolve`` over the campaign's own event stream (``replay``), so a processor that
crashed resumes with the very state it had. A business refusal is an event
(``PledgeRejected`` with a stable :class:`~schemas.RejectionReason` code), never an exception;
exceptions here mean a bug in the caller (wrong campaign, events out of order).

Public API: :class:`CampaignState` (with JSON-safe ``to_snapshot``/``from_snapshot``),
:class:`Policy`, :func:`decide` (stamped envelopes) and its hot-path twin
:func:`decide_with_bodies` (envelopes plus their canonical dicts, ready for
``schemas.canonical.dumps``) and :func:`decide_encoded` (also their canonical bytes),
:func:`evolve`, :func:`replay`, :func:`deadline_close`.

Representation choices the rest of the system relies on:

* **Idempotency.** Every event's ``causation_id`` (the command id) is remembered for
  :data:`DEDUP_HORIZON` after its event (folded from the events' ``occurred_at``, so replay
  forgets exactly what the live state forgot); a command seen again within it yields no event.
  The horizon is 7 days, past the API's 24 h idempotency window (inside it a retry is answered
  from Redis and never reaches the log). A ``MakePledge`` whose command id was already decided
  for *another* pledge id (or for another kind of command) within the horizon is not a retry
  but a reused Idempotency-Key whose API record was lost: it is refused, visibly, with
  ``idempotency_key_reused`` under a causation id of its own (``<command id>:reused-<16 hex of
  its fingerprint>``), so event ids stay unique and a redelivery of it yields nothing. The
  command id -> pledge id of every pledge decision is folded from the log for this, and
  forgotten with the command id. Forgetting a command id never allows a second effect: a
  pledge id is remembered for the campaign's life (below), cancelling a cancelled pledge or
  launching a launched campaign is refused, closing a closed one yields nothing - an older
  duplicate can at most add a refusal event.
* **Pledge ids.** A pledge id seen before - accepted, cancelled, or refused for a reason other
  than ``tenant_mismatch`` - yields no event, whatever the command id. Campaign ids are
  tenant-qualified (:mod:`schemas.tenancy`), so another tenant cannot even name this
  campaign's pledge ids.
* **Refusals of non-pledge commands** travel as ``PledgeRejected`` too (the contract's only
  refusal event; the API waits for an event caused by its command): a refused
  ``LaunchCampaign`` or ``CloseCampaign`` carries ``pledge_id = command_id``; a launch refusal
  has ``backer_id = creator_id`` and ``amount = goal``, reasons ``already_launched`` /
  ``deadline_in_past``. ``evolve`` records a refused pledge id only for the reasons a
  ``MakePledge`` alone can get (:data:`FINAL_PLEDGE_REFUSALS`), so these never poison a
  pledge id.
* **An unlaunched campaign's stream** holds the refusals of commands sent to it (a pledge gets
  ``campaign_not_found``, at seq 1, 2, ...): ``CampaignLaunched`` is seq 1 of every campaign
  that received no command before its launch, and otherwise the first event after those
  refusals. Consumers fold by seq and must not assume the launch is seq 1.
* **Cancelling** an unknown (or refused) pledge is ``pledge_not_found`` whatever the campaign's
  state, so that code never marks a pledge id as used.
* **Closing**: closing a closed (or never launched) campaign yields nothing;
  ``CloseCampaign(reason='deadline')`` before the deadline yields nothing (the processor's
  timer, :func:`deadline_close`, closes at the deadline); any ``CloseCampaign`` other than
  ``platform_suspended`` received at or after the deadline of a still-open campaign closes it
  as the deadline would (the outcome was fixed at the deadline); a close from another tenant
  is refused with ``tenant_mismatch``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import starmap
from typing import Any, Literal

from schemas.canonical import GENESIS_HASH, format_timestamp, to_utc
from schemas.commands import CancelPledge, CloseCampaign, LaunchCampaign, MakePledge
from schemas.construct import trusted_model
from schemas.envelope import Envelope, Stamped, stamp_chain
from schemas.events import (
    CampaignClosed,
    CampaignLaunched,
    CampaignTerms,
    CloseOutcome,
    CloseReason,
    Event,
    GoalReached,
    PledgeCancelled,
    PledgeMade,
    PledgeRejected,
    RejectionReason,
)
from schemas.money import Money

__all__ = [
    "DEDUP_HORIZON",
    "FINAL_PLEDGE_REFUSALS",
    "UNKNOWN_BACKER",
    "CampaignState",
    "Command",
    "OutOfOrderEvent",
    "PledgeRecord",
    "PledgeStatus",
    "Policy",
    "deadline_causation_id",
    "deadline_close",
    "decide",
    "decide_encoded",
    "decide_with_bodies",
    "evolve",
    "replay",
]

Command = LaunchCampaign | MakePledge | CancelPledge | CloseCampaign
PledgeStatus = Literal["active", "cancelled", "rejected"]
CampaignStatus = Literal["absent", "open", "closed"]

#: How long a campaign remembers a command id after its event (see the module docstring).
DEDUP_HORIZON = timedelta(days=7)

#: ``backer_id`` of a refusal that concerns no known backer (cancelling an unknown pledge).
UNKNOWN_BACKER = "unknown"
#: Currency of the zero amount carried by a refusal on a campaign with no terms yet.
_FALLBACK_CURRENCY = "EUR"

R = RejectionReason
#: Refusals that only a ``MakePledge`` can receive, and that make its pledge id final.
#: ``tenant_mismatch`` is left out on purpose (see the module docstring).
FINAL_PLEDGE_REFUSALS: frozenset[str] = frozenset(
    {
        R.CAMPAIGN_NOT_FOUND,
        R.CAMPAIGN_CLOSED,
        R.DEADLINE_PASSED,
        R.CURRENCY_MISMATCH,
        R.INVALID_AMOUNT,
        R.UNKNOWN_TIER,
        R.BELOW_TIER_MINIMUM,
        R.TIER_SOLD_OUT,
    }
)
_TERMS_FIELDS = tuple(CampaignTerms.model_fields)


class OutOfOrderEvent(ValueError):
    """``evolve`` was given an event that does not extend the state's chain (a caller bug)."""


@dataclass(slots=True)
class PledgeRecord:
    """What the campaign remembers of one pledge id."""

    status: PledgeStatus
    amount_minor: int
    tier_id: str | None
    backer_id: str


@dataclass(frozen=True)
class Policy:
    """Switchable business rules (from the service settings)."""

    #: Kickstarter's rule: in the last ``late_window`` before the deadline, refuse a
    #: cancellation that would take a funded total back below the goal.
    refuse_late_cancellation_below_goal: bool = True
    late_window: timedelta = timedelta(hours=24)


_DEFAULT_POLICY = Policy()


@dataclass(slots=True)
class CampaignState:
    """One campaign as folded from its ``campaign`` stream. Mutated in place by ``evolve``."""

    campaign_id: str
    seq: int = 0
    last_hash: str = GENESIS_HASH
    terms: CampaignLaunched | None = None
    status: CampaignStatus = "absent"
    outcome: CloseOutcome | None = None
    total_minor: int = 0
    pledge_count: int = 0
    goal_reached_at: datetime | None = None
    #: Every pledge id seen: accepted (active or cancelled) or finally refused.
    pledges: dict[str, PledgeRecord] = field(default_factory=dict)
    #: Active pledges per tier id (only tiers with a pledge appear).
    tier_used: dict[str, int] = field(default_factory=dict)
    #: Causation id -> ``occurred_at`` of its first event, oldest first, for the last
    #: :data:`DEDUP_HORIZON`: a command seen again within it yields nothing.
    processed: dict[str, datetime] = field(default_factory=dict)
    #: Command id -> pledge id of every pledge decision (``PledgeMade``/``PledgeRejected``),
    #: forgotten with its command id (:data:`DEDUP_HORIZON`).
    pledge_commands: dict[str, str] = field(default_factory=dict)
    #: ``tier_id -> (min_amount_minor, quantity_limit)``, derived from ``terms``.
    _tiers: dict[str, tuple[int, int | None]] = field(default_factory=dict, repr=False)
    #: ``terms``' tenant, deadline, currency and goal, read by every pledge decision (a slot
    #: is read several times faster than a field of the pydantic ``terms``).
    _tenant_id: str = field(default="", repr=False)
    _deadline: datetime = field(default=datetime.max.replace(tzinfo=UTC), repr=False)
    _currency: str = field(default="", repr=False)
    _goal_minor: int = field(default=0, repr=False)

    @classmethod
    def empty(cls, campaign_id: str) -> CampaignState:
        """The state of a campaign before any event."""
        return cls(campaign_id=campaign_id)

    @property
    def currency(self) -> str | None:
        """The campaign's currency once launched."""
        return None if self.terms is None else self.terms.goal.currency

    def to_snapshot(self) -> dict[str, Any]:
        """A JSON-safe dict (str/int/None/list/dict only) that :meth:`from_snapshot` restores."""
        return {
            "campaign_id": self.campaign_id,
            "seq": self.seq,
            "last_hash": self.last_hash,
            "terms": None if self.terms is None else self.terms.model_dump(mode="json"),
            "status": self.status,
            "outcome": self.outcome,
            "total_minor": self.total_minor,
            "pledge_count": self.pledge_count,
            "goal_reached_at": (
                None if self.goal_reached_at is None else format_timestamp(self.goal_reached_at)
            ),
            "pledges": {
                pid: [p.status, p.amount_minor, p.tier_id, p.backer_id]
                for pid, p in sorted(self.pledges.items())
            },
            "tier_used": dict(sorted(self.tier_used.items())),
            "processed": [[c, (at - _EPOCH) // _MICROSECOND] for c, at in self.processed.items()],
            "pledge_commands": dict(sorted(self.pledge_commands.items())),
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> CampaignState:
        """Rebuild the state written by :meth:`to_snapshot` (after a JSON round trip)."""
        terms = data["terms"]
        reached = data["goal_reached_at"]
        pledges: dict[str, list[Any]] = data["pledges"]
        state = cls(
            campaign_id=data["campaign_id"],
            seq=data["seq"],
            last_hash=data["last_hash"],
            terms=None if terms is None else CampaignLaunched.model_validate(terms),
            status=data["status"],
            outcome=data["outcome"],
            total_minor=data["total_minor"],
            pledge_count=data["pledge_count"],
            goal_reached_at=None if reached is None else to_utc(datetime.fromisoformat(reached)),
            # starmap: the records are built without a Python-level unpack per pledge (a
            # third of a snapshot recovery's CPU was this line).
            pledges=dict(zip(pledges, starmap(PledgeRecord, pledges.values()), strict=True)),
            tier_used=dict(data["tier_used"]),
            processed=_processed(data["processed"]),
            # Snapshots from before the reuse check: reuses of older command ids go unnoticed.
            pledge_commands=dict(data.get("pledge_commands", {})),
        )
        if state.terms is not None:
            _launched(state, state.terms)
        return state


def _processed(entries: list[Any]) -> dict[str, datetime]:
    """The ``processed`` map of a snapshot: ``[[id, epoch µs], ...]``; a snapshot written
    before the horizon existed holds bare ids, kept as seen at the epoch (the next event
    forgets them: a duplicate that old can at most add a refusal, see the module docstring)."""
    out: dict[str, datetime] = {}
    for entry in entries:
        if isinstance(entry, str):
            out[entry] = _EPOCH
        else:
            out[entry[0]] = _EPOCH + entry[1] * _MICROSECOND
    return out


_EPOCH = datetime.fromtimestamp(0, UTC)
_MICROSECOND = timedelta(microseconds=1)


def _launched(state: CampaignState, terms: CampaignLaunched) -> None:
    """Set ``terms`` and what is derived from them."""
    state.terms = terms
    state._tiers = {t.tier_id: (t.min_amount_minor, t.quantity_limit) for t in terms.tiers}
    state._tenant_id = terms.tenant_id
    state._deadline = terms.deadline
    state._currency = terms.goal.currency
    state._goal_minor = terms.goal.amount_minor


# --- decide --------------------------------------------------------------------------------


def decide(
    state: CampaignState, command: Command, now: datetime, policy: Policy = _DEFAULT_POLICY
) -> list[Envelope]:
    """The events ``command`` causes on ``state`` at ``now``, stamped and chained.

    Pure: ``state`` is not changed. Events get ``seq = state.seq + 1, ...``, chain from
    ``state.last_hash``, ``causation_id = command.command_id``, ``correlation_id =
    command.correlation_id``, ``index`` = position in the decision, ``occurred_at = now``.
    An empty list means the command changes nothing (a duplicate, or nothing to do).
    """
    return [envelope for envelope, _ in decide_with_bodies(state, command, now, policy)]


def decide_with_bodies(
    state: CampaignState, command: Command, now: datetime, policy: Policy = _DEFAULT_POLICY
) -> list[tuple[Envelope, dict[str, Any]]]:
    """:func:`decide`, also returning each envelope's canonical dict (with ``hash``) so the
    processor encodes with ``schemas.canonical.dumps(body)`` without a second dump."""
    return [(envelope, body) for envelope, body, _ in decide_encoded(state, command, now, policy)]


def decide_encoded(
    state: CampaignState, command: Command, now: datetime, policy: Policy = _DEFAULT_POLICY
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
        events = _decide_pledge(state, command, now)
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
    return causation_id, _pledge_refused(command, R.IDEMPOTENCY_KEY_REUSED, detail)


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
            return _decide_pledge(state, command, now)
        case CancelPledge():
            return _decide_cancel(state, command, now, policy)
        case LaunchCampaign():
            return _decide_launch(state, command, now)
        case CloseCampaign():
            return _decide_close(state, command, now)
    raise TypeError(f"not a command: {type(command).__name__}")  # pragma: no cover


def _pledge_refused(command: MakePledge, reason: RejectionReason, detail: str) -> list[Event]:
    return [
        PledgeRejected(
            pledge_id=command.pledge_id,
            backer_id=command.backer_id,
            amount=command.amount,
            reason=reason,
            detail=detail,
        )
    ]


def _decide_pledge(state: CampaignState, command: MakePledge, now: datetime) -> list[Event]:
    # The hot path: the command's fields are read from its __dict__ and the terms' from the
    # state's slots (pydantic models define __getattr__, which slows every attribute read).
    fields = command.__dict__
    if fields["pledge_id"] in state.pledges:
        return []
    if state.terms is None:
        return _pledge_refused(
            command, R.CAMPAIGN_NOT_FOUND, f"campaign {state.campaign_id} was never launched"
        )
    if fields["tenant_id"] != state._tenant_id:
        return _pledge_refused(command, R.TENANT_MISMATCH, "the campaign belongs to another tenant")
    if state.status != "open":
        return _pledge_refused(command, R.CAMPAIGN_CLOSED, "the campaign is closed")
    if now >= state._deadline:
        return _pledge_refused(
            command,
            R.DEADLINE_PASSED,
            f"the campaign's deadline {format_timestamp(state._deadline)} has passed",
        )
    amount = fields["amount"].__dict__
    currency = state._currency
    if amount["currency"] != currency:
        return _pledge_refused(
            command,
            R.CURRENCY_MISMATCH,
            f"the campaign takes {currency}, not {amount['currency']}",
        )
    minor: int = amount["amount_minor"]
    if minor <= 0:
        return _pledge_refused(command, R.INVALID_AMOUNT, "a pledge amount must be positive")
    tier_id = fields["tier_id"]
    if tier_id is not None:
        tier = state._tiers.get(tier_id)
        if tier is None:
            return _pledge_refused(command, R.UNKNOWN_TIER, f"the campaign has no tier {tier_id!r}")
        min_minor, limit = tier
        if minor < min_minor:
            return _pledge_refused(
                command,
                R.BELOW_TIER_MINIMUM,
                f"tier {tier_id!r} needs at least "
                f"{Money.model_construct(amount_minor=min_minor, currency=currency)}",
            )
        if limit is not None and state.tier_used.get(tier_id, 0) >= limit:
            return _pledge_refused(
                command, R.TIER_SOLD_OUT, f"all {limit} of tier {tier_id!r} are taken"
            )
    events: list[Event] = [_pledge_made(command, fields)]
    total = state.total_minor + minor
    if state.goal_reached_at is None and total >= state._goal_minor:
        events.append(
            GoalReached(
                total=Money.model_construct(amount_minor=total, currency=currency),
                pledge_count=state.pledge_count + 1,
            )
        )
    return events


_PLEDGE_MADE_FIELDS = frozenset(PledgeMade.model_fields)


def _pledge_made(command: MakePledge, fields: dict[str, Any] | None = None) -> PledgeMade:
    """``PledgeMade`` of an accepted ``command`` (whose ``__dict__`` is ``fields``) without
    validating it again: every field comes from the validated command, whose fields carry the
    same constraints (the hot path)."""
    if fields is None:
        fields = command.__dict__
    payment_token = fields["payment_token"]
    locale = fields["locale"]
    if (payment_token is not None and type(payment_token) is not str) or (
        locale is not None and type(locale) is not str
    ):
        # The command's lax ``str`` may hold what the event's StrictStr refuses: validate.
        return PledgeMade(
            pledge_id=command.pledge_id,
            backer_id=command.backer_id,
            amount=command.amount,
            tier_id=command.tier_id,
            payment_token=payment_token,
            locale=locale,
        )
    return trusted_model(
        PledgeMade,
        {
            "pledge_id": fields["pledge_id"],
            "backer_id": fields["backer_id"],
            "amount": fields["amount"],
            "tier_id": fields["tier_id"],
            "payment_token": payment_token,
            "locale": locale,
        },
        _PLEDGE_MADE_FIELDS,
    )


def _cancel_refused(
    state: CampaignState,
    command: CancelPledge,
    record: PledgeRecord | None,
    reason: RejectionReason,
    detail: str,
) -> list[Event]:
    currency = state.currency or _FALLBACK_CURRENCY
    return [
        PledgeRejected(
            pledge_id=command.pledge_id,
            backer_id=UNKNOWN_BACKER if record is None else record.backer_id,
            amount=Money.model_construct(
                amount_minor=0 if record is None else record.amount_minor, currency=currency
            ),
            reason=reason,
            detail=detail,
        )
    ]


def _decide_cancel(
    state: CampaignState, command: CancelPledge, now: datetime, policy: Policy
) -> list[Event]:
    record = state.pledges.get(command.pledge_id)
    terms = state.terms
    # Unknown first, whatever else is wrong: this reason never marks the pledge id as used.
    if record is None or record.status == "rejected" or terms is None:
        return _cancel_refused(
            state, command, None, R.PLEDGE_NOT_FOUND, f"no accepted pledge {command.pledge_id}"
        )
    if command.tenant_id != terms.tenant_id:
        return _cancel_refused(
            state, command, record, R.TENANT_MISMATCH, "the campaign belongs to another tenant"
        )
    if state.status != "open":
        return _cancel_refused(state, command, record, R.CAMPAIGN_CLOSED, "the campaign is closed")
    if record.status != "active":
        return _cancel_refused(
            state, command, record, R.PLEDGE_NOT_ACTIVE, "the pledge was already cancelled"
        )
    if now >= terms.deadline:
        return _cancel_refused(
            state, command, record, R.DEADLINE_PASSED, "the campaign's deadline has passed"
        )
    goal_minor = terms.goal.amount_minor
    if (
        policy.refuse_late_cancellation_below_goal
        and terms.deadline - now < policy.late_window
        and state.total_minor >= goal_minor
        and state.total_minor - record.amount_minor < goal_minor
    ):
        return _cancel_refused(
            state,
            command,
            record,
            R.CANCELLATION_WINDOW_CLOSED,
            "in the last hours before the deadline a cancellation may not take the total "
            "below the goal",
        )
    return [
        PledgeCancelled(
            pledge_id=command.pledge_id,
            amount=Money.model_construct(
                amount_minor=record.amount_minor, currency=terms.goal.currency
            ),
            tier_id=record.tier_id,
            reason=command.reason,
        )
    ]


def _decide_launch(state: CampaignState, command: LaunchCampaign, now: datetime) -> list[Event]:
    def refused(reason: RejectionReason, detail: str) -> list[Event]:
        return [
            PledgeRejected(
                pledge_id=command.command_id,
                backer_id=command.creator_id,
                amount=command.goal,
                reason=reason,
                detail=detail,
            )
        ]

    if state.status != "absent":
        return refused(R.ALREADY_LAUNCHED, f"campaign {state.campaign_id} was already launched")
    if command.deadline <= now:
        return refused(
            R.DEADLINE_IN_PAST,
            f"the deadline {format_timestamp(command.deadline)} is not in the future",
        )
    # Goal > 0, unique tier ids and the coproduction terms are checked by CampaignTerms.
    return [CampaignLaunched(**{name: getattr(command, name) for name in _TERMS_FIELDS})]


def _decide_close(state: CampaignState, command: CloseCampaign, now: datetime) -> list[Event]:
    terms = state.terms
    if terms is None or state.status != "open":
        return []
    if command.tenant_id != terms.tenant_id:
        return [
            PledgeRejected(
                pledge_id=command.command_id,
                backer_id=command.tenant_id,
                amount=Money.model_construct(amount_minor=0, currency=terms.goal.currency),
                reason=R.TENANT_MISMATCH,
                detail="the campaign belongs to another tenant",
            )
        ]
    reason: CloseReason = command.reason
    if now >= terms.deadline and reason != "platform_suspended":
        reason = "deadline"
    elif reason == "deadline":
        return []  # before the deadline: the timer closes it when the time comes
    return [_closed(state, terms, reason)]


def _closed(state: CampaignState, terms: CampaignLaunched, reason: CloseReason) -> CampaignClosed:
    outcome: CloseOutcome
    if reason != "deadline":
        outcome = "cancelled"
    elif state.total_minor >= terms.goal.amount_minor or (
        terms.funding_model == "keep_it_all" and state.pledge_count > 0
    ):
        outcome = "funded"
    else:
        outcome = "failed"
    return CampaignClosed(
        outcome=outcome,
        reason=reason,
        total=Money.model_construct(amount_minor=state.total_minor, currency=terms.goal.currency),
        accepted_pledges=state.pledge_count,
        last_seq=state.seq + 1,
    )


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
    stamped = _stamp_all(
        state, [_closed(state, terms, "deadline")], now, causation_id, causation_id
    )
    return [envelope for envelope, _, _ in stamped]


# --- evolve --------------------------------------------------------------------------------


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
            _launched(state, payload)
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
