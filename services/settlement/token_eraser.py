"""Erasing payment tokens once their pledges no longer need them (captured, released -
voided, dropped or cancelled - or refunded): a tombstone on the compacted payment-tokens
topic, so a token does not outlive its use (compaction then removes the value).

Written only after the events that resolved the pledges are durably on the settlement stream
(the worker calls :meth:`TokenEraser.flush` after its transaction), so a crash never erases a
token a retry still needs. Level-triggered on restart: the worker notes every resolved pledge
whose token it still sees after replaying a partition, so a tombstone lost to a crash is
written then. A failed write is kept and tried again at the next flush.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from schemas.tenancy import pledge_key
from services.streams.kafka_security import KafkaSecurity, kafka_client_kwargs

__all__ = ["RESOLVED", "TokenEraser"]

log = logging.getLogger("pledgeflow.settlement")

#: Settlement events after which a pledge's payment token is never used again (a refund uses
#: the capture's gateway reference, not the token).
RESOLVED = frozenset({"PledgeCaptured", "PledgeReleased", "PledgeRefunded"})


class TokenEraser:
    """Tombstones for the payment tokens of resolved pledges."""

    def __init__(self, bootstrap: str, topic: str, security: KafkaSecurity | None = None) -> None:
        self.topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            **kafka_client_kwargs(security),
            acks="all",
            enable_idempotence=True,
        )
        #: ``token key -> campaign id`` of the tombstones to write.
        self._due: dict[str, str] = {}
        self.erased = 0

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    def note(self, campaign_id: str, pledge_id: str) -> None:
        """Erase this pledge's token at the next flush."""
        self._due[pledge_key(campaign_id, pledge_id)] = campaign_id

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the tombstones noted for campaigns ``keep`` refuses (a partition whose
        transaction was fenced: its events were never written)."""
        self._due = {key: c for key, c in self._due.items() if keep(c)}

    async def flush(self) -> None:
        """Write the tombstones noted so far; what fails is kept for the next flush."""
        if not self._due:
            return
        due, self._due = self._due, {}
        try:
            sent = [
                await self._producer.send(self.topic, key=key.encode(), value=None) for key in due
            ]
            for delivery in sent:
                await delivery
        except Exception as exc:  # the tokens stay until the next flush (or their retention)
            log.warning("payment-token tombstones not written (%d kept): %r", len(due), exc)
            self._due.update(due)
            return
        self.erased += len(due)
