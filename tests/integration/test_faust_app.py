"""A faust worker (agent + table) runs against the same real broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support.infra import REPO

pytestmark = pytest.mark.integration


async def test_faust_agent_counts_into_a_table(
    bootstrap: str, admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    await admin.create_topics(
        [NewTopic(f"{unique}.words", 1, 1), NewTopic(f"{unique}.counts", 1, 1)]
    )
    env = {**os.environ, "PREFIX": unique, "BOOTSTRAP": bootstrap}
    worker = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited on
        [sys.executable, "-m", "tests.support.faust_counter", "worker", "-l", "warn"],
        cwd=REPO,
        env=env,
        stdout=(log := (tmp_path / "worker.log").open("wb")),
        stderr=subprocess.STDOUT,
    )
    consumer = AIOKafkaConsumer(
        f"{unique}.counts", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    seen: list[str] = []
    try:
        for word in ["pledge", "goal", "pledge", "pledge"]:
            await producer.send_and_wait(
                f"{unique}.words", key=word.encode(), value=f'"{word}"'.encode()
            )
        deadline = asyncio.get_running_loop().time() + 60
        while len(seen) < 4 and asyncio.get_running_loop().time() < deadline:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen.extend(r.value.decode().strip('"') for r in records if r.value)
    finally:
        await producer.stop()
        await consumer.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    assert seen == ["pledge=1", "goal=1", "pledge=2", "pledge=3"]
