"""The stream runtime against the real broker: transactional writes, ordered reads, dead letters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from schemas import message_key
from schemas.envelope import Stamped
from schemas.topics import Topics, ensure_topics
from services.pledge.domain import CampaignState, decide, evolve
from services.streams import (
    ChainHeads,
    OrderedStreamReader,
    PartitionWriter,
    ReaderWorker,
    Readiness,
    Run,
    SeqOrderer,
    StreamMetrics,
    key_partition,
    replay_partition,
    serve,
)
from tests.support.processor import launch, pledge, read_topics

pytestmark = pytest.mark.integration

PARTITIONS = 2
NOW = datetime(2030, 1, 1, tzinfo=UTC)


class Abort(Exception):
    pass


def by_topic(
    topics: Topics, key: bytes, events: list[tuple[str, bytes]]
) -> dict[str, list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]]:
    """Records grouped per topic, as PartitionWriter.write takes them."""
    out: dict[str, list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]] = {}
    for event_type, value in events:
        out.setdefault(topics.for_event(event_type), []).append((key, value, []))
    return out


def campaign_events(campaign_id: str, pledges: int) -> list[tuple[str, bytes]]:
    """``(event_type, bytes)`` of a launch and ``pledges`` pledges, seq 1.. in order."""
    from schemas import encode

    state = CampaignState.empty(campaign_id)
    out = []
    commands = [launch(campaign_id, issued_at=NOW)] + [
        pledge(campaign_id, f"{campaign_id}-p{i}", issued_at=NOW) for i in range(pledges)
    ]
    for command in commands:
        for envelope in decide(state, command, NOW + timedelta(seconds=1)):
            evolve(state, envelope)
            out.append((envelope.event_type, encode(envelope)))
    return out


@pytest.fixture
async def topics(bootstrap: str, unique: str) -> AsyncIterator[Topics]:
    topics = Topics(prefix=f"{unique}.", partitions=PARTITIONS)
    await ensure_topics(bootstrap, topics)
    yield topics


class Collector:
    """A handler keeping every run it was given."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.fail = 0

    async def __call__(self, runs: list[Run]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("store down")
        self.runs.extend(runs)

    def seqs(self, campaign_id: str) -> list[int]:
        return [
            e.envelope.seq
            for run in self.runs
            for e in run
            if e.envelope.campaign_id == campaign_id
        ]


def reader(bootstrap: str, topics: Topics, handler: Collector, **kw: object) -> OrderedStreamReader:
    return OrderedStreamReader(
        bootstrap=bootstrap,
        group_id=f"{topics.prefix}readmodel",
        topics=topics.for_stream("campaign"),
        topic_of=topics.event_topics(),
        dead_letter_topic=topics.dead_letter("readmodel"),
        handler=handler,
        metrics=StreamMetrics.create(CollectorRegistry()),
        **kw,  # type: ignore[arg-type]
    )


async def until(predicate: object, r: OrderedStreamReader, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met (held {r.held}, dead {r.dead_lettered})")
        try:
            await r.step(timeout_ms=100)
        except ConnectionError:
            continue  # the handler's store was down: the next step hands the runs again


def partition_of(campaign_id: str) -> int:
    return key_partition(message_key(campaign_id), PARTITIONS)


async def test_an_aborted_transaction_is_never_delivered(bootstrap: str, topics: Topics) -> None:
    events = campaign_events("c-abort", 2)
    p = partition_of("c-abort")

    async def boom(_partition: int) -> None:
        raise Abort

    failing = PartitionWriter(bootstrap, f"{topics.prefix}w", p, before_commit=boom)
    await failing.start()
    key = message_key("c-abort")
    with pytest.raises(Abort):
        await failing.write(by_topic(topics, key, events[:1]))
    await failing.close()
    writer = PartitionWriter(bootstrap, f"{topics.prefix}w", p)
    await writer.start()
    ends = await writer.write(by_topic(topics, key, events[:1]))
    await writer.write(by_topic(topics, key, events[1:]))
    await writer.close()
    assert ends[topics.for_event("CampaignLaunched")] > 0
    got = Collector()
    r = reader(bootstrap, topics, got)
    await r.start()
    try:
        await until(lambda: len(got.seqs("c-abort")) == 3, r)
        await r.step(timeout_ms=300)
    finally:
        await r.stop()
    assert got.seqs("c-abort") == [1, 2, 3]  # the aborted copy of seq 1 never came
    assert r.dead_lettered == 0


async def test_a_held_event_is_released_when_its_predecessor_arrives(
    bootstrap: str, topics: Topics
) -> None:
    (launch_type, launched), (made_type, made) = campaign_events("c-hold", 1)
    p = partition_of("c-hold")
    key = message_key("c-hold")
    writer = PartitionWriter(bootstrap, f"{topics.prefix}w", p)
    await writer.start()
    await writer.write({topics.for_event(made_type): [(key, made, [])]})  # seq 2 first
    got = Collector()
    r = reader(bootstrap, topics, got)
    await r.start()
    try:
        await until(lambda: r.held == 1, r)
        assert got.seqs("c-hold") == []
        # Nothing at or after the held event is committed: a restart re-reads it.
        held_tp = TopicPartition(topics.for_event(made_type), p)
        assert r.committable()[held_tp] == 0
        await writer.write({topics.for_event(launch_type): [(key, launched, [])]})
        await until(lambda: len(got.seqs("c-hold")) == 2, r)
        assert got.seqs("c-hold") == [1, 2]
        assert len(got.runs[-1]) == 2  # one run, in seq order
        assert r.held == 0
        assert r.committable()[held_tp] >= 1  # past it (and its transaction marker)
    finally:
        await writer.close()
        await r.stop()


async def test_a_dead_letter_carries_its_cause_and_the_reader_goes_on(
    bootstrap: str, topics: Topics
) -> None:
    events = campaign_events("c-dlq", 1)
    p = partition_of("c-dlq")
    key = message_key("c-dlq")
    made_topic = topics.for_event("PledgeMade")
    writer = PartitionWriter(bootstrap, f"{topics.prefix}w", p)
    await writer.start()
    await writer.write({made_topic: [(key, b'{"event_type": "PledgeMa', [])]})
    outsider = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await outsider.start()
    await outsider.send_and_wait(made_topic, events[1][1], key=key, partition=p)
    await outsider.stop()
    await writer.write(by_topic(topics, key, events))
    await writer.close()
    got = Collector()
    got.fail = 1  # the store is down once: the same runs come again
    r = reader(bootstrap, topics, got)
    await r.start()
    try:
        await until(lambda: len(got.seqs("c-dlq")) == 2, r)
    finally:
        await r.stop()
    assert got.seqs("c-dlq") == [1, 2]
    letters = await read_topics(bootstrap, [topics.dead_letter("readmodel")], PARTITIONS)
    causes = sorted(dict(headers)["dlq.cause"].decode() for *_, headers in letters)
    assert causes == ["malformed", "outside_transaction"]
    for *_, headers in letters:
        h = dict(headers)
        assert h["dlq.topic"].decode() == made_topic
        assert h["dlq.partition"].decode() == str(p)


async def test_a_rebuilt_chain_head_continues_the_chain(bootstrap: str, topics: Topics) -> None:
    """Stamp with ChainHeads, write, rebuild the heads from the log, stamp on: one chain."""
    from schemas import CampaignClosed, GoalReached, Money

    heads = ChainHeads()
    p = partition_of("c-chain")
    key = message_key("c-chain")
    writer = PartitionWriter(bootstrap, f"{topics.prefix}w", p)
    await writer.start()

    async def write(stamped: list[Stamped]) -> None:
        await writer.write({topics.for_event(e.event_type): [(key, b, [])] for e, _, b in stamped})

    first = heads.stamp(
        [GoalReached(total=Money(amount_minor=1, currency="EUR"), pledge_count=1)],
        campaign_id="c-chain",
        stream="campaign",
        occurred_at=NOW,
        causation_id="cmd-1",
        correlation_id="corr-1",
    )
    await write(first)
    rebuilt = ChainHeads()
    replayed = await replay_partition(
        bootstrap, topics.for_stream("campaign"), p, rebuilt.apply, orderer=SeqOrderer()
    )
    assert replayed.applied == 1 and not replayed.gaps
    assert rebuilt.head("c-chain", "campaign") == (1, first[0][0].hash)
    second = rebuilt.stamp(
        [
            CampaignClosed(
                outcome="funded",
                reason="deadline",
                total=Money(amount_minor=1, currency="EUR"),
                accepted_pledges=1,
                last_seq=1,
            )
        ],
        campaign_id="c-chain",
        stream="campaign",
        occurred_at=NOW,
        causation_id="cmd-2",
        correlation_id="corr-2",
    )
    await write(second)
    await writer.close()
    assert second[0][0].seq == 2
    assert second[0][0].prev_hash == first[0][0].hash


async def test_a_full_hold_back_pauses_the_waiting_topic_until_the_predecessor_comes(
    bootstrap: str, topics: Topics
) -> None:
    """hold_limit=2: three pledges before their launch fill it; the PledgeMade partition is
    paused, the launch (another topic) still arrives, and everything comes out in order."""
    events = campaign_events("c-full", 4)
    p = partition_of("c-full")
    key = message_key("c-full")
    writer = PartitionWriter(bootstrap, f"{topics.prefix}w", p)
    await writer.start()
    await writer.write(by_topic(topics, key, events[1:4]))  # seq 2, 3, 4
    got = Collector()
    r = reader(bootstrap, topics, got, hold_limit=2)
    await r.start()
    try:
        await until(lambda: r.held == 3, r)
        await r.step(timeout_ms=100)
        made = TopicPartition(topics.for_event("PledgeMade"), p)
        assert r._require().paused() == {made}
        await writer.write(by_topic(topics, key, events[4:] + events[:1]))  # seq 5, then 1
        await until(lambda: len(got.seqs("c-full")) == 5, r)
        assert got.seqs("c-full") == [1, 2, 3, 4, 5]
        await r.step(timeout_ms=100)
        assert r._require().paused() == set()
    finally:
        await writer.close()
        await r.stop()


async def test_a_handler_commits_its_consumed_offsets_in_its_own_transaction(
    bootstrap: str, topics: Topics
) -> None:
    """commit=False: the handler writes its output and the reader's consumed offsets in one
    transaction; the group's committed offsets are exactly those, and a restarted reader
    (seeded from the handler's state) goes on with the next event only."""
    p = partition_of("c-tx")
    key = message_key("c-tx")
    group = f"{topics.prefix}notify"
    source = PartitionWriter(bootstrap, f"{topics.prefix}src", p)
    await source.start()
    await source.write(by_topic(topics, key, campaign_events("c-tx", 1)))
    out_topic = topics.dead_letter("audit")  # any registry topic serves as the output here
    sink = PartitionWriter(bootstrap, group, p)
    await sink.start()
    seen: list[int] = []
    r: OrderedStreamReader

    async def handle(runs: list[Run]) -> None:
        records = [(key, e.envelope.event_id.bytes, []) for run in runs for e in run]
        await sink.write({out_topic: records}, consumed=r.consumed_offsets(p))
        seen.extend(e.envelope.seq for run in runs for e in run)

    async def seed(keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        return {k: len(seen) for k in keys}

    def make() -> OrderedStreamReader:
        return OrderedStreamReader(
            bootstrap=bootstrap,
            group_id=group,
            topics=topics.for_stream("campaign"),
            topic_of=topics.event_topics(),
            dead_letter_topic=topics.dead_letter("notify"),
            handler=handle,
            seed=seed,
            commit=False,
            metrics=StreamMetrics.create(CollectorRegistry()),
        )

    r = make()
    await r.start()
    try:
        await until(lambda: seen == [1, 2], r)
        expected = r.consumed_offsets(p)
    finally:
        await r.stop()
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await probe.start()
    try:
        committed = {tp: await probe.committed(tp) for tp in expected}
    finally:
        await probe.stop()
    assert committed == expected and all(expected.values())
    await source.write(by_topic(topics, key, campaign_events("c-tx", 2)[2:]))  # seq 3
    r = make()
    await r.start()
    try:
        await until(lambda: len(seen) == 3, r)
    finally:
        await r.stop()
        await sink.close()
        await source.close()
    assert seen == [1, 2, 3]


async def test_a_served_reader_drains_and_commits_when_stopped(
    bootstrap: str, topics: Topics
) -> None:
    """serve(ReaderWorker(reader)): runs until stopped (SIGTERM in a process), then the step
    in flight finishes and what was handed over is committed before the group is left."""
    p = partition_of("c-serve")
    key = message_key("c-serve")
    writer = PartitionWriter(bootstrap, f"{topics.prefix}w", p)
    await writer.start()
    await writer.write(by_topic(topics, key, campaign_events("c-serve", 1)))
    await writer.close()
    got = Collector()
    r = reader(bootstrap, topics, got)
    stop = asyncio.Event()
    readiness = Readiness()
    served = asyncio.create_task(serve(ReaderWorker(r, poll_ms=50), readiness=readiness, stop=stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(got.seqs("c-serve")) < 2:
        assert loop.time() < deadline and not served.done()
        await asyncio.sleep(0.05)
    assert readiness.is_set()
    stop.set()
    await asyncio.wait_for(served, 30)
    assert not readiness.is_set()
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=r.group_id)
    await probe.start()
    try:
        launched = TopicPartition(topics.for_event("CampaignLaunched"), p)
        assert (await probe.committed(launched) or 0) >= 1
    finally:
        await probe.stop()


async def test_transactions_with_consumed_offsets_need_no_produce_retries(
    bootstrap: str, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    """Offsets sent while a transaction's produce requests are in flight made Kafka >= 3.6
    (KIP-890) answer them NOT_ENOUGH_REPLICAS (a retry and a warning each): the writer adds
    the offsets once its records are delivered, so a steady stream of transactions needs no
    retry."""
    commands = topics.commands
    writers = [PartitionWriter(bootstrap, f"{topics.prefix}w", p) for p in range(PARTITIONS)]
    await asyncio.gather(*(w.start() for w in writers))
    records = {
        topics.for_event("PledgeMade"): [(b"k", b"x" * 200, [])],
        topics.for_event("GoalReached"): [(b"k", b"y" * 200, [])],
    }

    async def transactions(writer: PartitionWriter) -> None:
        for offset in range(1, 61):
            consumed = {TopicPartition(commands, writer.partition): offset}
            await writer.write(records, consumed=consumed)
            await asyncio.sleep(0.02)

    caplog.set_level(logging.WARNING, logger="aiokafka")
    try:
        await asyncio.gather(*(transactions(w) for w in writers))
    finally:
        await asyncio.gather(*(w.close() for w in writers))
    retries = [r for r in caplog.records if "NotEnoughReplicas" in r.getMessage()]
    assert retries == []


async def test_a_commit_interval_defers_the_commits_of_steps_not_of_leaving(
    bootstrap: str, topics: Topics
) -> None:
    """``commit_interval_ms``: a step commits only when the interval has passed since the
    last commit (one round trip to the coordinator less per poll); what was handed over is
    still committed when the reader leaves."""
    p = partition_of("c-int")
    key = message_key("c-int")
    events = campaign_events("c-int", 2)
    writer = PartitionWriter(bootstrap, f"{topics.prefix}w", p)
    await writer.start()
    await writer.write(by_topic(topics, key, events[:2]))
    got = Collector()
    r = reader(bootstrap, topics, got, commit_interval_ms=600_000)
    made = TopicPartition(topics.for_event("PledgeMade"), p)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=r.group_id)
    await probe.start()
    try:
        await r.start()
        await until(lambda: len(got.seqs("c-int")) == 2, r)
        committed = await probe.committed(made)
        await writer.write(by_topic(topics, key, events[2:]))  # seq 3
        await until(lambda: len(got.seqs("c-int")) == 3, r)
        handled = r.committable()[made]
        assert handled > (committed or 0)
        assert await probe.committed(made) == committed  # no commit within the interval
        await r.stop()
        assert await probe.committed(made) == handled
    finally:
        await probe.stop()
        await writer.close()
        await r.stop()


async def test_caught_up_commits_what_the_commit_interval_deferred(
    bootstrap: str, topics: Topics
) -> None:
    """``run_until_caught_up`` (rebuilds, tests) returns with its offsets committed and no lag
    left, whatever the commit interval: a rebuild's end is not left to the next step."""
    p = partition_of("c-cu")
    key = message_key("c-cu")
    events = campaign_events("c-cu", 2)
    writer = PartitionWriter(bootstrap, f"{topics.prefix}w", p)
    await writer.start()
    got = Collector()
    r = reader(bootstrap, topics, got, commit_interval_ms=600_000, lag_every_seconds=0)
    made = TopicPartition(topics.for_event("PledgeMade"), p)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=r.group_id)
    await probe.start()
    try:
        await r.start()
        await writer.write(by_topic(topics, key, events[:2]))
        await r.run_until_caught_up(idle_ms=200)
        await writer.write(by_topic(topics, key, events[2:]))  # seq 3, after the first commit
        await r.run_until_caught_up(idle_ms=200)
        assert got.seqs("c-cu") == [1, 2, 3]
        assert await probe.committed(made) == r.committable()[made]
        assert all(lag == 0 for lag in r.lag().values())
    finally:
        await probe.stop()
        await writer.close()
        await r.stop()
