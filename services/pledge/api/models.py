"""Request and response bodies of the ingest API: the public wire contract.

Strict on purpose: integers only for amounts (a float, a string or a bool is refused), amounts
> 0, ISO 4217 codes Pledgeflow knows, identifiers of a fixed alphabet, unknown fields refused,
deadlines in the future. Every refusal names its field (see ``problems.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas.events import CampaignKind, FundingModel, RevenueShare, SettlementMode
from schemas.money import FeeSchedule
from schemas.pledge_fields import (
    CURRENCIES,
    ID_PATTERN,
    MAX_AMOUNT_MINOR,
    Currency,
    Id,
    Locale,
    PositiveAmount,
    Token,
)
from services.settlement.api_models import PaymentView

__all__ = [
    "CURRENCIES",
    "ID_PATTERN",
    "MAX_AMOUNT_MINOR",
    "BatchItem",
    "BatchItemResult",
    "BatchRequest",
    "BatchResponse",
    "CampaignAccepted",
    "CampaignDecided",
    "CampaignPage",
    "CampaignView",
    "CancelAccepted",
    "CancelDecided",
    "CancelRequest",
    "CloseAccepted",
    "CloseDecided",
    "CloseRequest",
    "EventPage",
    "EventView",
    "FieldError",
    "LaunchRequest",
    "MoneyBody",
    "PledgeAccepted",
    "PledgeDecided",
    "PledgePage",
    "PledgeRequest",
    "PledgeView",
    "Problem",
    "TierBody",
    "TierView",
]

# The pledge fields' types and rules live in ``schemas.pledge_fields`` (one place, shared with
# the hot routes' plain check); the bodies below compose them.
Title = Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]
Code = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MoneyBody(_Body):
    """Integer minor units of one currency: ``{"amount_minor": 2500, "currency": "EUR"}``."""

    amount_minor: PositiveAmount
    currency: Currency


class TierBody(_Body):
    """A reward tier offered at launch."""

    tier_id: Id
    title: Title
    min_amount_minor: Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT_MINOR)]
    quantity_limit: Annotated[StrictInt, Field(ge=1, le=10**9)] | None = None


class LaunchRequest(_Body):
    """``POST /v1/campaigns``: the campaign's terms. ``campaign_id`` is generated when absent
    (derived from the Idempotency-Key, so a retry gets the same id)."""

    campaign_id: Id | None = None
    title: Title
    creator_id: Id
    goal: MoneyBody
    deadline: AwareDatetime = Field(
        description="RFC 3339 with a UTC offset; must be in the future."
    )
    funding_model: FundingModel
    settlement_mode: SettlementMode = "authorize_then_capture"
    kind: CampaignKind = "reward"
    commission_bps: Annotated[StrictInt, Field(ge=0, le=10_000)] = Field(
        default=500, description="Platform commission in basis points (default 5 %)."
    )
    fee_schedule: FeeSchedule | None = Field(
        default=None,
        description="Payment fee schedule; default: Kickstarter's card fees in the goal currency.",
    )
    tiers: Annotated[list[TierBody], Field(max_length=100)] = []
    revenue_share: RevenueShare | None = None

    @field_validator("deadline")
    @classmethod
    def _in_future(cls, value: datetime) -> datetime:
        if value <= datetime.now(UTC):
            raise ValueError("deadline must be in the future")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LaunchRequest:
        ids = [tier.tier_id for tier in self.tiers]
        if len(set(ids)) != len(ids):
            raise ValueError("tiers: tier_id values must be unique")
        if (self.kind == "coproduction") != (self.revenue_share is not None):
            raise ValueError("revenue_share: required for kind 'coproduction' and only then")
        return self


class PledgeRequest(_Body):
    """``POST /v1/campaigns/{campaign_id}/pledges``. ``pledge_id`` is generated when absent
    (derived from the Idempotency-Key)."""

    pledge_id: Id | None = None
    backer_id: Id
    amount_minor: PositiveAmount
    currency: Currency
    tier_id: Id | None = None
    payment_token: Token | None = None
    locale: Locale | None = None


class BatchItem(PledgeRequest):
    """One pledge of a batch: the pledge fields plus its campaign."""

    campaign_id: Id


class BatchRequest(_Body):
    """``POST /v1/pledges/batch``: 1 to 1,000 pledges, each checked and answered on its own."""

    pledges: Annotated[list[BatchItem], Field(min_length=1, max_length=1000)]


class CancelRequest(_Body):
    """Optional body of a cancellation: a snake_case reason code."""

    reason: Code = "backer_request"


class CloseRequest(_Body):
    """Close a campaign early: its creator cancels it, or the platform suspends it."""

    reason: Literal["creator_cancelled", "platform_suspended"]


# --- responses ---------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PledgeAccepted(_Out):
    """202: the command is durably in Kafka; the processor has not decided yet."""

    pledge_id: str
    campaign_id: str
    status: Literal["pending"] = "pending"
    status_url: str


class PledgeDecided(_Out):
    """201 (``Prefer: wait``): the processor accepted the pledge at ``seq``."""

    pledge_id: str
    campaign_id: str
    status: Literal["accepted"] = "accepted"
    seq: int


class CampaignAccepted(_Out):
    """202: the launch command is durably in Kafka."""

    campaign_id: str
    status: Literal["pending"] = "pending"
    status_url: str


class CampaignDecided(_Out):
    """201 (``Prefer: wait``): the campaign is open (its ``CampaignLaunched`` is at ``seq``)."""

    campaign_id: str
    status: Literal["open"] = "open"
    seq: int


class CancelAccepted(_Out):
    """202: the cancellation command is durably in Kafka."""

    pledge_id: str
    campaign_id: str
    status: Literal["pending"] = "pending"
    status_url: str


class CancelDecided(_Out):
    """200 (``Prefer: wait``): the pledge is cancelled."""

    pledge_id: str
    campaign_id: str
    status: Literal["cancelled"] = "cancelled"
    seq: int


class CloseAccepted(_Out):
    """202: the close command is durably in Kafka."""

    campaign_id: str
    status: Literal["pending"] = "pending"
    status_url: str


class CloseDecided(_Out):
    """200 (``Prefer: wait``): the campaign is closed."""

    campaign_id: str
    status: Literal["closed"] = "closed"
    outcome: str | None = None
    seq: int


class FieldError(_Out):
    """One offending field: a dotted path into the body (``goal.amount_minor``), a header
    name, or ``body`` for the document as a whole."""

    field: str
    message: str


class Problem(_Out):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = Field(description="Stable URI naming the kind of problem.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None
    reason: str | None = Field(
        default=None, description="Refusal code of the processor (tier_sold_out, ...)."
    )


class MoneyView(_Out):
    amount_minor: int
    currency: str


class TierView(_Out):
    tier_id: str
    title: str
    min_amount_minor: int
    quantity_limit: int | None
    remaining: int | None


class CampaignView(_Out):
    """``GET /v1/campaigns/{campaign_id}``: the read model's summary."""

    campaign_id: str
    title: str
    creator_id: str
    status: Literal["open", "closed"]
    outcome: Literal["funded", "failed", "cancelled"] | None
    funding_model: str
    kind: str
    goal: MoneyView
    total: MoneyView
    pledge_count: int
    goal_reached_at: str | None
    deadline: str
    tiers: list[TierView]
    seq: int


