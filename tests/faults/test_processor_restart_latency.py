"""A SIGKILLed processor, restarted at once, decides again within 3 s.

The worker is the real entry point (``pledgeflow processor run``) with static group
membership (``PLEDGEFLOW_PROCESSOR_INSTANCE_ID``, as ``make run`` and the k8s StatefulSet set
it): the restarted worker rejoins under the dead one's instance id and gets its partitions
back at once, instead of waiting for the dead member's session to time out (6 s here, 10 s by
default) before a rebalance. Measured: from the restart to the committed decision of a pledge
sent right after it (process start, rebuild from the log and the decision included).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.processor import (
    create_topics,
    launch,
    pledge,
    processor_settings,
    produce_commands,
    wait_for_events,
)
from tests.support.worker import Tail, Worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: The recovery bound of the issue (first decision after a restart).
BOUND_S = 3.0


async def test_a_restarted_processor_decides_within_3_s(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = processor_settings(bootstrap, unique)
    topics = await create_topics(settings)
    worker = Worker(settings, tmp_path, instance_id=f"{unique}-processor-0")
    tail = Tail(bootstrap, topics)
    await tail.start()
    worker.start()
    try:
        await produce_commands(bootstrap, topics.commands, [launch("c-1"), pledge("c-1", "p-0")])
        await wait_for_events(
            bootstrap, topics, lambda events: len(events) >= 2, within=60, every=0.2
        )
        worker.kill()
        worker.start()
        restarted = time.monotonic()
        await produce_commands(bootstrap, topics.commands, [pledge("c-1", "p-1")])
        while tail.accepted["p-1"] == 0:
            assert worker.alive(), worker.logs()
            assert time.monotonic() - restarted < 60, worker.logs()
            await asyncio.sleep(0.02)
        took = time.monotonic() - restarted
        print(f"first decision {took:.2f} s after the restart")
        assert took <= BOUND_S, worker.logs()
    finally:
        worker.stop()
        await tail.stop()
