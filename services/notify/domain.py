"""The pure domain of notify: which notifications an event owes, to whom, on which channel.

No I/O, no clock, no randomness. The worker folds each campaign's events into a
:class:`CampaignView` (``evolve``) and asks :func:`decide` what the event owes given the
tenant's registered webhook endpoints; the answer is a list of :class:`Notification` whose
``notification_id`` is a pure function of (event id, recipient, channel), so a redelivered
event yields the very same ids and the side effects can be claimed once by id.

Representation choices:

* **Views are updated in place.** ``evolve`` mutates and returns the view: a campaign may hold
  100,000 pledges and a copy per event would make a replay quadratic.
* **One e-mail per backer per event.** A backer with two pledges in a campaign gets one "goal
  reached" message (the recipient is the backer, so the id is the same for both pledges) whose
  amount is the sum of their active pledges.
* **Cross-stream readiness.** Settlement events are numbered in their own stream, so a
  settlement event can arrive before the campaign events it depends on. :func:`ready` says
  whether the view has what a person needs to see first (the launch, the pledge, the close);
  the worker holds an event back until it is ready.
* **No personal data.** Contact details (e-mail, locale) are not in events: the domain names
  the recipient by id; the sender looks the address up when it sends.

One module (a little over 400 lines): who is told what, for every event, reads as one table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid5

from schemas.canonical import format_timestamp
from schemas.envelope import Envelope
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
from schemas.tenancy import local_id

__all__ = [
    "NOTIFICATION_ID_NAMESPACE",
    "WEBHOOK_EVENT_TYPES",
    "CampaignView",
    "Channel",
    "Notification",
    "PledgeLine",
    "RecipientKind",
    "WebhookEndpoint",
    "decide",
    "email_templates",
    "evolve",
    "notification_id",
    "ready",
    "webhook_payload",
]

Channel = Literal["webhook", "email"]
RecipientKind = Literal["backer", "creator", "platform"]

#: uuid5 namespace of notification ids (uuid5(NAMESPACE_URL, "https://pledgeflow.dev/ns/notify")).
NOTIFICATION_ID_NAMESPACE = UUID("2f0b3c9e-2b44-5d0e-9a57-3f5b3f1c2a10")

#: Event types a platform may subscribe a webhook endpoint to (the notify stream's own events
#: are records of notifications, never notified).
WEBHOOK_EVENT_TYPES: tuple[str, ...] = (
    "CampaignLaunched",
    "PledgeMade",
    "PledgeRejected",
    "PledgeCancelled",
    "GoalReached",
    "CampaignClosed",
    "PledgeCaptured",
    "PledgeCaptureFailed",
    "PledgeReleased",
    "PledgeRefunded",
    "CampaignSettled",
)

#: Payload fields never sent in a webhook (a payment token is a credential).
_WEBHOOK_OMITTED = frozenset({"payment_token"})


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A platform's registered receiver; ``event_types`` it subscribed to, ``secret`` whsec_…;
    ``previous_secret`` still signs (beside the new one) for a while after a rotation."""

    endpoint_id: str
    tenant_id: str
    url: str
    event_types: frozenset[str]
    secret: str
    previous_secret: str | None = None

    @property
    def signing_secrets(self) -> tuple[str, ...]:
        """The secrets every delivery is signed with (two during a rotation)."""
        return (self.secret,) if not self.previous_secret else (self.secret, self.previous_secret)


@dataclass(slots=True)
class PledgeLine:
    """What notify remembers of a pledge: who, how much, in which language, still active."""

    backer_id: str
    amount: Money
    locale: str | None
    active: bool = True


@dataclass(slots=True)
class CampaignView:
    """The fold of one campaign's events that notify needs to address and word messages."""

    campaign_id: str
    tenant_id: str | None = None
    creator_id: str | None = None
    title: str = ""
    goal: Money | None = None
    closed: bool = False
    pledges: dict[str, PledgeLine] = field(default_factory=dict)

    @property
    def launched(self) -> bool:
        """The launch has been applied (the tenant and creator are known)."""
        return self.tenant_id is not None


@dataclass(frozen=True, slots=True)
class Notification:
    """One message owed: to ``recipient`` (endpoint id, backer id or creator id) on ``channel``.

    ``template`` is the e-mail template, or for a webhook the snake_case event type;
    ``params`` are what the template (or the webhook body) is built from; ``locale_hint`` is
    the language the pledge was made in, used when the contact has no locale of its own.
    """

    notification_id: str
    cause_event_id: UUID
    campaign_id: str
    tenant_id: str
    event_type: str
    occurred_at: datetime
    channel: Channel
    recipient_kind: RecipientKind
    recipient: str
    template: str
    params: dict[str, Any]
    locale_hint: str | None = None


