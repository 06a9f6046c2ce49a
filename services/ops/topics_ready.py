"""Waiting for the registry's topics to exist, without ever creating one."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from schemas.topics import Topics, unserved
from services.streams.kafka_security import kafka_client_kwargs

__all__ = ["TopicsNotReady", "wait_for_topics"]


class TopicsNotReady(Exception):
    """The broker did not serve every topic in time (the message names what is missing)."""


async def wait_for_topics(bootstrap: str, topics: Topics, within: float) -> None:
    """Return once every topic of ``topics`` has all its partitions led by a broker.

    Polls (the broker or the topic operator may still be starting); raises
    :class:`TopicsNotReady` naming the missing topics after ``within`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    wanted = {spec.name: spec.partitions for spec in topics}
    while True:
        try:
            missing = await _missing(bootstrap, wanted)
            problem = f"{len(missing)} not served after {within:g}s: " + ", ".join(missing[:5])
            problem += " ..." if len(missing) > 5 else ""
        except KafkaError as exc:  # broker not reachable yet
            missing = [bootstrap]
            problem = f"broker {bootstrap} unreachable after {within:g}s ({type(exc).__name__})"
        if not missing:
            return
        if loop.time() >= deadline:
            raise TopicsNotReady(problem)
        await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))


async def _missing(bootstrap: str, wanted: dict[str, int]) -> list[str]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, **kafka_client_kwargs(), request_timeout_ms=5000
    )
    await admin.start()
    try:
        described = await admin.describe_topics(list(wanted))
    finally:
        await admin.close()
    return unserved(described, wanted)