class Refusal(_Out):
    reason: str
    detail: str
    seq: int


class PledgeView(_Out):
    """``GET /v1/campaigns/{campaign_id}/pledges/{pledge_id}``."""

    pledge_id: str
    campaign_id: str
    status: Literal["pending", "accepted", "rejected", "cancelled"]
    backer_id: str
    amount: MoneyView
    tier_id: str | None
    seq: int | None = Field(description="Seq of the event that decided it (null while pending).")
    reason: str | None = Field(description="Why it was refused or cancelled.")
    detail: str | None
    last_refusal: Refusal | None = Field(
        default=None, description="A later operation on it that was refused (a cancellation)."
    )
    payment: PaymentView | None = Field(
        default=None,
        description="Where its money stands (settlement read model), on its GET and in the "
        "pledge listings alike; absent unless accepted or cancelled (`pending` while "
        "settlement has recorded nothing for it).",
    )


class EventView(_Out):
    """One of a campaign's events as the processor wrote it (its envelope, hash chain too)."""

    event_id: str
    event_type: str
    schema_version: int
    campaign_id: str
    stream: str
    seq: int = Field(description="Position in the campaign's stream (1, 2, 3...).")
    occurred_at: str
    causation_id: str
    correlation_id: str
    prev_hash: str
    hash: str
    payload: dict[str, Any]


class CampaignPage(_Out):
    """A page of ``GET /v1/campaigns``."""

    data: list[CampaignView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: end.")


class PledgePage(_Out):
    """A page of ``GET /v1/campaigns/{campaign_id}/pledges``."""

    data: list[PledgeView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: end.")


class EventPage(_Out):
    """A page of ``GET /v1/campaigns/{campaign_id}/events``."""

    data: list[EventView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null: no newer event yet (poll again "
        "with `after_seq` = the last `seq` seen)."
    )


class BatchItemResult(_Out):
    """Answer for one item of a batch: ``pending`` (in Kafka), ``invalid`` or ``not_found``."""

    index: int
    status: Literal["pending", "invalid", "not_found"]
    pledge_id: str | None = None
    campaign_id: str | None = None
    status_url: str | None = None
    problem: Problem | None = None


class BatchResponse(_Out):
    """202: every valid item's command is durably in Kafka; the others say why not."""

    results: list[BatchItemResult]
    accepted: int
    refused: int


def json_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """Model schema with refs pointing into ``#/components/schemas`` (for the OpenAPI doc)."""
    return model.model_json_schema(ref_template="#/components/schemas/{model}")
