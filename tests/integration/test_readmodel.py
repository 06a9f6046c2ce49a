"""The read-model projector against the real broker and Redis, fed with events written here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from schemas import (
    GENESIS_HASH,
    CampaignClosed,
    CampaignLaunched,
    Event,
    GoalReached,
    PledgeCancelled,
    PledgeMade,
    PledgeRejected,
    RejectionReason,
    message_key,
    stamp_and_encode,
)
from schemas.events import Tier
from schemas.money import FeeSchedule, Money
from services.pledge.adapters.redis_readmodel import Keys, ReadModelStore
from services.pledge.config import PledgeSettings
from services.pledge.projector import rebuild
from tests.support.api import api_settings, create_topics, eventually, projector
from tests.support.infra import kafka_bootstrap, redis_url, unique_name

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
EUR = "EUR"


def eur(minor: int) -> Money:
    return Money(amount_minor=minor, currency=EUR)


def launched(tenant: str = "tenant-a") -> CampaignLaunched:
    return CampaignLaunched(
        tenant_id=tenant,
        creator_id="u-9",
        title="Mon album",
        goal=eur(5000),
        deadline=NOW + timedelta(days=30),
        funding_model="all_or_nothing",
        settlement_mode="authorize_then_capture",
        commission_bps=500,
        fee_schedule=FeeSchedule(),
        tiers=(Tier(tier_id="t1", title="CD", min_amount_minor=2500, quantity_limit=10),),
    )


def made(pledge_id: str, minor: int, tier: str | None = "t1") -> PledgeMade:
    return PledgeMade(pledge_id=pledge_id, backer_id="b-1", amount=eur(minor), tier_id=tier)


class Log:
    """A campaign's stream: stamps events in seq order, produced in whatever order a test wants."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id = campaign_id
        self.prev = GENESIS_HASH
        self.records: list[tuple[str, bytes]] = []

    def add(self, event: Event, causation: str | None = None) -> int:
        seq = len(self.records) + 1
        envelope, value = stamp_and_encode(
            event,
            campaign_id=self.campaign_id,
            seq=seq,
            prev_hash=self.prev,
            occurred_at=NOW + timedelta(seconds=seq),
            causation_id=causation or f"cmd-{self.campaign_id}-{seq}",
            correlation_id="corr",
            index=0,
        )
        self.prev = envelope.hash
        self.records.append((event.event_type, value))
        return seq


@pytest_asyncio.fixture(loop_scope="session")
async def env(broker: Any, redis_server: str) -> AsyncIterator[tuple[PledgeSettings, Any]]:
    settings = api_settings(kafka_bootstrap(), redis_url(), unique_name("rm"))
    await create_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        transactional_id=f"{settings.topic_prefix}test-writer",
        enable_idempotence=True,
    )
    await producer.start()
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        yield settings, (producer, ReadModelStore(client, Keys(settings.topic_prefix)))
    finally:
        await producer.stop()
        await client.aclose()


async def write(
    settings: PledgeSettings, producer: AIOKafkaProducer, log: Log, seqs: list[int]
) -> None:
    """Write events ``seqs`` (1-based) of ``log`` in that order, in one transaction."""
    async with producer.transaction():
        for seq in seqs:
            event_type, value = log.records[seq - 1]
            await producer.send(
                f"{settings.topic_prefix}{event_type}", value, key=message_key(log.campaign_id)
            )


async def test_events_arriving_out_of_order_are_applied_in_seq_order(
    env: tuple[PledgeSettings, Any],
) -> None:
    settings, (producer, store) = env
    log = Log("c-1")
    log.add(launched())
    log.add(made("p-1", 3000))
    log.add(made("p-2", 2500))
    log.add(GoalReached(total=eur(5500), pledge_count=2))
    log.add(
        PledgeCancelled(pledge_id="p-1", amount=eur(3000), tier_id="t1", reason="backer_request")
    )
    async with projector(settings) as proj:
        await proj.ready.wait()
        await write(settings, producer, log, [5, 3, 2])  # the launch and seq 4 are missing
        await eventually(lambda: _held(proj, "c-1"))
        assert await store.campaign("c-1") is None  # nothing applied past a gap
        await write(settings, producer, log, [4, 1])

        async def summary() -> Any:
            row = await store.campaign("c-1")
            return row if row is not None and row.seq == 5 else None

        row = await eventually(summary)
    assert row.tenant_id == "tenant-a"
    doc = row.doc
    assert doc["status"] == "open" and doc["seq"] == 5
    assert doc["total"] == {"amount_minor": 2500, "currency": "EUR"}
    assert doc["pledge_count"] == 1
    assert doc["goal_reached_at"] == (NOW + timedelta(seconds=4)).strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z"
    )
    assert doc["tiers"] == [
        {
            "tier_id": "t1",
            "title": "CD",
            "min_amount_minor": 2500,
            "quantity_limit": 10,
            "remaining": 9,
        }
    ]
    p1 = await store.pledge("c-1", "p-1")
    p2 = await store.pledge("c-1", "p-2")
    assert p1 is not None and p1.status == "cancelled"
    assert p2 is not None and p2.status == "accepted" and p2.doc["seq"] == 3


