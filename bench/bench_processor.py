"""Commands/s through one processor worker, against a naive faust agent in the same run.

Both read the same kind of pre-loaded ``pledge-commands`` (launches, then pledges spread over
the campaigns) and decide with the same domain (``decide_with_bodies`` + ``evolve``).

* **processor**: ``services.pledge.processor.Processor`` in this process: ``getmany`` batches,
  one Kafka transaction per partition and poll (events + consumed offsets), read_committed.
  Timed from the moment it owns every partition (rebuilt) until its metrics count every
  command as committed.
* **naive faust agent** (baseline, a subprocess ``python -m bench.bench_processor naive``):
  one agent, ``await topic.send(...)`` per event, no transactions. Timed from its first event
  until every expected event is in the event topics.

Targets: >= 20,000 commands/s and >= 4x the naive agent.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from bench.harness import Target, delete_topics, kafka_bootstrap, produce, write_result

N = int(os.environ.get("BENCH_PROCESSOR_N", "100000"))
N_NAIVE = int(os.environ.get("BENCH_PROCESSOR_N_NAIVE", "20000"))
CAMPAIGNS = 100
PARTITIONS = 6
SEED = 4
NOW = datetime(2030, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def commands(n: int, tag: str) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of ``CAMPAIGNS`` launches and ``n - CAMPAIGNS`` pledges."""
    from schemas import LaunchCampaign, MakePledge, Money, encode_command, message_key

    out = []
    for c in range(CAMPAIGNS):
        cid = f"{tag}-camp-{c}"
        launch = LaunchCampaign.model_validate(
            {
                "command_id": f"launch-{cid}",
                "tenant_id": "tenant",
                "correlation_id": f"corr-{cid}",
                "issued_at": NOW,
                "campaign_id": cid,
                "creator_id": "creator",
                "title": "Bench campaign",
                "goal": {"amount_minor": 10_000_000, "currency": "EUR"},
                "deadline": NOW + timedelta(days=3650),
                "funding_model": "all_or_nothing",
                "settlement_mode": "authorize_then_capture",
                "commission_bps": 500,
            }
        )
        out.append((message_key(cid), encode_command(launch)))
    amount = Money(amount_minor=2_500, currency="EUR")
    issued = datetime.now(UTC)
    for i in range(n - CAMPAIGNS):
        cid = f"{tag}-camp-{i % CAMPAIGNS}"
        command = MakePledge(
            command_id=f"cmd-{tag}-{i}",
            tenant_id="tenant",
            correlation_id=f"corr-{tag}-{i}",
            issued_at=issued,
            campaign_id=cid,
            pledge_id=f"pledge-{tag}-{i}",
            backer_id=f"backer-{i % 5000}",
            amount=amount,
        )
        out.append((message_key(cid), encode_command(command)))
    return out


async def preload(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    await produce(bootstrap, topic, items, linger_ms=5, max_batch_size=512 * 1024)


async def count_events(bootstrap: str, topics: list[str]) -> int:
    """Records now in ``topics`` (non-transactional writes: end offset = count)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def run_processor(bootstrap: str, prefix: str) -> tuple[float, float, int, float]:
    """commands/s of the processor (after assignment), total incl. startup, events written,
    and the worker's CPU microseconds per command (after assignment)."""
    from schemas.topics import Topics, ensure_topics
    from services.pledge.config import PledgeSettings
    from services.pledge.processor import Processor
    from services.pledge.processor.metrics import ProcessorMetrics

    settings = PledgeSettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        partitions=PARTITIONS,
        processor_batch_max=int(os.environ.get("BENCH_PROCESSOR_BATCH", "6000")),
    )
    topics = Topics(prefix=prefix, partitions=PARTITIONS)
    await ensure_topics(bootstrap, topics)
    await preload(bootstrap, topics.commands, commands(N, "p"))
    registry = CollectorRegistry()
    processor = Processor(settings, metrics=ProcessorMetrics.create(registry))
    started = time.perf_counter()
    await processor.start()
    await processor.wait_assigned()
    assigned = time.perf_counter()
    cpu_assigned = time.process_time()

    commands_metric = processor.metrics.commands

    def decided() -> float:
        # Only the commands counter: collecting the whole registry (histograms, the open
        # campaigns gauge walking every state) 100 times a second took ~3% of the worker's CPU.
        return sum(
            s.value
            for metric in commands_metric.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        )

    # Polling the in-process counter costs the worker little (no broker calls).
    while decided() < N:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    done = time.perf_counter()
    # CPU of this process (the worker; the broker is another process) per command: robust to
    # other load on the machine, unlike commands/s.
    cpu_us = (time.process_time() - cpu_assigned) / N * 1e6
    events = sum(
        s.value
        for metric in registry.collect()
        if metric.name == "pledgeflow_processor_events_written"
        for s in metric.samples
        if s.name.endswith("_total")
    )
    await processor.stop()
    return N / (done - assigned), N / (done - started), int(events), cpu_us


