"""SIGKILL the processor worker at random moments under load: nothing lost, nothing twice.

The worker is the real entry point (``pledgeflow processor run`` as a subprocess). After a
first load is decided, a second load is sent while the worker is killed with SIGKILL several
times and restarted; once it has drained, the log must hold exactly one decision per command,
no pledge accepted twice, every pledge seen accepted before a kill, a gapless intact chain per
campaign, and the state a restarted processor rebuilds must equal a fresh replay.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from schemas import verify_chain
from services.pledge.processor import Processor, recover_partition
from services.pledge.processor.metrics import ProcessorMetrics
from tests.support.processor import (
    by_campaign,
    create_topics,
    launch,
    pledge,
    processor_settings,
    produce_commands,
    read_events,
    replay_all,
)
from tests.support.worker import Tail, Worker, feed, wait_drained

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CAMPAIGNS = 50
FIRST_LOAD = 20_000
SECOND_LOAD = 10_000
KILLS = 4


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed={seed}")
    settings = processor_settings(
        bootstrap,
        unique,
        partitions=6,
        processor_batch_max=500,
        snapshot_every_events=2_000,
    )
    topics = await create_topics(settings)
    campaigns = [f"camp-{i:02d}" for i in range(CAMPAIGNS)]
    first: list[Any] = [launch(c, goal_minor=500_000) for c in campaigns]
    first += [pledge(campaigns[i % CAMPAIGNS], f"a{i}") for i in range(FIRST_LOAD)]
    # Some refusals too: a wrong currency is a decision as well (PledgeRejected).
    second: list[Any] = [
        pledge(campaigns[i % CAMPAIGNS], f"b{i}", currency="USD" if i % 97 == 0 else "EUR")
        for i in range(SECOND_LOAD)
    ]

    worker = Worker(settings, tmp_path, instance_id="sigkill-worker")
    tail = Tail(bootstrap, topics)
    await tail.start()
    try:
        await produce_commands(bootstrap, topics.commands, first)
        worker.start()
        await wait_drained(worker, settings, topics, within=90)

        # The second load arrives in slices while the worker is killed and restarted.
        slices = [second[i : i + 500] for i in range(0, SECOND_LOAD, 500)]
        feeder = asyncio.create_task(feed(bootstrap, topics.commands, slices))
        accepted_before_kills: list[set[str]] = []
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            worker.kill()
            accepted_before_kills.append({p for p, n in tail.accepted.items() if n})
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0.0, 1.0))
            worker.start()
        await feeder
        await wait_drained(worker, settings, topics, within=120)
        worker.stop()
    finally:
        worker.stop()
        await tail.stop()

    events = await read_events(bootstrap, topics)
    streams = by_campaign(events)
    assert sorted(streams) == campaigns
    for cid, stream in streams.items():
        assert [e.seq for e in stream] == list(range(1, len(stream) + 1)), cid
    assert verify_chain(events) is None

    made = Counter(
        e.payload.pledge_id  # type: ignore[attr-defined]
        for e in events
        if e.event_type == "PledgeMade"
    )
    assert [p for p, n in made.items() if n > 1] == []
    for accepted in accepted_before_kills:
        assert accepted <= set(made)
    decided = Counter(
        e.causation_id for e in events if e.event_type in ("PledgeMade", "PledgeRejected")
    )
    expected = {c.command_id for c in [*first[CAMPAIGNS:], *second]}
    assert set(decided) == expected
    assert [c for c, n in decided.items() if n > 1] == []
    assert sum(1 for e in events if e.event_type == "PledgeRejected") == len(
        [c for c in second if c.amount.currency == "USD"]
    )
    assert worker.starts == KILLS + 1

    # What a restarted worker resumes with (snapshots + the rest of the log) is a fresh replay.
    fresh = replay_all(events)
    snapshots_used = 0
    for partition in range(topics.partitions):
        recovered = await recover_partition(bootstrap, topics, partition)
        snapshots_used += recovered.from_snapshot
        assert recovered.states == {c: fresh[c] for c in recovered.states}
    assert snapshots_used > 0
    processor = Processor(settings, metrics=ProcessorMetrics.create(CollectorRegistry()))
    await processor.start()
    try:
        await processor.wait_assigned()
        assert processor.states() == fresh
    finally:
        await processor.stop()
