"""Payment tokens do not outlive their use: a worker that starts on partitions whose pledges
are already resolved (the tombstones of a crashed predecessor never written) erases their
tokens, and leaves the token of a pledge whose capture failed (a retry still needs it)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from schemas.tenancy import pledge_key
from schemas.topics import ensure_topics
from services.pledge.adapters.payment_tokens import KafkaPaymentTokens, load_payment_tokens
from services.settlement.adapters.memory_gateway import MemoryGateway
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from services.settlement.app import SettlementWorker
from services.settlement.config import SettlementSettings
from services.settlement.domain import GatewayResult, Policy, plan
from tests.support.settlement import T0, CampaignBook, settle
from tests.support.settlement_kafka import FakeClock, write_campaigns

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_a_starting_worker_erases_the_tokens_of_resolved_pledges(
    bootstrap: str, redis_server: str
) -> None:
    from tests.conftest import delete_topics
    from tests.support.infra import unique_name

    prefix = unique_name() + "."
    settings = SettlementSettings(
        kafka_bootstrap=bootstrap, redis_url=redis_server, topic_prefix=prefix, partitions=2,
        sandbox_prefix=f"{prefix}sbx:", settlement_tick_seconds=0.05,
    )  # fmt: skip
    topics = settings.topics()
    await ensure_topics(bootstrap, topics)
    settled = CampaignBook(campaign_id="done", goal_minor=1_000).launch()
    settled.pledge("kept", 2_500, token=None)
    settled.pledge("voided", 1_000, token=None)
    settled.cancel("voided")
    settled.close("funded")
    settle(settled, MemoryGateway(), policy=Policy(retry_schedule=(timedelta(days=1),)))
    assert settled.state.settled is not None
    failing = CampaignBook(campaign_id="failing", goal_minor=1_000).launch()
    failing.pledge("declined", 2_500, token=None)
    failing.close("funded")
    [capture] = [c for c in plan(failing.state, T0, Policy()) if c.kind == "capture"]
    failing.decide(GatewayResult(capture, ok=False, code="card_declined", detail="no"))
    tokens = KafkaPaymentTokens(bootstrap, topics.payment_tokens)
    await tokens.start()
    sandbox = SandboxGateway.from_url(redis_server, prefix=settings.sandbox_prefix)
    worker = SettlementWorker(settings, sandbox, clock=FakeClock(), registry=CollectorRegistry())
    try:
        await tokens.put(
            [
                (pledge_key("done", "kept"), "tok_ok"),
                (pledge_key("done", "voided"), "tok_ok"),
                (pledge_key("failing", "declined"), "tok_declined"),
            ]
        )
        log = settled.log + failing.log
        await write_campaigns(bootstrap, topics, prefix + "t", log)
        await write_campaigns(bootstrap, topics, prefix + "t", log, "settlement")
        await worker.start()
        left: dict[str, str] = {}
        for _ in range(100):
            left = await load_payment_tokens(bootstrap, topics.payment_tokens, 2)
            if pledge_key("done", "kept") not in left:
                break
            await asyncio.sleep(0.1)
        assert pledge_key("done", "kept") not in left  # captured
        assert pledge_key("done", "voided") not in left  # released (cancelled)
        assert left.get(pledge_key("failing", "declined")) == "tok_declined"  # retry owed
        assert worker.eraser.erased == 2
    finally:
        await worker.stop()
        await tokens.stop()
        cleanup = SandboxGateway.from_url(redis_server, prefix=settings.sandbox_prefix)
        await cleanup.forget()
        await cleanup.aclose()
        await delete_topics(bootstrap, {prefix})
