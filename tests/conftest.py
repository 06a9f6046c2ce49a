"""Session fixtures for the real Kafka broker and Redis server (started when not running)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tests.support.api import CREATED_PREFIXES
from tests.support.infra import LocalBroker, ensure_redis, kafka_bootstrap, redis_url, unique_name


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """The real broker; kafka-up.sh is a no-op when it already answers."""
    b = LocalBroker(kafka_bootstrap())
    b.ensure_running()
    yield b
    # A test that stopped the broker must not leave the rest of the session without one.
    b.ensure_running()
    asyncio.run(delete_topics(b.bootstrap, CREATED_PREFIXES))


async def delete_topics(bootstrap: str, prefixes: set[str]) -> None:
    """The topics under ``prefixes``: a broker carrying every topic of every earlier run
    restarts slowly (the restart and SIGKILL tests restart it or its clients)."""
    if not prefixes:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        mine = [t for t in await admin.list_topics() if t.startswith(tuple(prefixes))]
        if mine:
            await admin.delete_topics(mine)
    except KafkaError as exc:  # cleanup only: a broker a test left stopped is restarted later
        print(f"cleanup of {sorted(prefixes)} topics skipped: {exc!r}")
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def bootstrap(broker: LocalBroker) -> str:
    return broker.bootstrap


@pytest.fixture(scope="session")
def redis_server() -> str:
    ensure_redis()
    return redis_url()


@pytest.fixture
async def redis_client(redis_server: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server)
    yield client
    await client.aclose()


@pytest.fixture
async def unique(bootstrap: str) -> AsyncIterator[str]:
    """A fresh name prefix so tests never see each other's topics, groups or keys; the
    test's topics are deleted afterwards."""
    prefix = unique_name()
    yield prefix
    await delete_topics(bootstrap, {prefix})


@pytest.fixture
async def admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await client.start()
    yield client
    await client.close()