async def run_naive(bootstrap: str, prefix: str) -> float:
    """commands/s of the naive faust agent (subprocess), first event to last."""
    from schemas.topics import Topics, ensure_topics

    topics = Topics(prefix=prefix, partitions=PARTITIONS)
    await ensure_topics(bootstrap, topics)
    await preload(bootstrap, topics.commands, commands(N_NAIVE, "n"))
    # Every pledge is accepted (no goal is reached): one event per command.
    expected = N_NAIVE
    event_topics = topics.for_stream("campaign")
    env = {**os.environ, "BENCH_PREFIX": prefix, "BENCH_BOOTSTRAP": bootstrap}
    worker = spawn_naive(env)
    try:
        first = None
        seen = 0
        deadline = time.perf_counter() + 600
        while seen < expected:
            if worker.poll() is not None:
                raise RuntimeError("naive faust worker died")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"naive agent wrote {seen}/{expected} events")
            seen = await count_events(bootstrap, event_topics)
            if seen and first is None:
                first = (time.perf_counter(), seen)
            await asyncio.sleep(0.05)
        done = time.perf_counter()
        assert first is not None
        return (expected - first[1]) / (done - first[0])
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def spawn_naive(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the naive faust worker (``python -m bench.bench_processor naive worker``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.bench_processor", "naive", "worker", "-l", "warn"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def naive_app() -> Any:
    """The baseline: a faust app with one agent awaiting every event send."""
    import faust

    from schemas import decode_command
    from schemas.canonical import dumps
    from schemas.topics import Topics
    from services.pledge.domain import CampaignState, Policy, decide_with_bodies, evolve

    prefix = os.environ["BENCH_PREFIX"]
    topics = Topics(prefix=prefix, partitions=PARTITIONS)
    app = faust.App(
        f"{prefix}naive",
        broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
        store="memory://",
        topic_partitions=PARTITIONS,
        topic_replication_factor=1,
        web_enabled=False,
    )
    source = app.topic(
        topics.commands, key_type=bytes, value_type=bytes, key_serializer="raw",
        value_serializer="raw", internal=False,
    )  # fmt: skip
    sinks = {
        event_type: app.topic(name, key_serializer="raw", value_serializer="raw")
        for event_type, name in topics.event_topics().items()
    }
    states: dict[str, CampaignState] = {}
    policy = Policy()

    @app.agent(source)
    async def decide(stream: Any) -> None:
        async for key, value in stream.items():
            command = decode_command(value)
            cid = command.campaign_id
            state = states.get(cid) or states.setdefault(cid, CampaignState.empty(cid))
            for envelope, body in decide_with_bodies(state, command, datetime.now(UTC), policy):
                evolve(state, envelope)
                await sinks[envelope.event_type].send(key=key, value=dumps(body))

    return app


async def main() -> None:
    bootstrap = kafka_bootstrap()
    run = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        naive = await run_naive(bootstrap, f"{run}-naive.")
        print(f"naive faust agent: {naive:,.0f} commands/s ({N_NAIVE:,} commands)")
        rate, total_rate, events, cpu_us = await run_processor(bootstrap, f"{run}-real.")
    finally:
        await delete_topics(bootstrap, run)
    print(
        f"processor: {rate:,.0f} commands/s after assignment, {total_rate:,.0f} including "
        f"startup ({N:,} commands, {events:,} events), {cpu_us:.1f} us CPU per command"
    )
    write_result(
        "processor",
        "commands decided and committed per second, one worker (transactional, read_committed)",
        "commands/s",
        rate,
        baseline=("naive faust agent awaiting each send", naive),
        target=Target(value=20_000, ratio=4.0),
        seed=SEED,
        extra={
            "commands": N,
            "naive_commands": N_NAIVE,
            "campaigns": CAMPAIGNS,
            "partitions": PARTITIONS,
            "events": events,
            "rate_including_startup": round(total_rate, 1),
            "cpu_us_per_command": round(cpu_us, 1),
            # Two shared cores: other benches/tests running at the same time skew the figures.
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "naive":
        sys.argv = [sys.argv[0], *sys.argv[2:]]
        naive_app().main()
    else:
        asyncio.run(main())
