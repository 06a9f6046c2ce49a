"""One campaign's oversized snapshot does not stop the snapshots of its partition's other
campaigns (another tenant's included): it gets a stub, they get their state, and recovery
from that round equals a full replay (real broker, the real processor)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.tenancy import qualify
from services.audit.sources import partition_for
from services.pledge.adapters.snapshots import load_snapshot
from services.pledge.processor import recover_partition
from tests.support.api import processor
from tests.support.processor import (
    create_topics,
    launch,
    pledge,
    processor_settings,
    produce_commands,
    replay_all,
    wait_for_events,
)

pytestmark = pytest.mark.integration

#: The snapshot topic's max.message.bytes: the processor keeps 64 KiB for headers, so a
#: campaign snapshot may be ~4 KB - far below a campaign of 300 pledges (~51 B each).
SMALL_LIMIT = 64 * 1024 + 1500


async def test_an_oversized_campaign_snapshot_does_not_block_its_neighbours(
    bootstrap: str, unique: str
) -> None:
    settings = processor_settings(bootstrap, unique, snapshot_every_events=50)
    topics = await create_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topics.snapshots, {"max.message.bytes": str(SMALL_LIMIT)}
        )
        await admin.alter_configs([resource])
        for _ in range(100):  # the processor reads the limit once, at start
            described = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topics.snapshots)]
            )
            entries = {e[0]: e[1] for r in described for *_, es in r.resources for e in es}
            if entries.get("max.message.bytes") == str(SMALL_LIMIT):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("max.message.bytes of the snapshot topic not applied")
    finally:
        await admin.close()
    big = qualify("tenant-a", "big")
    partition = partition_for(big, topics.partitions)
    small, late = [
        c
        for i in range(1000)
        if partition_for(c := qualify("tenant-b", f"small-{i}"), topics.partitions) == partition
    ][:2]
    commands: list[Any] = [
        launch(big, tenant="tenant-a"),
        launch(small, tenant="tenant-b"),
        launch(late, tenant="tenant-b"),
    ]
    commands += [pledge(small, f"p{i}", tenant="tenant-b") for i in range(3)]
    commands += [pledge(big, f"p{i}", tenant="tenant-a") for i in range(300)]
    # A neighbour changed after the big campaign outgrew the limit, then more rounds.
    commands += [pledge(late, f"p{i}", tenant="tenant-b") for i in range(3)]
    commands += [pledge(big, f"q{i}", tenant="tenant-a") for i in range(120)]

    def enough(events: list[Any]) -> bool:
        return len(events) >= len(commands) + 1  # and the big campaign's GoalReached

    async with processor(settings):
        await produce_commands(bootstrap, topics.commands, commands)
        events = await wait_for_events(bootstrap, topics, enough)
    expected = replay_all(events)
    snapshot = await load_snapshot(bootstrap, topics.snapshots, partition)
    assert snapshot is not None, "the round was skipped for the whole partition"
    for neighbour in (small, late):
        assert snapshot.states[neighbour] == expected[neighbour], neighbour
    assert big not in snapshot.states  # its stub: folded from its first event
    recovered = await recover_partition(bootstrap, topics, partition)
    full = await recover_partition(bootstrap, topics, partition, use_snapshot=False)
    assert recovered.from_snapshot and recovered.states == full.states
    assert recovered.states[big] == expected[big]
