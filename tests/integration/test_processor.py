"""The campaign processor against the real broker: events, recovery, snapshots, DLQ, aborts."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from schemas import Envelope, message_key, verify_chain
from schemas.topics import Topics
from services.pledge.adapters.snapshots import encode_campaign, load_snapshot
from services.pledge.config import PledgeSettings
from services.pledge.processor import BeforeCommit, Processor, recover_partition
from services.pledge.processor.metrics import ProcessorMetrics
from services.streams import key_partition
from tests.support.processor import (
    T0,
    FakeClock,
    by_campaign,
    create_topics,
    launch,
    pledge,
    processor_settings,
    produce_commands,
    read_events,
    read_topics,
    replay_all,
    wait_for_events,
)

pytestmark = pytest.mark.integration


@asynccontextmanager
async def running(
    settings: PledgeSettings,
    *,
    clock: FakeClock | None = None,
    registry: CollectorRegistry | None = None,
    before_commit: BeforeCommit | None = None,
) -> AsyncIterator[Processor]:
    processor = Processor(
        settings,
        clock=clock or FakeClock(),
        metrics=ProcessorMetrics.create(registry or CollectorRegistry()),
        before_commit=before_commit,
    )
    await processor.start()
    try:
        await processor.wait_assigned()
        yield processor
    finally:
        await processor.stop()


def decisions(events: list[Envelope]) -> Counter[str]:
    """Causation ids of pledge decisions (PledgeMade or PledgeRejected), counted."""
    return Counter(
        e.causation_id for e in events if e.event_type in ("PledgeMade", "PledgeRejected")
    )


def count(n: int) -> Callable[[list[Envelope]], bool]:
    return lambda events: len(events) >= n


def assert_gapless(events: list[Envelope]) -> None:
    for cid, stream in by_campaign(events).items():
        assert [e.seq for e in stream] == list(range(1, len(stream) + 1)), cid
    assert verify_chain(sorted(events, key=lambda e: (e.campaign_id, e.seq))) is None


@pytest.fixture
async def setup(bootstrap: str, unique: str) -> tuple[PledgeSettings, Topics]:
    settings = processor_settings(bootstrap, unique)
    return settings, await create_topics(settings)


async def test_pledges_become_events_on_their_topics_gapless_and_chained(
    setup: tuple[PledgeSettings, Topics],
) -> None:
    settings, topics = setup
    campaigns = [f"camp-{i}" for i in range(4)]
    commands: list[Any] = [launch(c, goal_minor=10_000) for c in campaigns]
    commands += [pledge(campaigns[i % 4], f"p{i}") for i in range(40)]
    commands.append(pledge("camp-0", "p-usd", currency="USD"))
    async with running(settings):
        await produce_commands(settings.kafka_bootstrap, topics.commands, commands)
        # 4 launches + 41 decisions + one GoalReached per campaign (4 x 2500 = goal).
        events = await wait_for_events(settings.kafka_bootstrap, topics, count(49))
    assert len(events) == 49
    assert_gapless(events)
    assert set(decisions(events).values()) == {1}
    assert len(decisions(events)) == 41
    records = await read_topics(
        settings.kafka_bootstrap, topics.for_stream("campaign"), topics.partitions
    )
    for topic, _, _, key, value, _ in records:
        event_type = topic.removeprefix(topics.prefix)
        assert f'"event_type":"{event_type}"'.encode() in value
        assert key is not None and f'"campaign_id":"{key.decode()}"'.encode() in value
    types = Counter(e.event_type for e in events)
    assert types == {"CampaignLaunched": 4, "PledgeMade": 40, "GoalReached": 4, "PledgeRejected": 1}
    rejected = next(e for e in events if e.event_type == "PledgeRejected")
    assert rejected.payload.reason == "currency_mismatch"  # type: ignore[attr-defined]


async def test_restart_rebuilds_from_the_log_and_redelivered_commands_yield_nothing(
    setup: tuple[PledgeSettings, Topics],
) -> None:
    settings, topics = setup
    first: list[Any] = [launch("camp-a"), launch("camp-b")]
    first += [pledge("camp-a" if i % 2 else "camp-b", f"p{i}") for i in range(30)]
    async with running(settings):
        await produce_commands(settings.kafka_bootstrap, topics.commands, first)
        before = await wait_for_events(settings.kafka_bootstrap, topics, count(32))

    later = [pledge("camp-a", f"q{i}") for i in range(5)]
    async with running(settings) as processor:
        assert processor.states() == replay_all(before)
        # A client retry and a redelivery of already decided commands, then new ones.
        await produce_commands(settings.kafka_bootstrap, topics.commands, [*first[2:12], *later])
        after = await wait_for_events(settings.kafka_bootstrap, topics, count(37))
        await produce_commands(settings.kafka_bootstrap, topics.commands, [pledge("camp-b", "z")])
        after = await wait_for_events(settings.kafka_bootstrap, topics, count(38))
        assert processor.states() == replay_all(after)
    assert len(after) == 38
    assert_gapless(after)
    assert set(decisions(after).values()) == {1}
    camp_a = by_campaign(after)["camp-a"]
    assert [e.payload.pledge_id for e in camp_a[-5:]] == [f"q{i}" for i in range(5)]  # type: ignore[attr-defined]


async def test_snapshot_then_replay_gives_the_state_of_a_full_replay(
    bootstrap: str, unique: str
) -> None:
    settings = processor_settings(bootstrap, unique, snapshot_every_events=10)
    topics = await create_topics(settings)
    commands: list[Any] = [launch(f"c{i}") for i in range(6)]
    commands += [pledge(f"c{i % 6}", f"p{i}") for i in range(120)]
    async with running(settings):
        await produce_commands(settings.kafka_bootstrap, topics.commands, commands[:60])
        await wait_for_events(bootstrap, topics, count(60))
        await produce_commands(settings.kafka_bootstrap, topics.commands, commands[60:])
        events = await wait_for_events(bootstrap, topics, count(126))
    expected = replay_all(events)
    snapshots = 0
    for partition in range(topics.partitions):
        snapshot = await load_snapshot(bootstrap, topics.snapshots, partition)
        if snapshot is None:
            continue
        snapshots += 1
        with_snapshot = await recover_partition(bootstrap, topics, partition)
        full = await recover_partition(bootstrap, topics, partition, use_snapshot=False)
        assert with_snapshot.from_snapshot
        assert with_snapshot.replayed < full.replayed
        assert with_snapshot.states == full.states
        assert with_snapshot.states == {c: expected[c] for c in with_snapshot.states}
        assert with_snapshot.event_offsets == full.event_offsets
    assert snapshots >= 1
    # And a processor restarted from those snapshots carries on with the right seq.
    async with running(settings) as processor:
        assert processor.states() == expected
        await produce_commands(bootstrap, topics.commands, [pledge("c0", "late")])
        events = await wait_for_events(bootstrap, topics, count(127))
    assert_gapless(events)


async def test_a_processor_told_not_to_use_snapshots_rebuilds_from_the_first_event(
    bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = processor_settings(bootstrap, unique, snapshot_every_events=10)
    topics = await create_topics(settings)
    commands: list[Any] = [launch(f"c{i}") for i in range(6)]
    commands += [pledge(f"c{i % 6}", f"p{i}") for i in range(60)]
    async with running(settings):
        await produce_commands(bootstrap, topics.commands, commands[:30])
        await wait_for_events(bootstrap, topics, count(30))
        await produce_commands(bootstrap, topics.commands, commands[30:])
        events = await wait_for_events(bootstrap, topics, count(66))
    snapshots = [await load_snapshot(bootstrap, topics.snapshots, p) for p in range(3)]
    assert any(snapshots)
    caplog.set_level("INFO", logger="services.pledge.processor")
    caplog.clear()
    async with running(settings.model_copy(update={"processor_use_snapshots": False})) as proc:
        assert proc.states() == replay_all(events)
    rebuilt = [r.getMessage() for r in caplog.records if " rebuilt: " in r.getMessage()]
    assert len(rebuilt) == topics.partitions
    assert not [line for line in rebuilt if "after a snapshot" in line]
    replayed = sum(int(line.split(" campaigns, ")[1].split()[0]) for line in rebuilt)
    assert replayed == len(events)


async def test_a_campaign_snapshot_over_a_mebibyte_is_written_and_recovered_from(
    bootstrap: str, unique: str
) -> None:
    """A campaign of 24,000 pledges (API-style uuid pledge ids) snapshots to ~1.1 MiB, over
    the broker's default message limit: the snapshot topic takes it, and recovery starts
    from it instead of replaying the campaign's whole log."""
    settings = processor_settings(bootstrap, unique, partitions=1, snapshot_every_events=22_000)
    topics = await create_topics(settings)
    pledges = 24_000
    commands: list[Any] = [launch("c-big", goal_minor=10**9)]
    commands += [pledge("c-big", f"p-{uuid.uuid4()}") for _ in range(pledges)]
    async with running(settings):
        await produce_commands(bootstrap, topics.commands, commands)
        events = await wait_for_events(bootstrap, topics, count(pledges + 1), within=120)
    snapshot = await load_snapshot(bootstrap, topics.snapshots, 0)
    assert snapshot is not None and "c-big" in snapshot.states
    assert len(encode_campaign(snapshot.states["c-big"], snapshot.offsets)) > 1024 * 1024
    with_snapshot = await recover_partition(bootstrap, topics, 0)
    assert with_snapshot.from_snapshot
    assert with_snapshot.replayed < pledges - 20_000
    assert with_snapshot.states == replay_all(events)


