"""The broker goes away under load, cleanly and by SIGKILL: nothing lost, nothing twice.

The worker is the real entry point (``pledgeflow processor run`` as a subprocess) against a
broker of the test's own (the session's shared broker stays up). While commands are being
decided, the broker is stopped and started again, then killed with SIGKILL and started
again. A worker that gives up while the broker is away is restarted, as its pod would be.
Afterwards the log must hold exactly one decision per command, no pledge accepted twice, a
gapless intact chain per campaign, and what a restarted processor rebuilds equals a replay.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from schemas import verify_chain
from services.pledge.processor import Processor
from services.pledge.processor.metrics import ProcessorMetrics
from tests.support.infra import PrivateBroker, unique_name
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
from tests.support.worker import Tail, Worker, wait_drained

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

CAMPAIGNS = 20
LOAD = 15_000
SLICE = 3_000


async def test_broker_restart_and_crash_under_load_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    broker = PrivateBroker(tmp_path / "kafka")
    await asyncio.to_thread(broker.start)
    worker: Worker | None = None
    tail: Tail | None = None
    try:
        settings = processor_settings(
            # Small transactions: a slice takes the worker a while, so a fault lands inside it.
            broker.bootstrap,
            unique_name("restart"),
            partitions=3,
            processor_batch_max=50,
        )
        topics = await create_topics(settings)
        campaigns = [f"camp-{i:02d}" for i in range(CAMPAIGNS)]
        commands: list[Any] = [launch(c, goal_minor=10_000_000) for c in campaigns]
        commands += [
            pledge(campaigns[i % CAMPAIGNS], f"p{i}", currency="USD" if i % 101 == 0 else "EUR")
            for i in range(LOAD)
        ]
        slices = [commands[i : i + SLICE] for i in range(0, len(commands), SLICE)]

        worker = Worker(settings, tmp_path, instance_id="restart-worker")
        tail = Tail(broker.bootstrap, topics)
        await tail.start()
        worker.start()
        await produce_commands(broker.bootstrap, topics.commands, slices[0])
        await wait_drained(worker, settings, topics, within=120)
        faults = [broker.stop, broker.crash]
        for index, chunk in enumerate(slices[1:], start=1):
            before = tail.total()
            producing = asyncio.create_task(
                produce_commands(broker.bootstrap, topics.commands, chunk)
            )
            if index in (2, 4):
                # Strike while the worker is deciding this slice: some of it is committed.
                while tail.total() < before + 100:
                    assert worker.alive(), worker.logs()
                    await asyncio.sleep(0.01)
                await producing
                struck_at = tail.total() - before
                await asyncio.to_thread(faults.pop(0))
                await asyncio.sleep(1.0)
                await asyncio.to_thread(broker.start)
                print(f"fault after {struck_at} of {len(chunk)} pledges of slice {index}")
                if not worker.alive():
                    worker.start()
            else:
                await producing
        assert faults == []
        for _ in range(3):
            try:
                await wait_drained(worker, settings, topics, within=120)
                break
            except AssertionError:
                if worker.alive():
                    raise
                worker.start()  # gave up during the outage: restarted like a pod
        else:
            pytest.fail(f"the worker never drained the commands\n{worker.logs()}")
        worker.stop()
        print(f"worker starts: {worker.starts}")

        events = await read_events(broker.bootstrap, topics)
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
        decided = Counter(
            e.causation_id for e in events if e.event_type in ("PledgeMade", "PledgeRejected")
        )
        assert set(decided) == {c.command_id for c in commands[CAMPAIGNS:]}
        assert [c for c, n in decided.items() if n > 1] == []
        assert len(made) == sum(1 for c in commands[CAMPAIGNS:] if c.amount.currency == "EUR")

        processor = Processor(settings, metrics=ProcessorMetrics.create(CollectorRegistry()))
        await processor.start()
        try:
            await processor.wait_assigned()
            assert processor.states() == replay_all(events)
        finally:
            await processor.stop()
    finally:
        if worker is not None:
            worker.stop()
        if tail is not None:
            await tail.stop()
        await asyncio.to_thread(broker.stop)
