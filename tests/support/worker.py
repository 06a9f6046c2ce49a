"""A processor worker as the real entry point in a subprocess, and watchers of what it wrote.

Shared by the fault tests (SIGKILL, broker restart).
"""

from __future__ import annotations

import asyncio
import os
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

from schemas.topics import Topics
from services.pledge.config import PledgeSettings
from tests.support.infra import REPO
from tests.support.processor import produce_commands


class ServiceProcess:
    """A ``pledgeflow`` entry point in a subprocess: restartable, killable, a log per start."""

    def __init__(self, command: list[str], env: dict[str, str], log_dir: Path, name: str) -> None:
        self.command = command
        self.env = env
        self.log_dir = log_dir
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"{self.name}-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *self.command],
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
        return (self.log_dir / f"{self.name}-{self.starts}.log").read_text(errors="replace")[-4000:]


class Worker(ServiceProcess):
    """``pledgeflow processor run``."""

    def __init__(
        self, settings: PledgeSettings, log_dir: Path, instance_id: str | None = "fault-worker"
    ) -> None:
        env = {
            **os.environ,
            "PLEDGEFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "PLEDGEFLOW_TOPIC_PREFIX": settings.topic_prefix,
            "PLEDGEFLOW_PARTITIONS": str(settings.partitions),
            "PLEDGEFLOW_PROCESSOR_BATCH_MAX": str(settings.processor_batch_max),
            "PLEDGEFLOW_SNAPSHOT_EVERY_EVENTS": str(settings.snapshot_every_events),
            "PLEDGEFLOW_PROCESSOR_SESSION_TIMEOUT_MS": "6000",
        }
        env.pop("PLEDGEFLOW_PROCESSOR_INSTANCE_ID", None)
        if instance_id is not None:  # static membership (None: a dynamic member)
            env["PLEDGEFLOW_PROCESSOR_INSTANCE_ID"] = instance_id
        super().__init__(["processor", "run"], env, log_dir, "worker")


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

    def total(self) -> int:
        """Pledges seen accepted so far (with repeats, if any)."""
        return sum(self.accepted.values())

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


async def feed(bootstrap: str, topic: str, slices: list[list[Any]]) -> None:
    for chunk in slices:
        await produce_commands(bootstrap, topic, chunk)
        await asyncio.sleep(0.5)
