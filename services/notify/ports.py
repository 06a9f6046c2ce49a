"""The small ports the notify dispatcher talks through (adapters in ``adapters/``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from schemas.events import NotificationFailed, NotificationSent
from services.notify.domain import Notification, RecipientKind, WebhookEndpoint
from services.notify.mail import Contact

__all__ = [
    "ERASED",
    "DeadLetters",
    "DeliveryQueue",
    "Directory",
    "Erased",
    "NotOwner",
    "Queued",
    "Recorder",
    "Room",
]


class Erased:
    """A contact the platform deleted: messages to that person are skipped (and counted)."""

    def __repr__(self) -> str:
        return "ERASED"


ERASED = Erased()

Final = Literal["sent", "dead", "skipped"]


@dataclass(frozen=True, slots=True)
class Queued:
    """A claimed notification: what to send, its lane, attempts already made, first attempt."""

    notification: Notification
    lane: str
    partition: int
    attempts: int
    first_attempt_ms: int | None


@dataclass(frozen=True, slots=True)
class Room:
    """How many deliveries each lane may start now (what :meth:`DeliveryQueue.take` claims)."""

    #: free slots of a lane not in ``lanes`` (a webhook endpoint with nothing in flight)
    default: int
    #: free slots of the lanes that differ: some in flight, the e-mail relay, open circuits
    lanes: Mapping[str, int] = field(default_factory=dict)
    #: e-mail lanes of persons (``email|<tenant>/<kind>/<person>``) with a message in flight
    busy_persons: Sequence[str] = ()


class DeliveryQueue(Protocol):
    """Durable pending notifications with due times; a claim is a lease, not a removal."""

    async def enqueue(self, notification: Notification, now_ms: int) -> bool:
        """Add unless this id was ever enqueued (redelivered event); True if added."""

    async def take(
        self, now_ms: int, lease_ms: int, partitions: Iterable[int], room: Room
    ) -> list[Queued]:
        """Claim (lease until ``now_ms + lease_ms``) the notifications due at ``now_ms`` in the
        given partitions that their lanes have ``room`` for: per lane, its oldest across the
        partitions; for e-mail at most one per person, none of a person in ``busy_persons``.
        Nothing of a lane without room is read. A fenced queue takes nothing in a partition
        whose owner token is not (or no longer) this worker's."""

    async def retry_at(self, item: Queued, due_ms: int, attempts: int, now_ms: int) -> None:
        """Record a failed attempt and when to try again."""

    async def finish(self, item: Queued, state: Final) -> None:
        """Leave the queue for good (the id stays known so it is never enqueued again)."""

    async def redrive(self, notification: Notification, now_ms: int) -> None:
        """Queue again from attempt 0, whatever its state (the redrive command)."""

    async def pending(self, partitions: Iterable[int]) -> int:
        """How many notifications wait in ``partitions`` (retries pending included)."""


class Directory(Protocol):
    """Registrations of the platforms: webhook endpoints and contacts, by tenant."""

    def endpoints(self, tenant_id: str) -> list[WebhookEndpoint]: ...

    def endpoint(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None: ...

    def contact(
        self, tenant_id: str, kind: RecipientKind, person_id: str
    ) -> Contact | Erased | None: ...


class NotOwner(Exception):
    """The campaign's partition is not (or no longer) this worker's: nothing was recorded."""


class Recorder(Protocol):
    """Appends notify-stream events (``seq`` + hash chain per (campaign, 'notify')); raises
    :class:`NotOwner` when another worker owns the campaign's partition now."""

    async def record(
        self, campaign_id: str, events: list[NotificationSent | NotificationFailed], cause: str
    ) -> None: ...


class DeadLetters(Protocol):
    """The dead-letter topic ``notify.dlq``."""

    async def put(
        self, notification: Notification, reason: str, detail: str, attempts: int
    ) -> None: ...
