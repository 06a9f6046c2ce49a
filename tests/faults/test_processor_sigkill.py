"""SIGKILL the processor worker at random moments under load: nothing lost, nothing twice.

The worker is the real entry point (``pledgeflow processor run`` as a subprocess). After a
first load is decided, a second load is sent while the worker is killed with SIGKILL several
times and restarted; once it has drained, the log must hold exactly one decision per command,
no pledge accepted twice, every pledge seen accepted before a kill, a gapless intact chain per
campaign, and the state a restarted processor rebuilds must equal a fresh replay.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from schemas import verify_chain
from schemas.topics import Topics
from services.pledge.config import PledgeSettings
from services.pledge.metrics import ProcessorMetrics
from services.pledge.processor import Processor, recover_partition
from tests.support.infra import REPO
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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CAMPAIGNS = 50
FIRST_LOAD = 20_000
SECOND_LOAD = 10_000
KILLS = 4


class Worker:
    """``pledgeflow processor run`` in a subprocess, restartable, killable."""

    def __init__(self, settings: PledgeSettings, log_dir: Path) -> None:
        self.env = {
            **os.environ,
            "PLEDGEFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "PLEDGEFLOW_TOPIC_PREFIX": settings.topic_prefix,
            "PLEDGEFLOW_PARTITIONS": str(settings.partitions),
            "PLEDGEFLOW_PROCESSOR_BATCH_MAX": str(settings.processor_batch_max),
            "PLEDGEFLOW_SNAPSHOT_EVERY_EVENTS": str(settings.snapshot_every_events),
            "PLEDGEFLOW_PROCESSOR_INSTANCE_ID": "sigkill-worker",
            "PLEDGEFLOW_PROCESSOR_SESSION_TIMEOUT_MS": "6000",
        }
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"worker-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "processor", "run"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, self.logs()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return (self.log_dir / f"worker-{self.starts}.log").read_text(errors="replace")[-4000:]


class Tail:
    """A read_committed consumer following PledgeMade: which pledges were accepted when."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.tps = [
            TopicPartition(topics.for_event("PledgeMade"), p) for p in range(topics.partitions)
        ]
        self.accepted: Counter[str] = Counter()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    self.accepted[orjson.loads(record.value)["payload"]["pledge_id"]] += 1

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()


async def drained(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    """True when the group's committed offsets reach the end of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await admin.start()
    await consumer.start()
    try:
        try:
            committed = await admin.list_consumer_group_offsets(group)
        except KafkaError as exc:
            # A fresh broker is still loading __consumer_offsets: ask again on the next round.
            if exc.retriable:
                return False
            raise
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return all(tp in committed and committed[tp].offset >= ends[tp] for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


async def wait_drained(
    worker: Worker, settings: PledgeSettings, topics: Topics, within: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    group = settings.topic_prefix + settings.processor_group
    while not await drained(settings.kafka_bootstrap, group, topics.commands, topics.partitions):
        assert worker.alive(), worker.logs()
        assert loop.time() < deadline, f"not drained after {within}s\n{worker.logs()}"
        await asyncio.sleep(0.5)


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

    worker = Worker(settings, tmp_path)
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


async def feed(bootstrap: str, topic: str, slices: list[list[Any]]) -> None:
    for chunk in slices:
        await produce_commands(bootstrap, topic, chunk)
        await asyncio.sleep(0.5)