async def test_poison_messages_go_to_the_dead_letter_topic_and_processing_goes_on(
    setup: tuple[PledgeSettings, Topics],
) -> None:
    settings, topics = setup
    good = launch("camp-p")
    async with running(settings) as processor:
        await produce_commands(
            settings.kafka_bootstrap,
            topics.commands,
            [
                good,
                (b"camp-p", b"\xff not json"),
                (b"camp-p", b'{"command_type":"MakePledge","campaign_id":"camp-p"}'),
                (None, b"[]"),
                # Valid command, but keyed by another campaign: would split a stream.
                (b"camp-x", pledge("camp-p", "misrouted").model_dump_json().encode()),
                pledge("camp-p", "after-poison"),
            ],
        )
        events = await wait_for_events(settings.kafka_bootstrap, topics, count(2))
        assert processor.metrics.dead_letters.labels("undecodable")._value.get() == 3
    assert [e.event_type for e in events] == ["CampaignLaunched", "PledgeMade"]
    dead = await read_topics(
        settings.kafka_bootstrap, [topics.dead_letter("pledge-commands")], topics.partitions
    )
    assert len(dead) == 4
    causes = Counter(dict(headers)["dlq.cause"].decode() for *_, headers in dead)
    assert causes == {"undecodable": 3, "wrong_key": 1}
    values = {value for *_, value, _ in dead}
    assert b"\xff not json" in values  # the original bytes, untouched


