"""Payment tokens on their own erasable topic, never on the immutable log.

The API writes each pledge's token to the compacted ``payment-tokens`` topic, keyed by the
pledge's identity ``<tenant>/<campaign>/<pledge>`` (:func:`schemas.tenancy.pledge_key`: the
envelope's ``campaign_id`` plus the payload's ``pledge_id``), and sends the command without
it, so neither ``pledge-commands``, the events, the snapshots nor any dead-letter topic ever
holds a token. Settlement looks a token up with :func:`load_payment_tokens` when it calls the
gateway and erases it with :func:`forget_payment_token` (a tombstone) once the pledge is
settled, released or refunded; the topic's retention removes the rest (refused pledges). An
erasure never touches a hash chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from services.pledge.adapters.command_bus import CommandBus
from services.streams import read_to_end

__all__ = [
    "KafkaPaymentTokens",
    "forget_payment_token",
    "load_payment_tokens",
    "load_payment_tokens_to_end",
]


class KafkaPaymentTokens:
    """The API's :class:`~services.pledge.api.ports.PaymentTokenStore` on Kafka (idempotent
    producer, ``acks=all``). The API appends a pledge's token and its command in the same
    produce request (:meth:`stage`) and answers only once both are acknowledged. Like the command
    log, a write not acknowledged within ``send_timeout_s`` fails (the API answers 503 instead
    of hanging while the broker is down).

    The API passes its :class:`~services.pledge.adapters.command_bus.CommandBus` (opened with
    this topic among its ``record_topics``): the tokens then ride in the same record batches
    and produce requests as the commands of every request in flight, instead of one produce
    request of their own per pledge (which cost the API more CPU than the rest of the
    request). Without one, the store opens a bus of its own (tools and tests)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        send_timeout_s: float = 5.0,
        *,
        bus: CommandBus | None = None,
    ) -> None:
        self.topic = topic
        self._owned = bus is None
        self._bus = bus or CommandBus(
            bootstrap, topic, send_timeout_s=send_timeout_s, record_topics=[topic]
        )

    async def start(self) -> None:
        """Start the store's own bus (a shared bus is started by its owner)."""
        if self._owned:
            await self._bus.start()

    async def stop(self) -> None:
        if self._owned:
            await self._bus.stop()

    async def put(self, tokens: Sequence[tuple[str, str]]) -> None:
        """Write ``(pledge key, token)`` pairs; returns once every one is acknowledged, raises
        :class:`TimeoutError` when that takes longer than the send timeout."""
        await self.stage(tokens)

    def stage(self, tokens: Sequence[tuple[str, str]]) -> asyncio.Future[Any]:
        """Append ``(pledge key, token)`` pairs to the bus's open batches now and return the
        future of their acknowledgement: a command the caller appends before it next yields
        leaves in the same produce request. Raises at once, with nothing appended, when the
        store cannot take them (its bus not started, or not opened for this topic)."""
        return self._bus.append_records(
            self.topic, [(key.encode(), token.encode()) for key, token in tokens]
        )


async def load_payment_tokens(bootstrap: str, topic: str, partitions: int) -> dict[str, str]:
    """``pledge key -> token`` of every token not erased yet (latest record per key)."""
    return (await load_payment_tokens_to_end(bootstrap, topic, partitions))[0]


async def load_payment_tokens_to_end(
    bootstrap: str, topic: str, partitions: int
) -> tuple[dict[str, str], dict[TopicPartition, int]]:
    """:func:`load_payment_tokens`, and the offset each partition was read to: a reader that
    tails the topic from there misses no token appended meanwhile."""
    tokens: dict[str, str] = {}

    def keep(record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        if record.value is None:
            tokens.pop(record.key.decode(), None)
        else:
            tokens[record.key.decode()] = record.value.decode()

    ends = await read_to_end(bootstrap, [TopicPartition(topic, p) for p in range(partitions)], keep)
    return tokens, ends


async def forget_payment_token(producer: AIOKafkaProducer, topic: str, key: str) -> None:
    """Erase one pledge's token (a tombstone; compaction removes the value)."""
    await (await producer.send(topic, key=key.encode(), value=None))
