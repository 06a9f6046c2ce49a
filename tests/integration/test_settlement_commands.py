"""Settlement commands through the real ``settlement-commands`` topic: a payment-method fix
retried at once with the new card, a partial refund after settlement, a coproduction revenue
report distributed to the unit, refusals recorded, an undecodable or misrouted command
dead-lettered to ``settlement.dlq`` once (not again when its partition is rebuilt)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from schemas.codec import message_key
from schemas.envelope import Envelope
from schemas.events import (
    PaymentMethodUpdated,
    PledgeCaptured,
    PledgeCaptureFailed,
    PledgeRefunded,
    RefundRequested,
    RevenueShared,
    SettlementCommandRejected,
)
from schemas.money import allocate, bps_of
from schemas.settlement_commands import (
    RefundPledge,
    ReportRevenue,
    UpdatePaymentMethod,
    encode_settlement_command,
)
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from services.settlement.app import SettlementWorker
from services.settlement.config import SettlementSettings
from tests.support.processor import read_topics
from tests.support.settlement import T0, CampaignBook
from tests.support.settlement_kafka import FakeClock, audit_findings, read_stream, write_campaigns

pytestmark = pytest.mark.timeout(300)

CO_AMOUNTS = [1_000, 2_500, 2_500, 7_000, 333]


@dataclass
class Stack:
    worker: SettlementWorker
    sandbox: SandboxGateway
    settings: SettlementSettings
    producer: AIOKafkaProducer
    registry: CollectorRegistry

    async def send(self, command: RefundPledge | UpdatePaymentMethod | ReportRevenue) -> None:
        await self.producer.send_and_wait(
            self.settings.topics().settlement_commands,
            encode_settlement_command(command),
            key=message_key(command.campaign_id),
        )

    async def until(
        self, campaign_id: str, done: Callable[[list[Envelope]], bool]
    ) -> list[Envelope]:
        """The campaign's settlement stream once ``done`` holds for it."""
        topics = self.settings.topics()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            events = await read_stream(
                self.settings.kafka_bootstrap, topics, "settlement", campaign_id
            )
            if done(events):
                return events
            assert loop.time() < deadline, [e.event_type for e in events]
            await asyncio.sleep(0.2)


def ids(n: int) -> dict[str, object]:
    return {"command_id": f"cmd-{n}", "tenant_id": "tenant-1", "correlation_id": f"req-{n}",
            "issued_at": T0}  # fmt: skip


def has(kind: type, count: int = 1) -> Callable[[list[Envelope]], bool]:
    return lambda events: sum(isinstance(e.payload, kind) for e in events) >= count


@pytest.fixture(scope="module")
async def stack(bootstrap: str, redis_server: str) -> AsyncIterator[Stack]:
    from tests.conftest import delete_topics
    from tests.support.infra import unique_name

    prefix = unique_name() + "."
    settings = SettlementSettings(
        kafka_bootstrap=bootstrap, redis_url=redis_server, topic_prefix=prefix, partitions=2,
        sandbox_prefix=f"{prefix}sbx:", settlement_tick_seconds=0.05,
    )  # fmt: skip
    sandbox = SandboxGateway.from_url(redis_server, prefix=settings.sandbox_prefix)
    registry = CollectorRegistry()
    worker = SettlementWorker(settings, sandbox, clock=FakeClock(), registry=registry)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    fixable = CampaignBook(campaign_id="fixable", goal_minor=1_000).launch()
    fixable.pledge("declined", 2_500, "tok_declined")
    fixable.pledge("fine", 4_000, "tok_ok")
    fixable.close("funded")
    co = CampaignBook(campaign_id="co", goal_minor=1_000, coproduction=True).launch()
    for i, amount in enumerate(CO_AMOUNTS):
        co.pledge(f"b{i}", amount)
    co.close("funded")
    try:
        await producer.start()
        await worker.start()
        await write_campaigns(bootstrap, settings.topics(), prefix + "t", fixable.log + co.log)
        yield Stack(worker, sandbox, settings, producer, registry)
    finally:
        await producer.stop()
        await worker.stop()
        cleanup = SandboxGateway.from_url(redis_server, prefix=settings.sandbox_prefix)
        await cleanup.forget()
        await cleanup.aclose()
        await delete_topics(bootstrap, {prefix})