async def test_a_read_committed_consumer_never_sees_an_aborted_batch(
    setup: tuple[PledgeSettings, Topics],
) -> None:
    settings, topics = setup
    failures = {"left": 1}

    async def fail_once(partition: int) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("injected failure before commit")

    registry = CollectorRegistry()
    commands: list[Any] = [launch("camp-t"), *[pledge("camp-t", f"p{i}") for i in range(10)]]
    async with running(settings, before_commit=fail_once, registry=registry):
        await produce_commands(settings.kafka_bootstrap, topics.commands, commands)
        committed = await wait_for_events(settings.kafka_bootstrap, topics, count(11))
    assert failures["left"] == 0
    assert (
        registry.get_sample_value("pledgeflow_processor_transactions_total", {"result": "aborted"})
        == 1
    )
    uncommitted = await read_events(
        settings.kafka_bootstrap, topics, isolation_level="read_uncommitted"
    )
    # The aborted batch really was written (read_uncommitted sees it twice) ...
    assert len(uncommitted) > len(committed)
    # ... but read_committed sees each event once, gapless and chained.
    assert len(committed) == 11
    assert_gapless(committed)
    assert set(decisions(committed).values()) == {1}


async def test_the_timer_closes_a_campaign_when_the_clock_passes_its_deadline(
    setup: tuple[PledgeSettings, Topics],
) -> None:
    settings, topics = setup
    clock = FakeClock()
    deadline = T0 + timedelta(days=2)
    commands: list[Any] = [
        launch("camp-d", deadline=deadline, goal_minor=5_000),
        pledge("camp-d", "p1"),
        pledge("camp-d", "p2"),
    ]
    async with running(settings, clock=clock) as processor:
        await produce_commands(settings.kafka_bootstrap, topics.commands, commands)
        await wait_for_events(settings.kafka_bootstrap, topics, count(4))
        clock.advance(timedelta(days=3))
        events = await wait_for_events(settings.kafka_bootstrap, topics, count(5))
        state = processor.state("camp-d")
        assert state is not None and state.status == "closed"
    closed = events[-1]
    assert closed.event_type == "CampaignClosed"
    assert closed.payload.outcome == "funded"  # type: ignore[attr-defined]
    assert closed.payload.reason == "deadline"  # type: ignore[attr-defined]
    assert closed.occurred_at == clock.now
    assert_gapless(events)