async def _held(proj: Any, campaign_id: str) -> bool:
    return campaign_id in proj.held_campaigns()


async def test_a_redelivered_event_changes_nothing(env: tuple[PledgeSettings, Any]) -> None:
    settings, (producer, store) = env
    log = Log("c-2")
    log.add(launched())
    log.add(made("p-1", 3000))
    log.add(made("p-2", 2500))
    async with projector(settings):
        await write(settings, producer, log, [1, 2, 2, 3, 2, 1])

        async def applied() -> Any:
            row = await store.campaign("c-2")
            return row if row is not None and row.seq == 3 else None

        await eventually(applied)
        await write(settings, producer, log, [2, 3])  # a writer's retry, after the fact
        log.add(made("p-3", 100, tier=None))
        await write(settings, producer, log, [4])
        row = await eventually(lambda: _at_seq(store, "c-2", 4))
    assert row.doc["pledge_count"] == 3
    assert row.doc["total"]["amount_minor"] == 5600
    assert row.doc["tiers"][0]["remaining"] == 8


async def _at_seq(store: ReadModelStore, campaign_id: str, seq: int) -> Any:
    row = await store.campaign(campaign_id)
    return row if row is not None and row.seq == seq else None


async def test_refusals_and_decisions_are_recorded(env: tuple[PledgeSettings, Any]) -> None:
    settings, (producer, store) = env
    log = Log("c-3")
    log.add(launched(), causation="launch-cmd")
    log.add(made("p-1", 3000), causation="pledge-cmd-1")
    log.add(
        PledgeRejected(
            pledge_id="p-2",
            backer_id="b-2",
            amount=eur(10),
            reason=RejectionReason.BELOW_TIER_MINIMUM,
            detail="too small",
        ),
        causation="pledge-cmd-2",
    )
    log.add(
        PledgeRejected(
            pledge_id="p-1",
            backer_id="b-1",
            amount=eur(3000),
            reason=RejectionReason.CANCELLATION_WINDOW_CLOSED,
            detail="late",
        ),
        causation="cancel-cmd",
    )
    log.add(
        CampaignClosed(
            outcome="failed", reason="deadline", total=eur(3000), accepted_pledges=1, last_seq=5
        ),
        causation="close-cmd",
    )
    async with projector(settings):
        await write(settings, producer, log, [1, 2, 3, 4, 5])
        row = await eventually(lambda: _at_seq(store, "c-3", 5))
    assert row.doc["status"] == "closed" and row.doc["outcome"] == "failed"
    p1 = await store.pledge("c-3", "p-1")
    assert p1 is not None and p1.status == "accepted"
    assert p1.refusal == {"reason": "cancellation_window_closed", "detail": "late", "seq": 4}
    p2 = await store.pledge("c-3", "p-2")
    assert p2 is not None and p2.status == "rejected" and p2.doc["reason"] == "below_tier_minimum"
    assert await store.decision("pledge-cmd-1") == {
        "outcome": "accepted",
        "seq": 2,
        "event_type": "PledgeMade",
    }
    refused = await store.decision("pledge-cmd-2")
    assert refused is not None and refused["outcome"] == "refused"
    assert refused["reason"] == "below_tier_minimum"
    closed = await store.decision("close-cmd")
    assert closed is not None and closed["close_outcome"] == "failed"


async def test_rebuild_wipes_and_replays_to_the_same_read_model(
    env: tuple[PledgeSettings, Any],
) -> None:
    settings, (producer, store) = env
    log = Log("c-4")
    log.add(launched())
    for i in range(20):
        log.add(made(f"p-{i}", 2500 + i))
    async with projector(settings):
        await write(settings, producer, log, list(range(21, 0, -1)))
        before = await eventually(lambda: _at_seq(store, "c-4", 21))
    # Damage the read model, then rebuild it from the topics.
    await store.client.hset(
        Keys(settings.topic_prefix).campaign("c-4"), mapping={"doc": b"{}", "seq": 99}
    )
    await store.client.delete(Keys(settings.topic_prefix).pledge("c-4", "p-3"))
    applied = await rebuild(settings)
    assert applied == 21
    after = await store.campaign("c-4")
    assert after == before
    assert after is not None and after.doc is not None and after.doc["pledge_count"] == 20
    p3 = await store.pledge("c-4", "p-3")
    assert p3 is not None and p3.status == "accepted"


