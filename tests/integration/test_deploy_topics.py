"""`pledgeflow deploy wait-topics` on the real broker: waits, never creates, names the missing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from schemas.topics import Topics, ensure_topics
from services.ops.topics_ready import TopicsNotReady, wait_for_topics
from tests.support.infra import unique_name

pytestmark = pytest.mark.integration


async def test_missing_topics_are_named_and_never_created(
    bootstrap: str, unique: str, admin: AIOKafkaAdminClient
) -> None:
    topics = Topics(prefix=unique, partitions=2)
    with pytest.raises(TopicsNotReady) as raised:
        await wait_for_topics(bootstrap, topics, within=0.5)
    assert f"{len(topics.all())} not served" in str(raised.value)
    assert f"{unique}CampaignLaunched" in str(raised.value)
    assert not [t for t in await admin.list_topics() if t.startswith(unique)]


async def test_returns_once_another_process_created_the_topics(bootstrap: str, unique: str) -> None:
    topics = Topics(prefix=unique, partitions=2)
    waiting = asyncio.create_task(wait_for_topics(bootstrap, topics, within=60))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await ensure_topics(bootstrap, topics)
    await asyncio.wait_for(waiting, timeout=30)


def test_an_unreachable_broker_is_one_line_and_exit_1() -> None:
    env = {
        **os.environ,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "PLEDGEFLOW_TOPIC_PREFIX": unique_name(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "deploy", "wait-topics", "--within", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "topics: broker 127.0.0.1:1 unreachable after 1s (KafkaConnectionError)"
    ]
