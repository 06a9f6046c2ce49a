"""``pledgeflow notify redrive``: queue what ``notify.dlq`` holds for delivery again.

The worker (the notify stream's single writer) does the sending and recording; redrive only
puts the dead letters back in its queue from attempt 0, so they are signed and sent with
their original ids once the endpoint is fixed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from schemas.topics import Topics
from services.notify.adapters.kafka_dlq import read_dead_letters
from services.notify.adapters.redis_queue import RedisDeliveryQueue
from services.notify.config import NotifySettings
from services.notify.partitioning import partition_function
from services.streams.preflight import check_redis

__all__ = ["RedriveReport", "redrive"]


@dataclass(frozen=True, slots=True)
class RedriveReport:
    """How many dead letters were queued again, and how many could not be read."""

    requeued: int
    unreadable: int


async def redrive(settings: NotifySettings) -> RedriveReport:
    """Queue every dead letter not redriven before (see the module docstring)."""
    topic = Topics(prefix=settings.topic_prefix, partitions=settings.partitions).dead_letter(
        "notify"
    )
    client = aioredis.Redis.from_url(settings.redis_url)
    queue = RedisDeliveryQueue(
        client, prefix=settings.topic_prefix, partition_of=partition_function(settings.partitions)
    )
    requeued = unreadable = 0
    try:
        await check_redis(client, settings.redis_url)  # before a dead letter is taken
        async for notification, _letter in read_dead_letters(
            settings.kafka_bootstrap, topic, f"{settings.notify_group}-redrive"
        ):
            if notification is None:
                unreadable += 1
                continue
            await queue.redrive(notification, int(time.time() * 1000))
            requeued += 1
    finally:
        await client.aclose()
    return RedriveReport(requeued, unreadable)