async def test_a_fixed_payment_method_is_captured_at_once(stack: Stack) -> None:
    from schemas.tenancy import pledge_key
    from services.pledge.adapters.payment_tokens import KafkaPaymentTokens

    await stack.until("fixable", has(PledgeCaptureFailed))
    # As the API does: the new token goes to the payment-token store, then the command
    # (which carries none) follows.
    settings = stack.settings
    tokens = KafkaPaymentTokens(settings.kafka_bootstrap, settings.topics().payment_tokens)
    await tokens.start()
    try:
        await tokens.put([(pledge_key("fixable", "declined"), "tok_ok")])
    finally:
        await tokens.stop()
    await stack.send(
        UpdatePaymentMethod(**ids(1), campaign_id="fixable", pledge_id="declined")  # type: ignore[arg-type]
    )
    events = await stack.until("fixable", has(PledgeCaptured, 2))
    payloads = [e.payload for e in events]
    assert PaymentMethodUpdated(pledge_id="declined") in payloads
    [retried] = [p for p in payloads if isinstance(p, PledgeCaptured) and p.pledge_id == "declined"]
    assert retried.attempt == 2
    assert (await stack.sandbox.pledge_counts("fixable", "declined")) == {
        "failed": 1,
        "collected": 1,
    }


async def test_a_partial_refund_after_settlement_is_paid_back_once(stack: Stack) -> None:
    from schemas.events import CampaignSettled

    await stack.until("fixable", has(CampaignSettled))
    refund = RefundPledge(
        **ids(2), campaign_id="fixable", pledge_id="fine", amount_minor=1_500,  # type: ignore[arg-type]
        reason="item_not_delivered", requested_by="platform-admin",
    )  # fmt: skip
    await stack.send(refund)
    await stack.send(refund)  # a retried command yields nothing new
    events = await stack.until("fixable", has(PledgeRefunded))
    payloads = [e.payload for e in events]
    [requested] = [p for p in payloads if isinstance(p, RefundRequested)]
    [refunded] = [p for p in payloads if isinstance(p, PledgeRefunded)]
    assert (requested.requested_by, refunded.amount.amount_minor) == ("platform-admin", 1_500)
    assert refunded.fee_refunded.amount_minor == 0
    assert (await stack.sandbox.pledge_counts("fixable", "fine"))["refunded_minor"] == 1_500
    campaign = await read_stream(
        stack.settings.kafka_bootstrap, stack.settings.topics(), "campaign", "fixable"
    )
    assert audit_findings(campaign + events) == []


async def test_a_coproduction_revenue_report_is_shared_to_the_unit(stack: Stack) -> None:
    from schemas.events import CampaignSettled

    await stack.until("co", has(CampaignSettled))
    await stack.send(
        ReportRevenue(
            **ids(3), campaign_id="co", period="2027-Q1", amount_minor=123_457, currency="EUR"
        )  # type: ignore[arg-type]
    )
    events = await stack.until("co", has(RevenueShared))
    [shared] = [e.payload for e in events if isinstance(e.payload, RevenueShared)]
    total = bps_of(123_457, 1_000)  # 10 % of the revenue
    assert shared.shared.amount_minor == total == sum(s.amount_minor for s in shared.shares)
    assert [s.amount_minor for s in shared.shares] == allocate(total, CO_AMOUNTS)


async def test_refused_commands_are_recorded(stack: Stack) -> None:
    await stack.send(
        RefundPledge(**ids(4), campaign_id="co", pledge_id="nobody", requested_by="x")  # type: ignore[arg-type]
    )
    events = await stack.until("co", has(SettlementCommandRejected))
    [rejected] = [e.payload for e in events if isinstance(e.payload, SettlementCommandRejected)]
    assert (rejected.command_id, rejected.reason) == ("cmd-4", "pledge_not_found")


Letter = tuple[int, bytes, dict[str, bytes]]


async def dead_letters(stack: Stack, *values: bytes) -> list[Letter]:
    """``(dlq.offset, value, headers)`` of the command dead letters in ``settlement.dlq``, once
    one of each of ``values`` is there."""
    topics = stack.settings.topics()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        records = await read_topics(
            stack.settings.kafka_bootstrap, [topics.dead_letter("settlement")], topics.partitions
        )
        letters = [
            (int(headers["dlq.offset"]), value, headers)
            for headers, value in ((dict(r[5]), r[4]) for r in records)
            if headers.get("dlq.topic") == topics.settlement_commands.encode()
        ]
        if set(values) <= {value for _, value, _ in letters}:
            return sorted(letters, key=lambda letter: letter[0])
        assert loop.time() < deadline, letters
        await asyncio.sleep(0.2)


