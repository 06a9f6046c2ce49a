"""A campaign's state as folded from its ``campaign`` stream, and the domain's vocabulary.

:class:`CampaignState` (mutated in place by :func:`~services.pledge.domain.fold.evolve`,
with a JSON-safe snapshot), :class:`PledgeRecord`, :class:`Policy`, the command union, and what
the rules and the fold share: :data:`DEDUP_HORIZON`, :data:`FINAL_PLEDGE_REFUSALS`, and
:func:`set_terms`, the one writer of the state's private slots (read by the hot pledge rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import starmap
from typing import Any, Literal

from schemas.canonical import GENESIS_HASH, format_timestamp, to_utc
from schemas.commands import CancelPledge, CloseCampaign, LaunchCampaign, MakePledge
from schemas.events import (
    CampaignLaunched,
    CloseOutcome,
    RejectionReason,
)

__all__ = [
    "DEDUP_HORIZON",
    "DEFAULT_POLICY",
    "FINAL_PLEDGE_REFUSALS",
    "UNKNOWN_BACKER",
    "CampaignState",
    "CampaignStatus",
    "Command",
    "OutOfOrderEvent",
    "PledgeRecord",
    "PledgeStatus",
    "Policy",
    "set_terms",
]

Command = LaunchCampaign | MakePledge | CancelPledge | CloseCampaign
PledgeStatus = Literal["active", "cancelled", "rejected"]
CampaignStatus = Literal["absent", "open", "closed"]

#: How long a campaign remembers a command id after its event (see the module docstring).
DEDUP_HORIZON = timedelta(days=7)

#: ``backer_id`` of a refusal that concerns no known backer (cancelling an unknown pledge).
UNKNOWN_BACKER = "unknown"
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


#: The rules as the service settings default them.
DEFAULT_POLICY = Policy()


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
            set_terms(state, state.terms)
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


def set_terms(state: CampaignState, terms: CampaignLaunched) -> None:
    """Set ``terms`` and the private slots derived from them (the fold and a snapshot
    restore both call it, so live and restored states read the same slots)."""
    state.terms = terms
    state._tiers = {t.tier_id: (t.min_amount_minor, t.quantity_limit) for t in terms.tiers}
    state._tenant_id = terms.tenant_id
    state._deadline = terms.deadline
    state._currency = terms.goal.currency
    state._goal_minor = terms.goal.amount_minor
