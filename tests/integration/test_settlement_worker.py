"""The settlement worker on the real Kafka and Redis, with the sandbox gateway and an injected
clock: an all-or-nothing campaign funded (captures, retries, drops, CampaignSettled), one
failed (every authorization voided), a charge_then_refund one failed (every charge refunded).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from schemas.envelope import Envelope
from schemas.events import (
    CampaignSettled,
    PledgeCaptured,
    PledgeCaptureFailed,
    PledgeRefunded,
    PledgeReleased,
)
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from services.settlement.app import SettlementWorker
from services.settlement.config import SettlementSettings
from tests.support.settlement import CampaignBook
from tests.support.settlement_kafka import FakeClock, audit_findings, read_stream, write_campaigns

PLEDGES = 1_000
pytestmark = pytest.mark.timeout(300)


def token(i: int) -> str:
    # 3 % declined at every capture, 2 % failing once, the rest fine.
    if i % 100 < 3:
        return "tok_declined"
    if i % 100 < 5:
        return "tok_fail_once"
    return "tok_ok"


def books() -> list[CampaignBook]:
    funded = CampaignBook(campaign_id="aon-funded", goal_minor=100_000, commission_bps=500).launch()
    for i in range(PLEDGES):
        funded.pledge(f"p{i}", 1_000 + 17 * i, token(i))
    funded.close("funded")
    failed = CampaignBook(campaign_id="aon-failed", goal_minor=10**9).launch()
    for i in range(40):
        failed.pledge(f"p{i}", 2_500, token(i))
    failed.close("failed")
    charged = CampaignBook(
        campaign_id="ctr-failed", goal_minor=10**9, settlement_mode="charge_then_refund"
    ).launch()
    for i in range(40):
        charged.pledge(f"p{i}", 3_000)
    return [funded, failed, charged]


def finish(charged: CampaignBook) -> list[Envelope]:
    """What happens to the charge_then_refund campaign once its pledges are charged."""
    start = len(charged.log)
    charged.cancel("p7")
    charged.close("failed")
    return charged.log[start:]


@dataclass
class Run:
    worker: SettlementWorker
    sandbox: SandboxGateway
    settings: SettlementSettings


@pytest.fixture(scope="module")
async def settled_run(bootstrap: str, redis_server: str) -> AsyncIterator[Run]:
    from tests.conftest import delete_topics
    from tests.support.infra import unique_name

    prefix = unique_name() + "."
    settings = SettlementSettings(
        kafka_bootstrap=bootstrap, redis_url=redis_server, topic_prefix=prefix, partitions=3,
        sandbox_prefix=f"{prefix}sbx:", settlement_tick_seconds=0.05,
    )  # fmt: skip
    clock = FakeClock()
    sandbox = SandboxGateway.from_url(redis_server, prefix=settings.sandbox_prefix)
    worker = SettlementWorker(settings, sandbox, clock=clock, registry=CollectorRegistry())
    campaigns = books()
    funded, failed, charged = campaigns
    topics = settings.topics()
    try:
        await worker.start()
        # The failed campaign's pledges arrive before its close (verified at pledge time), the
        # charge_then_refund campaign's too (charged at pledge time).
        failed_open = failed.log[:-1]
        await write_campaigns(
            bootstrap, topics, prefix + "t", funded.log + failed_open + charged.log
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 240
        while not (
            (state := worker.engine.states.get("ctr-failed")) is not None
            and sum(p.status == "captured" for p in state.pledges.values()) == 40
            and (counts := await sandbox.campaign_counts("aon-failed"))
            and sum(c.get("authorize", 0) for c in counts.values()) == 40
        ):  # fmt: skip
            assert loop.time() < deadline, "pledges not charged and verified in time"
            await asyncio.sleep(0.05)
        await write_campaigns(bootstrap, topics, prefix + "t", failed.log[-1:] + finish(charged))
        while not all(
            (s := worker.engine.states.get(b.campaign_id)) is not None and s.settled is not None
            for b in campaigns
        ):  # fmt: skip
            assert loop.time() < deadline, "campaigns not settled in time"
            await asyncio.sleep(0.05)
            if worker.engine.in_flight == 0:
                clock.advance(timedelta(hours=6))  # retries come due on the injected clock
        yield Run(worker, sandbox, settings)
    finally:
        await worker.stop()
        cleanup = SandboxGateway.from_url(redis_server, prefix=settings.sandbox_prefix)
        await cleanup.forget()
        await cleanup.aclose()
        await delete_topics(bootstrap, {prefix})


async def stream_of(run: Run, campaign_id: str) -> tuple[list, list]:  # type: ignore[type-arg]
    topics = run.settings.topics()
    bootstrap = run.settings.kafka_bootstrap
    campaign = await read_stream(bootstrap, topics, "campaign", campaign_id)
    settlement = await read_stream(bootstrap, topics, "settlement", campaign_id)
    return campaign, settlement


async def test_a_funded_campaign_captures_retries_drops_and_settles(settled_run: Run) -> None:
    campaign, settlement = await stream_of(settled_run, "aon-funded")
    payloads = [e.payload for e in settlement]
    captured = [p for p in payloads if isinstance(p, PledgeCaptured)]
    failed = [p for p in payloads if isinstance(p, PledgeCaptureFailed)]
    dropped = [p for p in payloads if isinstance(p, PledgeReleased)]
    declined = [i for i in range(PLEDGES) if token(i) == "tok_declined"]
    once = [i for i in range(PLEDGES) if token(i) == "tok_fail_once"]
    assert len(captured) == PLEDGES - len(declined)
    assert sorted(p.pledge_id for p in dropped) == sorted(f"p{i}" for i in declined)
    assert {p.reason for p in dropped} == {"dropped"}
    # Declined: attempts 1..4 (first try + 3 retries); failing once: one failure, then captured.
    assert len(failed) == 4 * len(declined) + len(once)
    assert sorted(p.attempt for p in captured if p.attempt > 1) == [2] * len(once)
    [settled] = [p for p in payloads if isinstance(p, CampaignSettled)]
    assert isinstance(payloads[-1], CampaignSettled)
    gross = sum(p.amount.amount_minor for p in captured)
    fees = sum(p.fee.amount_minor for p in captured)
    assert (settled.gross.amount_minor, settled.fees.amount_minor) == (gross, fees)
    assert settled.commission.amount_minor == (gross * 500 + 5_000) // 10_000
    assert settled.payout.amount_minor == gross - settled.commission.amount_minor - fees
    assert settled.ledger_debits_minor == settled.ledger_credits_minor == gross
    lines = [line for e in payloads for line in getattr(e, "ledger", ())]
    assert sum(line.debit_minor for line in lines) == sum(line.credit_minor for line in lines)
    assert audit_findings(campaign + settlement) == []
    counts = await settled_run.sandbox.campaign_counts("aon-funded")
    assert all(c.get("collected", 0) == (0 if f"p{i}" in {f"p{j}" for j in declined} else 1)
               for i in range(PLEDGES) for c in [counts[f"p{i}"]])  # fmt: skip


async def test_the_retries_waited_for_the_injected_clock(settled_run: Run) -> None:
    _, settlement = await stream_of(settled_run, "aon-funded")
    failures = [e for e in settlement if isinstance(e.payload, PledgeCaptureFailed)]
    first = min(e.occurred_at for e in failures)
    last_tries = [e for e in failures if e.payload.attempt == 4]  # type: ignore[union-attr]
    assert last_tries and all(e.occurred_at - first >= timedelta(days=7) for e in last_tries)
    assert all(e.payload.retry_until is None for e in last_tries)  # type: ignore[union-attr]


async def test_a_failed_campaign_voids_every_authorization(settled_run: Run) -> None:
    campaign, settlement = await stream_of(settled_run, "aon-failed")
    payloads = [e.payload for e in settlement]
    released = [p for p in payloads if isinstance(p, PledgeReleased)]
    assert len(released) == 40 and {p.reason for p in released} == {"campaign_failed"}
    assert not any(isinstance(p, PledgeCaptured) for p in payloads)
    settled = payloads[-1]
    assert isinstance(settled, CampaignSettled) and settled.gross.amount_minor == 0
    assert audit_findings(campaign + settlement) == []
    counts = await settled_run.sandbox.campaign_counts("aon-failed")
    assert all(c == {"authorize": 1, "void": 1} for c in counts.values()) and len(counts) == 40


async def test_a_failed_charge_then_refund_campaign_refunds_every_charge(settled_run: Run) -> None:
    campaign, settlement = await stream_of(settled_run, "ctr-failed")
    payloads = [e.payload for e in settlement]
    charged = {p.pledge_id for p in payloads if isinstance(p, PledgeCaptured)}
    refunded = [p for p in payloads if isinstance(p, PledgeRefunded)]
    assert {p.pledge_id for p in refunded} == charged and len(charged) == 40
    assert {p.reason for p in refunded} == {"campaign_failed", "pledge_cancelled"}
    settled = payloads[-1]
    assert isinstance(settled, CampaignSettled)
    assert (settled.gross.amount_minor, settled.fees.amount_minor) == (0, 0)
    assert audit_findings(campaign + settlement) == []
    counts = await settled_run.sandbox.campaign_counts("ctr-failed")
    assert all(c == {"collected": 1, "refunded_minor": 3_000} for c in counts.values())


async def test_the_ledger_command_prints_the_settled_balances(settled_run: Run) -> None:
    import os
    import sys

    import orjson

    settings = settled_run.settings
    env = {
        **os.environ,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PLEDGEFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "PLEDGEFLOW_PARTITIONS": str(settings.partitions),
    }
    cli = [sys.executable, "-m", "services.cli", "ledger", "--campaign"]
    process = await asyncio.create_subprocess_exec(
        *cli, "aon-funded", "--json", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    statement = orjson.loads(out)
    balances = {row["account"]: row for row in statement["ledger"]}
    settled = statement["settled"]
    payable = balances["creator_payable"]
    assert payable["credit_minor"] - payable["debit_minor"] == settled["payout"]["amount_minor"]
    assert balances["backer_funds"]["debit_minor"] == settled["gross"]["amount_minor"]
    table = await asyncio.create_subprocess_exec(
        *cli, "aon-funded", env=env, stdout=asyncio.subprocess.PIPE
    )
    text, _ = await table.communicate()
    assert b"platform_revenue" in text and b"settled funded" in text
    missing = await asyncio.create_subprocess_exec(
        *cli, "nope", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await missing.communicate()
    assert missing.returncode == 1 and b"no settlement events for campaign 'nope'" in err


async def test_audit_verify_passes_on_the_real_streams(settled_run: Run) -> None:
    import os
    import sys
    from collections import Counter

    from aiokafka import TopicPartition

    from schemas.codec import decode_raw
    from services.streams import read_to_end

    settings = settled_run.settings
    topics = settings.topics()
    # The log itself first: no (campaign, stream, seq) is stored twice.
    stored: Counter[tuple[str, str, int]] = Counter()

    def count(record: object) -> None:
        raw = decode_raw(record.value)  # type: ignore[attr-defined]
        stored[(raw["campaign_id"], raw["stream"], raw["seq"])] += 1

    tps = [
        TopicPartition(topic, p)
        for stream in ("campaign", "settlement")
        for topic in topics.for_stream(stream)  # type: ignore[arg-type]
        for p in range(settings.partitions)
    ]
    await read_to_end(settings.kafka_bootstrap, tps, count)
    assert [key for key, n in stored.items() if n > 1] == []
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "audit", "verify", "--from-kafka",
        "--bootstrap", settings.kafka_bootstrap, "--topic-prefix", settings.topic_prefix,
        "--workers", "1", "--json",
        env=dict(os.environ), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, (out[-6000:], err[-2000:])
    import orjson

    summary = orjson.loads(out)
    expected = 0
    for campaign_id in ("aon-funded", "aon-failed", "ctr-failed"):
        campaign, settlement = await stream_of(settled_run, campaign_id)
        expected += len(campaign) + len(settlement)
    assert (summary["ok"], summary["campaigns"], summary["events"]) == (True, 3, expected)
    assert "ledger_balanced" in summary["rules"] and summary["findings"] == []