async def test_metrics_count_commands_by_type_and_outcome(
    setup: tuple[PledgeSettings, Topics],
) -> None:
    settings, topics = setup
    registry = CollectorRegistry()
    commands: list[Any] = [
        launch("camp-m"),
        pledge("camp-m", "ok"),
        pledge("camp-m", "bad", currency="JPY"),
        pledge("camp-nope", "lost"),
    ]
    async with running(settings, registry=registry):
        await produce_commands(settings.kafka_bootstrap, topics.commands, commands)
        await wait_for_events(settings.kafka_bootstrap, topics, count(4))
        assert registry.get_sample_value("pledgeflow_processor_campaigns_open") == 1

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert (
        sample("pledgeflow_processor_commands_total", command_type="MakePledge", outcome="accepted")
        == 1
    )
    assert (
        sample("pledgeflow_processor_commands_total", command_type="MakePledge", outcome="rejected")
        == 2
    )
    assert sample("pledgeflow_processor_rejections_total", reason="currency_mismatch") == 1
    assert sample("pledgeflow_processor_rejections_total", reason="campaign_not_found") == 1
    assert sample("pledgeflow_processor_decision_latency_seconds_count") == 4
    assert sample("pledgeflow_processor_recovery_seconds_count") == settings.partitions


def test_an_unreachable_broker_stops_the_worker_with_one_line_and_exit_1() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PLEDGEFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "processor", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("processor: Kafka at 127.0.0.1:1 unreachable: ")
    )


async def test_a_partition_whose_transaction_hangs_holds_back_no_other_partition(
    setup: tuple[PledgeSettings, Topics],
) -> None:
    """Each partition has its own transaction in flight: one stuck before its commit (a slow
    coordinator, a retry) delays only its own commands, and those it polled meanwhile are
    written together in its next transaction."""
    settings, topics = setup
    held, free = "camp-held", "camp-free"
    number = key_partition(message_key(held), settings.partitions)
    while key_partition(message_key(free), settings.partitions) == number:
        free += "-x"
    gate, entered = asyncio.Event(), asyncio.Event()
    armed = {"on": False}

    async def hang(partition: int) -> None:
        if armed["on"] and partition == number:
            armed["on"] = False
            entered.set()
            await gate.wait()

    registry = CollectorRegistry()

    def committed() -> float:
        value = registry.get_sample_value(
            "pledgeflow_processor_transactions_total", {"result": "committed"}
        )
        return value or 0.0

    async with running(settings, before_commit=hang, registry=registry):
        bootstrap = settings.kafka_bootstrap
        await produce_commands(bootstrap, topics.commands, [launch(held), launch(free)])
        await wait_for_events(bootstrap, topics, count(2))
        try:
            armed["on"] = True
            await produce_commands(bootstrap, topics.commands, [pledge(held, "h0")])
            await asyncio.wait_for(entered.wait(), 30)
            await produce_commands(
                bootstrap, topics.commands, [pledge(held, f"h{i}") for i in (1, 2, 3)]
            )
            # Appended after h1..h3: the poll that brings it brings them too.
            await produce_commands(bootstrap, topics.commands, [pledge(free, "f0")])
            events = await wait_for_events(
                bootstrap, topics, lambda es: any(e.causation_id == "cmd-f0" for e in es), within=20
            )
            assert not [e for e in events if e.campaign_id == held and e.seq > 1]
            before = committed()
        finally:
            gate.set()  # the stuck transaction goes on (also when a check failed)
        events = await wait_for_events(bootstrap, topics, count(2 + 5))
        # The stuck transaction, then one for everything its partition polled meanwhile.
        assert committed() == before + 2
    assert_gapless(events)
    assert set(decisions(events).values()) == {1}


async def test_a_rebuild_during_a_long_poll_loses_no_command(bootstrap: str, unique: str) -> None:
    """A transaction fails while the loop waits in a long poll: the rebuild seeks back to the
    committed offset, and the poll then returns the re-read commands. They are read again
    rather than dropped as stale (which lost them: nothing would fetch them again)."""
    settings = processor_settings(bootstrap, unique, processor_poll_ms=5000)
    topics = await create_topics(settings)
    failures = {"left": 1}

    async def fail_once(partition: int) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("injected failure before commit")

    commands: list[Any] = [launch("camp-l"), *[pledge("camp-l", f"p{i}") for i in range(5)]]
    async with running(settings, before_commit=fail_once):
        await produce_commands(settings.kafka_bootstrap, topics.commands, commands)
        events = await wait_for_events(settings.kafka_bootstrap, topics, count(6), within=30)
    assert failures["left"] == 0
    assert len(events) == 6
    assert_gapless(events)
