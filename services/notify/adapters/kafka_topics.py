"""How many partitions a topic has, asked of the broker (a consumer only knows the topics it
is already subscribed or assigned to)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from services.streams.kafka_security import kafka_client_kwargs

__all__ = ["topic_partitions"]


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of ``topic``; LookupError if the broker does not have it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_kwargs())
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry.get("topic") == topic and entry.get("error_code", 0) == 0:
            found = sorted(p["partition"] for p in entry.get("partitions", ()))
            if found:
                return found
    raise LookupError(f"topic {topic!r} does not exist")