async def test_projector_metrics_show_applied_events_held_campaigns_lag_and_dead_letters(
    env: tuple[PledgeSettings, Any],
) -> None:
    from prometheus_client import CollectorRegistry

    from services.pledge.projector import Projector
    from services.pledge.projector.metrics import ReadModelMetrics

    settings, (producer, store) = env
    registry = CollectorRegistry()
    log = Log("c-metrics")
    log.add(launched())
    log.add(made("p-1", 3000))
    log.add(made("p-2", 2500))

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    client = aioredis.Redis.from_url(settings.redis_url)
    metrics = ReadModelMetrics.create(registry)
    proj = Projector(settings, client, metrics=metrics, lag_every_seconds=0)
    await proj.start()
    try:
        await write(settings, producer, log, [2, 3])  # the launch is missing: both held
        await proj.run_until_caught_up(idle_ms=200)
        assert sample("pledgeflow_readmodel_held_campaigns") == 1
        assert sample("pledgeflow_readmodel_events_applied_total", event_type="PledgeMade") == 0

        await write(settings, producer, log, [1, 2])  # the launch, and a redelivery of seq 2
        async with producer.transaction():
            await producer.send(f"{settings.topic_prefix}PledgeMade", b"{not json", key=b"c-x")
        await proj.run_until_caught_up(idle_ms=200)
    finally:
        await proj.stop()
        await client.aclose()
    assert await _at_seq(store, "c-metrics", 3) is not None
    assert sample("pledgeflow_readmodel_events_applied_total", event_type="PledgeMade") == 2
    assert sample("pledgeflow_readmodel_events_applied_total", event_type="CampaignLaunched") == 1
    assert sample("pledgeflow_readmodel_held_campaigns") == 0
    assert sample("pledgeflow_readmodel_dead_letters_total") == 1
    topic = f"{settings.topic_prefix}PledgeMade"
    assert registry.get_sample_value("pledgeflow_readmodel_lag_events", {"topic": topic}) == 0


async def test_after_a_loss_the_log_is_replayed_once_not_at_every_rebalance(
    env: tuple[PledgeSettings, Any],
) -> None:
    """Redis lost the read model: the running projector replays its partitions once; a
    member joining and leaving afterwards (two rebalances) reads nothing again."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from services.pledge.projector.metrics import ReadModelMetrics
    from services.pledge.projector.projector import Projector
    from services.streams import StreamMetrics

    settings, (producer, store) = env
    log = Log("c-once")
    log.add(launched())
    for i in range(20):
        log.add(made(f"p-{i}", 2500 + i))
    await write(settings, producer, log, list(range(1, 22)))

    def member() -> tuple[Projector, StreamMetrics]:
        registry = CollectorRegistry()
        streams = StreamMetrics.create(registry)
        proj = Projector(
            settings,
            store.client,
            metrics=ReadModelMetrics.create(registry),
            stream_metrics=streams,
            epoch_check_seconds=0.2,
        )
        return proj, streams

    def read(streams: StreamMetrics) -> float:
        return sum(s.value for m in streams.records.collect() for s in m.samples
                   if s.name.endswith("_total"))  # fmt: skip

    first, first_reads = member()
    stop = asyncio.Event()
    await first.start()
    task = asyncio.create_task(first.run(stop))
    try:
        await eventually(lambda: _at_seq(store, "c-once", 21), within=30)
        await store.wipe()
        await eventually(lambda: _at_seq(store, "c-once", 21), within=30)
        marker = Keys(settings.topic_prefix).projector_epoch()
        await eventually(lambda: store.client.exists(marker), within=30)
        assert first.rebuilds == 1
        replayed = read(first_reads)

        second, second_reads = member()
        second_stop = asyncio.Event()
        await second.start()
        second_task = asyncio.create_task(second.run(second_stop))

        async def split() -> bool:
            return bool(first._require().assigned_partitions) and bool(
                second._require().assigned_partitions
            )

        await eventually(split, within=60)
        await asyncio.sleep(1.0)
        second_stop.set()
        await second_task
        await second.stop()

        async def all_back() -> bool:
            return len(first._require().assigned_partitions) == settings.partitions

        await eventually(all_back, within=60)
        await asyncio.sleep(1.0)
        assert read(first_reads) == replayed and read(second_reads) == 0
        assert first.rebuilds == 1
    finally:
        stop.set()
        await task
        await first.stop()
