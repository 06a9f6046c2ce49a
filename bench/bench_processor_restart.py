"""Recovery of a SIGKILLed processor: seconds from its restart to its first decision.

The worker is the real entry point (``python -m services.cli processor run``) on 6 partitions
with the default session timeout (10 s). Each trial: the worker decides a launch and a pledge,
is SIGKILLed, is started again at once, and a pledge is sent; the figure is the time from the
restart to that pledge's ``PledgeMade`` being committed (process start, group join, rebuilding
the partitions from the log and the decision, all included), with the restarted process's
CPU seconds until then beside it.

* measured: static group membership (``PLEDGEFLOW_PROCESSOR_INSTANCE_ID``, as ``make run``
  and k8s set it): the new worker takes the dead one's place at once;
* baseline, same run: a dynamic member, which waits until the dead member's session expires
  and the group rebalances.

Target: the median with static membership at most 3 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness import Target, delete_topics, kafka_bootstrap, launch_command, write_result
from bench.stack import cpu_seconds
from schemas import MakePledge, Money, encode_command, message_key
from schemas.topics import Topics, ensure_topics

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = 6
TRIALS = 3
BOUND_S = 3.0


def launch(campaign_id: str) -> bytes:
    return launch_command(campaign_id, "Bench")


def pledge(campaign_id: str, pledge_id: str) -> bytes:
    return encode_command(
        MakePledge(
            command_id=f"cmd-{pledge_id}",
            tenant_id="tenant-1",
            correlation_id=f"corr-{pledge_id}",
            issued_at=datetime.now(UTC),
            campaign_id=campaign_id,
            pledge_id=pledge_id,
            backer_id="b-1",
            amount=Money(amount_minor=2500, currency="EUR"),
        )
    )


class Trial:
    """One topic prefix, one worker, one follower of ``PledgeMade``."""

    def __init__(self, bootstrap: str, prefix: str, static: bool) -> None:
        self.bootstrap = bootstrap
        self.topics = Topics(prefix=prefix, partitions=PARTITIONS)
        self.env = {
            **os.environ,
            "PLEDGEFLOW_KAFKA_BOOTSTRAP": bootstrap,
            "PLEDGEFLOW_TOPIC_PREFIX": prefix,
            "PLEDGEFLOW_PARTITIONS": str(PARTITIONS),
        }
        self.env.pop("PLEDGEFLOW_PROCESSOR_INSTANCE_ID", None)
        if static:
            self.env["PLEDGEFLOW_PROCESSOR_INSTANCE_ID"] = f"{prefix}processor-0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    def start_worker(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "processor", "run", "--log-level", "warning"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill_worker(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def send(self, campaign_id: str, value: bytes) -> None:
        await self.producer.send_and_wait(self.topics.commands, value, key=message_key(campaign_id))

    async def decided(self, pledge_id: str, within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for records in (await self.consumer.getmany(timeout_ms=20)).values():
                for record in records:
                    if orjson.loads(record.value)["payload"]["pledge_id"] == pledge_id:
                        return
        raise TimeoutError(f"{pledge_id} not decided in {within} s")

    async def run(self) -> tuple[float, float]:
        """Seconds and CPU seconds from the restart to the first decision."""
        await ensure_topics(self.bootstrap, self.topics)
        await self.producer.start()
        await self.consumer.start()
        self.consumer.assign(
            [TopicPartition(self.topics.for_event("PledgeMade"), p) for p in range(PARTITIONS)]
        )
        try:
            self.start_worker()
            await self.send("c-1", launch("c-1"))
            await self.send("c-1", pledge("c-1", "p-0"))
            await self.decided("p-0")
            self.kill_worker()
            self.start_worker()
            restarted = time.monotonic()
            await self.send("c-1", pledge("c-1", "p-1"))
            await self.decided("p-1")
            took = time.monotonic() - restarted
            assert self.proc is not None
            return took, cpu_seconds(self.proc.pid)
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=30)
            await self.consumer.stop()
            await self.producer.stop()


async def main() -> None:
    bootstrap = kafka_bootstrap()
    run_prefix = f"bench-restart-{uuid.uuid4().hex[:8]}-"
    figures: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    try:
        for trial in range(TRIALS):
            for static in (True, False):  # interleaved: both meet the same machine load
                prefix = f"{run_prefix}{trial}{'s' if static else 'd'}."
                took, cpu = await Trial(bootstrap, prefix, static).run()
                figures[static].append((took, cpu))
                kind = "static" if static else "dynamic"
                print(f"trial {trial} {kind}: first decision {took:.2f} s after the restart "
                      f"({cpu:.2f} s CPU)")  # fmt: skip
    finally:
        await delete_topics(bootstrap, run_prefix)
    static_s = statistics.median(t for t, _ in figures[True])
    dynamic_s = statistics.median(t for t, _ in figures[False])
    result = write_result(
        "processor_restart",
        "seconds from a SIGKILLed processor's restart to its first decision (median)",
        "s",
        static_s,
        baseline=("dynamic group member (no group.instance.id)", dynamic_s),
        target=Target(value=BOUND_S, lower_is_better=True),
        extra={
            "trials": TRIALS,
            "partitions": PARTITIONS,
            "static_s": [round(t, 3) for t, _ in figures[True]],
            "dynamic_s": [round(t, 3) for t, _ in figures[False]],
            "static_cpu_s": [round(c, 3) for _, c in figures[True]],
            "dynamic_cpu_s": [round(c, 3) for _, c in figures[False]],
            "load_average": os.getloadavg(),
        },
    )
    print(f"static {static_s:.2f} s vs dynamic {dynamic_s:.2f} s: ratio {result['ratio']}, "
          f"met {result['met']}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