def notification_id(
    event_id: UUID, recipient_kind: RecipientKind, recipient: str, channel: Channel
) -> str:
    """The deterministic id of a notification: the ``webhook-id`` and the ``Message-ID`` base."""
    key = f"{event_id}:{recipient_kind}:{recipient}:{channel}"
    return f"msg_{uuid5(NOTIFICATION_ID_NAMESPACE, key).hex}"


def snake(event_type: str) -> str:
    """``GoalReached`` -> ``goal_reached``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event_type).lower()


def evolve(view: CampaignView, envelope: Envelope) -> CampaignView:
    """Apply one event (of the campaign or settlement stream) to ``view``; returns it."""
    match envelope.payload:
        case CampaignLaunched() as launched:
            view.tenant_id = launched.tenant_id
            view.creator_id = launched.creator_id
            view.title = launched.title
            view.goal = launched.goal
        case PledgeMade() as made:
            view.pledges[made.pledge_id] = PledgeLine(made.backer_id, made.amount, made.locale)
        case PledgeCancelled() as cancelled:
            line = view.pledges.get(cancelled.pledge_id)
            if line is not None:
                line.active = False
        case CampaignClosed():
            view.closed = True
        case PledgeRefunded() | PledgeReleased() as ended:
            line = view.pledges.get(ended.pledge_id)
            if line is not None:
                line.active = False
        case _:
            pass
    return view


def ready(view: CampaignView, payload: Event) -> bool:
    """Whether ``payload`` (of any stream) can be notified now without a person seeing messages
    out of order: settlement events wait for the launch, their pledge, and (for the payout)
    the close. Campaign events are ordered by their own ``seq`` and are always ready."""
    match payload:
        case PledgeCaptured() | PledgeCaptureFailed() | PledgeReleased() | PledgeRefunded():
            return view.launched and payload.pledge_id in view.pledges
        case CampaignSettled():
            return view.launched and view.closed
        case _:
            return True


def webhook_payload(envelope: Envelope) -> dict[str, Any]:
    """The JSON body a platform receives (Standard Webhooks' ``type``/``timestamp``/``data``)."""
    body = envelope.payload.model_dump(mode="json", exclude=set(_WEBHOOK_OMITTED))
    return {
        "type": envelope.event_type,
        "timestamp": format_timestamp(envelope.occurred_at),
        "data": {
            "event_id": str(envelope.event_id),
            # The platform's own id: the tenant qualifier is internal (schemas.tenancy).
            "campaign_id": local_id(envelope.campaign_id),
            "stream": envelope.stream,
            "seq": envelope.seq,
            "schema_version": envelope.schema_version,
            **body,
        },
    }


def email_templates() -> tuple[str, ...]:
    """Every e-mail template :func:`decide` can name (each exists in every language)."""
    return (
        "pledge_receipt",
        "goal_reached_backer",
        "goal_reached_creator",
        "campaign_closed_backer",
        "campaign_closed_creator",
        "payment_failed",
        "charge_receipt",
        "refund",
        "payout_statement",
    )


def decide(
    view: CampaignView, envelope: Envelope, endpoints: list[WebhookEndpoint]
) -> list[Notification]:
    """The notifications ``envelope`` owes, given ``view`` *before* the event is applied (call
    :func:`evolve` after) and the endpoints registered (any tenant's: only the campaign's
    tenant's are used). Nothing is owed before the campaign's launch is known."""
    payload = envelope.payload
    if isinstance(payload, CampaignLaunched):
        tenant_id: str | None = payload.tenant_id
        view = CampaignView(
            view.campaign_id,
            payload.tenant_id,
            payload.creator_id,
            payload.title,
            payload.goal,
        )
    else:
        tenant_id = view.tenant_id
    if tenant_id is None or envelope.event_type not in WEBHOOK_EVENT_TYPES:
        return []
    out = [
        _owed(view, envelope, tenant_id, "platform", ep.endpoint_id, "webhook", {})
        for ep in endpoints
        if ep.tenant_id == tenant_id and envelope.event_type in ep.event_types
    ]
    out.extend(_emails(view, envelope, tenant_id))
    return out


def _owed(
    view: CampaignView,
    envelope: Envelope,
    tenant_id: str,
    kind: RecipientKind,
    recipient: str,
    channel: Channel,
    params: dict[str, Any],
    template: str | None = None,
    locale_hint: str | None = None,
) -> Notification:
    if channel == "webhook":
        params = webhook_payload(envelope)
    else:
        params = {
            "campaign_title": view.title,
            "campaign_id": local_id(view.campaign_id),
            **params,
        }
    return Notification(
        notification_id=notification_id(envelope.event_id, kind, recipient, channel),
        cause_event_id=envelope.event_id,
        campaign_id=envelope.campaign_id,
        tenant_id=tenant_id,
        event_type=envelope.event_type,
        occurred_at=envelope.occurred_at,
        channel=channel,
        recipient_kind=kind,
        recipient=recipient,
        template=template or snake(envelope.event_type),
        params=params,
        locale_hint=locale_hint,
    )


def _backers(view: CampaignView) -> dict[str, tuple[Money, str | None]]:
    """Active backers with the sum of their active pledges and their latest pledge locale."""
    out: dict[str, tuple[Money, str | None]] = {}
    for line in view.pledges.values():
        if not line.active:
            continue
        total, locale = out.get(line.backer_id, (Money.zero(line.amount.currency), None))
        out[line.backer_id] = (total + line.amount, line.locale or locale)
    return out


def _emails(view: CampaignView, envelope: Envelope, tenant_id: str) -> list[Notification]:
    """The e-mails of one event (see the module docstring for who gets what)."""

    def mail(
        kind: RecipientKind, who: str, template: str, hint: str | None = None, **p: Any
    ) -> Notification:
        return _owed(view, envelope, tenant_id, kind, who, "email", p, template, hint)

    def locale_of(pledge_id: str) -> str | None:
        line = view.pledges.get(pledge_id)
        return line.locale if line else None

    creator = view.creator_id or ""
    match envelope.payload:
        case PledgeMade() as made:
            return [
                mail(
                    "backer",
                    made.backer_id,
                    "pledge_receipt",
                    made.locale,
                    amount=made.amount,
                    pledge_id=made.pledge_id,
                )
            ]
        case GoalReached() as goal:
            backers = [
                mail("backer", b, "goal_reached_backer", loc, amount=amt, total=goal.total)
                for b, (amt, loc) in sorted(_backers(view).items())
            ]
            owner = [
                mail(
                    "creator",
                    creator,
                    "goal_reached_creator",
                    total=goal.total,
                    pledge_count=goal.pledge_count,
                )
            ]
            return backers + (owner if creator else [])
        case CampaignClosed() as closed:
            funded = closed.outcome == "funded"
            backers = [
                mail("backer", b, "campaign_closed_backer", loc, amount=amt, funded=funded)
                for b, (amt, loc) in sorted(_backers(view).items())
            ]
            owner = [
                mail(
                    "creator",
                    creator,
                    "campaign_closed_creator",
                    funded=funded,
                    outcome=closed.outcome,
                    total=closed.total,
                    pledge_count=closed.accepted_pledges,
                )
            ]
            return backers + (owner if creator else [])
        case PledgeCaptureFailed() as failed:
            return [
                mail(
                    "backer",
                    failed.backer_id,
                    "payment_failed",
                    locale_of(failed.pledge_id),
                    amount=failed.amount,
                    pledge_id=failed.pledge_id,
                    retry_until=failed.retry_until,
                )
            ]
        case PledgeCaptured() as captured:
            return [
                mail(
                    "backer",
                    captured.backer_id,
                    "charge_receipt",
                    locale_of(captured.pledge_id),
                    amount=captured.amount,
                    pledge_id=captured.pledge_id,
                )
            ]
        case PledgeRefunded() as refunded:
            return [
                mail(
                    "backer",
                    refunded.backer_id,
                    "refund",
                    locale_of(refunded.pledge_id),
                    amount=refunded.amount,
                    pledge_id=refunded.pledge_id,
                )
            ]
        case CampaignSettled() as settled if creator:
            return [
                mail(
                    "creator",
                    creator,
                    "payout_statement",
                    outcome=settled.outcome,
                    gross=settled.gross,
                    commission=settled.commission,
                    fees=settled.fees,
                    payout=settled.payout,
                    captured_count=settled.captured_count,
                    refunded_count=settled.refunded_count,
                )
            ]
        case _:
            return []