def dead_lettered(stack: Stack, cause: str) -> float | None:
    return stack.registry.get_sample_value(
        "pledgeflow_settlement_dead_letters_total", {"cause": cause}
    )


async def test_garbage_and_misrouted_commands_are_dead_lettered(stack: Stack) -> None:
    topics = stack.settings.topics()
    await stack.producer.send_and_wait(topics.settlement_commands, b"{not json", key=b"co")
    misrouted = RefundPledge(**ids(5), campaign_id="co", pledge_id="b0", requested_by="x")  # type: ignore[arg-type]
    # A valid command keyed by another campaign: deciding it would write to a partition whose
    # commands this one's owner does not read.
    await stack.producer.send_and_wait(
        topics.settlement_commands, encode_settlement_command(misrouted), key=b"fixable"
    )
    await stack.send(
        RefundPledge(**ids(6), campaign_id="co", pledge_id="nobody-2", requested_by="x")  # type: ignore[arg-type]
    )
    events = await stack.until("co", lambda es: "cmd-6" in {e.causation_id for e in es})
    assert "cmd-5" not in {e.causation_id for e in events}  # it went on, past both
    wrong = encode_settlement_command(misrouted)
    letters = await dead_letters(stack, b"{not json", wrong)  # the bytes, untouched
    causes = {value: headers["dlq.cause"].decode() for _, value, headers in letters}
    assert (causes[b"{not json"], causes[wrong]) == ("undecodable", "wrong_key")
    assert (dead_lettered(stack, "undecodable"), dead_lettered(stack, "wrong_key")) == (1, 1)


async def test_a_rebuilt_partition_does_not_dead_letter_a_command_again(
    stack: Stack, redis_server: str
) -> None:
    topics = stack.settings.topics()
    await stack.producer.send_and_wait(topics.settlement_commands, b"[1, 2", key=b"fixable")
    await dead_letters(stack, b"[1, 2")
    # A second member joins the group: every partition is revoked and rebuilt, and each owner
    # reads its commands again from the beginning.
    sandbox = SandboxGateway.from_url(redis_server, prefix=stack.settings.sandbox_prefix)
    second = SettlementWorker(
        stack.settings, sandbox, clock=FakeClock(), registry=CollectorRegistry()
    )
    try:
        await second.start()
        await asyncio.wait_for(second.ready.wait(), 60)
        # Read in order after every earlier command of its partition, by its rebuilt owner.
        await stack.producer.send_and_wait(topics.settlement_commands, b"[3, 4", key=b"fixable")
        after = await dead_letters(stack, b"[3, 4")
    finally:
        await second.stop()
    offsets = [offset for offset, _, _ in after]
    assert len(offsets) == len(set(offsets)), after  # none written twice
    assert [value for _, value, _ in after].count(b"[1, 2") == 1


async def test_tokens_come_from_the_payment_tokens_topic(stack: Stack) -> None:
    # Through the API a token never enters the log: it is on payment-tokens, keyed by pledge.
    from schemas.tenancy import pledge_key
    from services.pledge.adapters.payment_tokens import KafkaPaymentTokens

    settings = stack.settings
    tokens = KafkaPaymentTokens(settings.kafka_bootstrap, settings.topics().payment_tokens)
    await tokens.start()
    try:
        await tokens.put(
            [
                (pledge_key("tokened", "bad"), "tok_declined"),
                (pledge_key("tokened", "ok"), "tok_ok"),
            ]
        )
    finally:
        await tokens.stop()
    book = CampaignBook(campaign_id="tokened", goal_minor=1_000).launch()
    book.pledge("bad", 2_000, token=None)
    book.pledge("ok", 2_000, token=None)
    book.close("funded")
    await write_campaigns(
        settings.kafka_bootstrap, settings.topics(), settings.topic_prefix + "t2", book.log
    )
    events = await stack.until(
        "tokened", lambda es: has(PledgeCaptured)(es) and has(PledgeCaptureFailed)(es)
    )
    [failed] = [e.payload for e in events if isinstance(e.payload, PledgeCaptureFailed)]
    [captured] = [e.payload for e in events if isinstance(e.payload, PledgeCaptured)]
    assert (failed.pledge_id, failed.reason, captured.pledge_id) == ("bad", "card_declined", "ok")
