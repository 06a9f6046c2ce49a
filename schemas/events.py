"""Frozen payload models for every event, grouped by the stream (single writer) that owns them.

Each model carries its name, current schema version and stream as class variables; the
envelope (``schemas.envelope``) holds them on the wire. Events are facts: they are validated
for shape, never re-decided.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

from schemas.canonical import UtcDatetime
from schemas.ledger import LedgerLine, capture_lines, refund_lines, settled_lines
from schemas.money import BasisPoints, FeeSchedule, Money

__all__ = [
    "EVENT_TYPES",
    "AnyEvent",
    "CampaignClosed",
    "CampaignEvent",
    "CampaignKind",
    "CampaignLaunched",
    "CampaignSettled",
    "CampaignTerms",
    "CloseOutcome",
    "CloseReason",
    "Code",
    "Count",
    "Event",
    "FundingModel",
    "GoalReached",
    "Ident",
    "NotificationFailed",
    "NotificationSent",
    "NotifyEvent",
    "PaymentMethodUpdated",
    "PledgeCancelled",
    "PledgeCaptureFailed",
    "PledgeCaptured",
    "PledgeMade",
    "PledgeRefunded",
    "PledgeRejected",
    "PledgeReleased",
    "RefundRequested",
    "RejectionReason",
    "RevenueShare",
    "RevenueShareLine",
    "RevenueShared",
    "SettlementCommandRejected",
    "SettlementEvent",
    "SettlementMode",
    "Stream",
    "Tier",
    "current_version",
    "event_model",
]

Stream = Literal["campaign", "settlement", "notify"]
FundingModel = Literal["all_or_nothing", "keep_it_all"]
SettlementMode = Literal["authorize_then_capture", "charge_then_refund"]
CampaignKind = Literal["reward", "donation", "coproduction"]
CloseOutcome = Literal["funded", "failed", "cancelled"]
CloseReason = Literal["deadline", "creator_cancelled", "platform_suspended"]

#: An opaque identifier chosen by a platform or derived by us (non-empty, bounded).
Ident = Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]
#: A stable machine-readable snake_case code (reasons, templates).
Code = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
#: A non-negative integer counter.
Count = Annotated[StrictInt, Field(ge=0)]
_Text = Annotated[StrictStr, StringConstraints(max_length=2000)]


class RejectionReason(StrEnum):
    """Why the processor refused a command; stable codes that clients and dashboards key on."""

    CAMPAIGN_NOT_FOUND = "campaign_not_found"
    CAMPAIGN_CLOSED = "campaign_closed"
    DEADLINE_PASSED = "deadline_passed"
    CURRENCY_MISMATCH = "currency_mismatch"
    BELOW_TIER_MINIMUM = "below_tier_minimum"
    UNKNOWN_TIER = "unknown_tier"
    TIER_SOLD_OUT = "tier_sold_out"
    DUPLICATE_PLEDGE = "duplicate_pledge"
    INVALID_AMOUNT = "invalid_amount"
    PLEDGE_NOT_FOUND = "pledge_not_found"
    PLEDGE_NOT_ACTIVE = "pledge_not_active"
    CANCELLATION_WINDOW_CLOSED = "cancellation_window_closed"
    ALREADY_LAUNCHED = "already_launched"
    DEADLINE_IN_PAST = "deadline_in_past"
    TENANT_MISMATCH = "tenant_mismatch"
    NOT_AUTHORIZED = "not_authorized"
    #: The command id (Idempotency-Key) was already decided for another request.
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"


class Event(BaseModel):
    """Base of every event payload: frozen, no unknown fields, integer-only numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int]
    stream: ClassVar[Stream]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # The event type is the wire name and the topic name: keep it equal to the class name.
        if cls.__dict__.get("event_type") != cls.__name__:
            raise TypeError(f"{cls.__name__}.event_type must be {cls.__name__!r}")
        EVENT_TYPES[cls.__name__] = cls


#: Every event type by name (its wire ``event_type``), filled as the models are defined.
EVENT_TYPES: dict[str, type[Event]] = {}


# --- campaign stream (written only by the pledge processor) --------------------------------


