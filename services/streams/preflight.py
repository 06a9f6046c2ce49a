"""Checks a one-off command makes before it changes anything (``readmodel rebuild`` wipes, so
it must first know that it can replay; ``ledger`` reads a partition): Redis answers, Kafka is in
reach, the topics exist. A failure is a :class:`SourceError` whose message is one line naming
the setting (``PLEDGEFLOW_KAFKA_BOOTSTRAP``, ``PLEDGEFLOW_TOPIC_PREFIX``,
``PLEDGEFLOW_REDIS_URL``): an aiokafka consumer assigned to a missing topic waits for its
metadata forever, and an unreachable broker or Redis is otherwise a traceback."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from redis.exceptions import RedisError

from services.streams.kafka_security import kafka_client_kwargs

__all__ = ["SourceError", "check_redis", "topic_partitions"]


class SourceError(Exception):
    """A source cannot be used; the message is one line naming the setting."""


async def topic_partitions(bootstrap: str, names: list[str], prefix: str) -> int:
    """The partition count of ``names`` (the largest, should they differ); SourceError when
    Kafka is out of reach or one of them does not exist."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, **kafka_client_kwargs(), request_timeout_ms=10_000
    )
    try:
        await admin.start()
    except Exception as exc:
        await admin.close()
        raise SourceError(
            f"PLEDGEFLOW_KAFKA_BOOTSTRAP: cannot reach Kafka at {bootstrap} ({type(exc).__name__})"
        ) from None
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    counts = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    missing = [name for name in names if not counts.get(name)]
    if missing:
        raise SourceError(
            f"PLEDGEFLOW_TOPIC_PREFIX: no topic {missing[0]!r} under prefix {prefix!r} on "
            f"{bootstrap}"
        )
    return max(counts.values(), default=0)


async def check_redis(client: aioredis.Redis, url: str) -> None:
    """SourceError unless Redis at ``url`` answers a PING."""
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise SourceError(
            f"PLEDGEFLOW_REDIS_URL: Redis at {_without_password(url)} unreachable ({exc})"
        ) from None


def _without_password(url: str) -> str:
    """``url`` as safe to print: its user-info dropped."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))
