"""In-memory stand-ins for notify's ports, shared by the dispatcher's integration tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.events import NotificationFailed, NotificationSent


@dataclass
class MemoryRecorder:
    """The recorder port (``services.notify.ports.Recorder``) keeping what it was given."""

    events: list[NotificationSent | NotificationFailed] = field(default_factory=list)

    async def record(
        self, campaign_id: str, events: list[NotificationSent | NotificationFailed], cause: str
    ) -> None:
        self.events.extend(events)

    @property
    def sent(self) -> list[str]:
        """The ids of the notifications recorded as sent, in the order recorded."""
        return [e.notification_id for e in self.events if isinstance(e, NotificationSent)]