class Tier(BaseModel):
    """A reward level: a minimum pledge and an optional limited quantity (never oversold)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tier_id: Ident
    title: Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]
    min_amount_minor: Annotated[StrictInt, Field(ge=0)]
    quantity_limit: Annotated[StrictInt, Field(ge=1)] | None = None


class RevenueShare(BaseModel):
    """Coproduction terms: backers share ``share_bps`` of revenue for ``duration_months``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    share_bps: Annotated[StrictInt, Field(ge=1, le=10_000)]
    duration_months: Annotated[StrictInt, Field(ge=1, le=600)]


class CampaignTerms(BaseModel):
    """The launch terms shared by the ``LaunchCampaign`` command and ``CampaignLaunched``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: Ident
    creator_id: Ident
    title: Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]
    goal: Money
    deadline: UtcDatetime
    funding_model: FundingModel
    settlement_mode: SettlementMode
    commission_bps: BasisPoints
    fee_schedule: FeeSchedule = FeeSchedule()
    tiers: tuple[Tier, ...] = ()
    kind: CampaignKind = "reward"
    revenue_share: RevenueShare | None = None

    @model_validator(mode="after")
    def _consistent_terms(self) -> CampaignTerms:
        if self.goal.amount_minor <= 0:
            raise ValueError("goal.amount_minor must be > 0")
        if (self.kind == "coproduction") != (self.revenue_share is not None):
            raise ValueError("revenue_share is required for kind='coproduction' and only then")
        tier_ids = [t.tier_id for t in self.tiers]
        if len(set(tier_ids)) != len(tier_ids):
            raise ValueError("tiers: tier_id values must be unique")
        return self


class CampaignLaunched(CampaignTerms, Event):
    """A campaign opened for pledges with these terms (first event of its stream)."""

    event_type: ClassVar[str] = "CampaignLaunched"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "campaign"


class PledgeMade(Event):
    """A pledge was accepted. v2 added ``tier_id`` (v1 pledges are upcast with no tier)."""

    event_type: ClassVar[str] = "PledgeMade"
    schema_version: ClassVar[int] = 2
    stream: ClassVar[Stream] = "campaign"

    pledge_id: Ident
    backer_id: Ident
    amount: Money
    tier_id: Ident | None = None
    payment_token: Annotated[StrictStr, StringConstraints(max_length=500)] | None = None
    locale: Annotated[StrictStr, StringConstraints(max_length=35)] | None = None


class PledgeRejected(Event):
    """A pledge (or cancellation) was refused; ``reason`` is a stable code, ``detail`` prose."""

    event_type: ClassVar[str] = "PledgeRejected"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "campaign"

    pledge_id: Ident
    backer_id: Ident
    amount: Money
    reason: RejectionReason
    detail: _Text = ""


class PledgeCancelled(Event):
    """An accepted pledge was withdrawn (backer request, fraud removal, ...)."""

    event_type: ClassVar[str] = "PledgeCancelled"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "campaign"

    pledge_id: Ident
    amount: Money
    tier_id: Ident | None = None
    reason: Code


class GoalReached(Event):
    """The accepted total first crossed the goal (not the same as ``funded``: it can drop)."""

    event_type: ClassVar[str] = "GoalReached"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "campaign"

    total: Money
    pledge_count: Count


class CampaignClosed(Event):
    """The campaign stopped taking pledges; carries final counts so consumers can prove
    they have every event before they settle."""

    event_type: ClassVar[str] = "CampaignClosed"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "campaign"

    outcome: CloseOutcome
    reason: CloseReason
    total: Money
    accepted_pledges: Count
    last_seq: Annotated[StrictInt, Field(ge=1)]


# --- settlement stream ---------------------------------------------------------------------


def _minor_of(value: Any) -> int:
    """``amount_minor`` of a Money or of its dict form (before-validators see either)."""
    if isinstance(value, Money):
        return value.amount_minor
    if isinstance(value, dict) and type(value.get("amount_minor")) is int:
        return int(value["amount_minor"])
    raise ValueError("amount_minor: an integer is required")


def _with_ledger(data: Any, derive: Any) -> Any:
    # An event built without ``ledger`` gets the chart's lines (schemas.ledger); one that
    # carries lines must carry exactly those (checked after validation).
    if isinstance(data, dict) and "ledger" not in data:
        try:
            return {**data, "ledger": derive(data)}
        except (KeyError, ValueError):
            return data  # the field validators name what is missing or wrong
    return data


def _check_ledger(ledger: tuple[LedgerLine, ...], wanted: tuple[LedgerLine, ...]) -> None:
    if ledger != wanted:
        raise ValueError("ledger: the lines are not the ones the amounts post (schemas.ledger)")


class PledgeCaptured(Event):
    """Money was collected at the gateway for a pledge (``fee`` = processing fee charged).

    v2 added ``ledger`` (v1 captures are upcast with the lines their amounts post)."""

    event_type: ClassVar[str] = "PledgeCaptured"
    schema_version: ClassVar[int] = 2
    stream: ClassVar[Stream] = "settlement"

    pledge_id: Ident
    backer_id: Ident
    amount: Money
    fee: Money
    gateway_ref: Ident
    attempt: Annotated[StrictInt, Field(ge=1)] = 1
    ledger: tuple[LedgerLine, ...]

    @model_validator(mode="before")
    @classmethod
    def _default_ledger(cls, data: Any) -> Any:
        return _with_ledger(
            data, lambda d: capture_lines(_minor_of(d["amount"]), _minor_of(d["fee"]))
        )

    @model_validator(mode="after")
    def _consistent(self) -> PledgeCaptured:
        if self.fee.currency != self.amount.currency:
            raise ValueError("fee: must be in the amount's currency")
        _check_ledger(self.ledger, capture_lines(self.amount.amount_minor, self.fee.amount_minor))
        return self


class PledgeCaptureFailed(Event):
    """A capture failed; the backer may fix the payment until ``retry_until``."""

    event_type: ClassVar[str] = "PledgeCaptureFailed"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "settlement"

    pledge_id: Ident
    backer_id: Ident
    amount: Money
    reason: Code
    detail: _Text = ""
    attempt: Annotated[StrictInt, Field(ge=1)] = 1
    retry_until: UtcDatetime | None = None


class PledgeReleased(Event):
    """An authorization was released without charging (failed campaign, dropped pledge)."""

    event_type: ClassVar[str] = "PledgeReleased"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "settlement"

    pledge_id: Ident
    amount: Money
    reason: Code


class PledgeRefunded(Event):
    """A captured pledge was paid back; ``fee_refunded`` records who absorbed the fee.

    ``amount`` may be less than the pledge (a partial refund). v2 added ``ledger``."""

    event_type: ClassVar[str] = "PledgeRefunded"
    schema_version: ClassVar[int] = 2
    stream: ClassVar[Stream] = "settlement"

    pledge_id: Ident
    backer_id: Ident
    amount: Money
    fee_refunded: Money
    reason: Code
    gateway_ref: Ident
    ledger: tuple[LedgerLine, ...]

    @model_validator(mode="before")
    @classmethod
    def _default_ledger(cls, data: Any) -> Any:
        return _with_ledger(
            data, lambda d: refund_lines(_minor_of(d["amount"]), _minor_of(d["fee_refunded"]))
        )

    @model_validator(mode="after")
    def _consistent(self) -> PledgeRefunded:
        if self.fee_refunded.currency != self.amount.currency:
            raise ValueError("fee_refunded: must be in the amount's currency")
        _check_ledger(
            self.ledger, refund_lines(self.amount.amount_minor, self.fee_refunded.amount_minor)
        )
        return self


class PaymentMethodUpdated(Event):
    """A backer replaced the payment method of a pledge whose capture failed; the next retry
    uses the pledge's token in the payment-token store (where the API put the new one).

    v2 dropped ``payment_token``: a token never enters the immutable log (v1 events are upcast
    without it; their retry uses the store's token)."""

    event_type: ClassVar[str] = "PaymentMethodUpdated"
    schema_version: ClassVar[int] = 2
    stream: ClassVar[Stream] = "settlement"

    pledge_id: Ident


class RefundRequested(Event):
    """A refund was asked for (the record of who refunded and why); ``PledgeRefunded``
    follows once the gateway has paid it back."""

    event_type: ClassVar[str] = "RefundRequested"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "settlement"

    refund_id: Ident
    pledge_id: Ident
    amount: Money
    reason: Code
    requested_by: Ident


class RevenueShareLine(BaseModel):
    """One backer's part of a revenue report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pledge_id: Ident
    backer_id: Ident
    amount_minor: Count


class RevenueShared(Event):
    """A coproduction campaign's revenue for ``period``: ``shared`` (``share_bps`` of
    ``revenue``) split over the captured pledges pro rata, largest remainder, summing exactly."""

    event_type: ClassVar[str] = "RevenueShared"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "settlement"

    period: Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]{4}-(Q[1-4]|[0-9]{2})$")]
    revenue: Money
    shared: Money
    shares: tuple[RevenueShareLine, ...]

    @model_validator(mode="after")
    def _sums(self) -> RevenueShared:
        if self.shared.currency != self.revenue.currency:
            raise ValueError("shared: must be in the revenue's currency")
        if sum(line.amount_minor for line in self.shares) != self.shared.amount_minor:
            raise ValueError("shares: must sum exactly to shared.amount_minor")
        return self


class SettlementCommandRejected(Event):
    """A settlement command (refund, payment-method fix, revenue report) was refused."""

    event_type: ClassVar[str] = "SettlementCommandRejected"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "settlement"

    command_id: Ident
    command_type: Ident
    pledge_id: Ident | None = None
    reason: Code
    detail: _Text = ""


class CampaignSettled(Event):
    """Final settlement: ``payout = gross - commission - fees`` and a balanced ledger.

    ``ledger_debits_minor``/``ledger_credits_minor`` are the statement's totals (collected;
    payout + commission + fees). v2 added ``ledger``, this event's own postings (the
    commission)."""

    event_type: ClassVar[str] = "CampaignSettled"
    schema_version: ClassVar[int] = 2
    stream: ClassVar[Stream] = "settlement"

    outcome: CloseOutcome
    gross: Money
    commission: Money
    fees: Money
    payout: Money
    captured_count: Count
    failed_count: Count
    refunded_count: Count
    ledger_debits_minor: Count
    ledger_credits_minor: Count
    ledger: tuple[LedgerLine, ...]

    @model_validator(mode="before")
    @classmethod
    def _default_ledger(cls, data: Any) -> Any:
        return _with_ledger(data, lambda d: settled_lines(_minor_of(d["commission"])))

    @model_validator(mode="after")
    def _one_currency(self) -> CampaignSettled:
        amounts = (self.gross, self.commission, self.fees, self.payout)
        if len({m.currency for m in amounts}) != 1:
            raise ValueError("gross, commission, fees and payout must share one currency")
        _check_ledger(self.ledger, settled_lines(self.commission.amount_minor))
        return self


# --- notify stream -------------------------------------------------------------------------

Channel = Literal["webhook", "email"]
RecipientKind = Literal["backer", "creator", "platform"]


class NotificationSent(Event):
    """A webhook or e-mail was delivered (exactly-once effect keyed by ``notification_id``)."""

    event_type: ClassVar[str] = "NotificationSent"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "notify"

    notification_id: Ident
    cause_event_id: UUID
    channel: Channel
    recipient_kind: RecipientKind
    recipient: Ident
    template: Code
    attempt: Annotated[StrictInt, Field(ge=1)] = 1


class NotificationFailed(Event):
    """A delivery attempt failed; ``will_retry`` says whether another attempt follows."""

    event_type: ClassVar[str] = "NotificationFailed"
    schema_version: ClassVar[int] = 1
    stream: ClassVar[Stream] = "notify"

    notification_id: Ident
    cause_event_id: UUID
    channel: Channel
    recipient_kind: RecipientKind
    recipient: Ident
    template: Code
    attempt: Annotated[StrictInt, Field(ge=1)] = 1
    reason: Code
    detail: _Text = ""
    will_retry: StrictBool = False


CampaignEvent = (
    CampaignLaunched | PledgeMade | PledgeRejected | PledgeCancelled | GoalReached | CampaignClosed
)
SettlementEvent = (
    PledgeCaptured
    | PledgeCaptureFailed
    | PledgeReleased
    | PledgeRefunded
    | CampaignSettled
    | PaymentMethodUpdated
    | RefundRequested
    | RevenueShared
    | SettlementCommandRejected
)
NotifyEvent = NotificationSent | NotificationFailed
#: Every concrete event payload: use with ``match`` so a missing case is visible to mypy.
AnyEvent = CampaignEvent | SettlementEvent | NotifyEvent


def event_model(event_type: str) -> type[Event]:
    """The payload model for ``event_type``; KeyError for an unknown type."""
    return EVENT_TYPES[event_type]


def current_version(event_type: str) -> int:
    """The schema version this code writes (and upcasts older versions to) for a type."""
    return EVENT_TYPES[event_type].schema_version
