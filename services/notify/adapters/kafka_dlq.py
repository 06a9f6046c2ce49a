"""The Kafka adapter of the dead-letter port (``notify.dlq``), and the reader ``redrive`` uses.

A dead letter's value is JSON: ``{"notification": <stored notification>, "reason", "detail",
"attempts"}``, keyed by campaign. The topic is ``<consumer>.dlq`` from the registry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.notify.adapters.kafka_topics import topic_partitions
from services.notify.domain import Notification
from services.notify.records import decode_notification, encode_notification
from services.streams.kafka_security import kafka_client_kwargs

__all__ = ["KafkaDeadLetters", "read_dead_letters"]


class KafkaDeadLetters:
    """Writes dead letters with an idempotent, acks=all producer the caller owns."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def put(
        self, notification: Notification, reason: str, detail: str, attempts: int
    ) -> None:
        value = orjson.dumps(
            {
                "notification": orjson.Fragment(encode_notification(notification)),
                "reason": reason,
                "detail": detail,
                "attempts": attempts,
            }
        )
        await self._producer.send_and_wait(
            self.topic, key=notification.campaign_id.encode(), value=value
        )


async def read_dead_letters(
    bootstrap: str, topic: str, group: str
) -> AsyncIterator[tuple[Notification | None, dict[str, Any]]]:
    """Every dead letter after ``group``'s committed offset up to the current end of the topic:
    the notification (None for an unreadable record) and the raw letter. The offsets are
    committed once the caller has taken all of them (a redrive cut short starts over: a
    notification may be queued twice, and is sent with the same id)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **kafka_client_kwargs(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()  # closes what start opened (else "Unclosed AIOKafkaConsumer")
        raise
    try:
        numbers = await topic_partitions(bootstrap, topic)
        partitions = [TopicPartition(topic, p) for p in numbers]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            committed = await consumer.committed(tp)
            consumer.seek(tp, committed if committed is not None else 0)
        remaining = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    try:
                        letter = orjson.loads(record.value or b"{}")
                        notification = decode_notification(orjson.dumps(letter["notification"]))
                    except (ValueError, KeyError, TypeError):
                        letter, notification = {"raw": repr(record.value)[:200]}, None
                    yield notification, letter
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        await consumer.commit({tp: ends[tp] for tp in partitions})
    finally:
        await consumer.stop()
