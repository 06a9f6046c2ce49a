"""A seeded, steady stream of commands to ``pledge-commands`` while faults are injected.

Launches every campaign first, then produces a slice of pledges every ``every`` seconds until
stopped (about ``slice_size / every`` commands per second); about 1 % carry a wrong currency so
that refusals are decisions too. ``sent`` lists every command id produced (acknowledged).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas import encode_command, message_key
from tests.support.processor import launch, pledge


class CommandStream:
    """Pledges over ``campaigns`` produced until :meth:`stop`."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        campaigns: list[str],
        rng: random.Random,
        *,
        slice_size: int = 120,
        every: float = 0.2,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.campaigns = campaigns
        self.rng = rng
        self.slice_size = slice_size
        self.every = every
        self.sent: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )

    async def start(self) -> None:
        await self.producer.start()
        await self._send([launch(c, goal_minor=400_000) for c in self.campaigns])
        self._task = asyncio.create_task(self._run())

    async def _send(self, commands: list[Any]) -> None:
        futures = [
            await self.producer.send(self.topic, encode_command(c), key=message_key(c.campaign_id))
            for c in commands
        ]
        await asyncio.gather(*futures)
        self.sent.extend(c.command_id for c in commands)

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            chunk = []
            for _ in range(self.slice_size):
                currency = "USD" if self.rng.random() < 0.01 else "EUR"
                chunk.append(pledge(self.rng.choice(self.campaigns), f"p{n}", currency=currency))
                n += 1
            await self._send(chunk)
            await asyncio.sleep(self.every)

    async def stop(self) -> None:
        """Stop producing (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.producer.stop()
