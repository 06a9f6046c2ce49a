"""SIGKILL the settlement worker several times during a capture run.

The worker is the real entry point (``pledgeflow settlement run`` in a subprocess) against the
sandbox gateway with a simulated latency, so kills land between gateway calls and the writes
of their events. Afterwards the sandbox must show exactly one collection per pledge (none for
the declined ones), the settlement must equal an undisturbed run's (the pure domain with the
in-memory gateway), and the auditor must find nothing wrong with the streams.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from schemas.events import CampaignSettled
from schemas.ledger import balances
from services.settlement.adapters.memory_gateway import MemoryGateway
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from services.settlement.config import SettlementSettings
from services.settlement.domain import Policy
from tests.support.settlement import CampaignBook, settle
from tests.support.settlement_kafka import audit_findings, read_stream, write_campaigns
from tests.support.worker import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

PLEDGES = 600
KILLS = 3
SCHEDULE = "300ms,600ms,1s"


def token(i: int) -> str:
    return "tok_declined" if i % 100 < 3 else "tok_fail_once" if i % 100 < 5 else "tok_ok"


def campaign() -> CampaignBook:
    book = CampaignBook(campaign_id="killed", goal_minor=100_000).launch()
    for i in range(PLEDGES):
        book.pledge(f"p{i}", 1_000 + 13 * i, token(i))
    book.close("funded")
    return book


async def test_sigkill_during_captures_moves_money_once(
    bootstrap: str, redis_server: str, unique: str, tmp_path: Path
) -> None:
    rng = random.Random()
    settings = SettlementSettings(
        kafka_bootstrap=bootstrap, redis_url=redis_server, topic_prefix=unique + ".",
        partitions=2, sandbox_prefix=f"{unique}:sbx:", settlement_retry_schedule=SCHEDULE,
    )  # fmt: skip
    env = {
        **os.environ,
        "PLEDGEFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "PLEDGEFLOW_REDIS_URL": redis_server,
        "PLEDGEFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "PLEDGEFLOW_PARTITIONS": str(settings.partitions),
        "PLEDGEFLOW_SANDBOX_PREFIX": settings.sandbox_prefix,
        "PLEDGEFLOW_SANDBOX_LATENCY_MS": "40",
        "PLEDGEFLOW_SETTLEMENT_MAX_IN_FLIGHT_PER_CAMPAIGN": "8",
        "PLEDGEFLOW_SETTLEMENT_RETRY_SCHEDULE": SCHEDULE,
        "PLEDGEFLOW_METRICS_PORT": "0",
    }
    worker = ServiceProcess(["settlement", "run"], env, tmp_path, "settlement")
    sandbox = SandboxGateway.from_url(redis_server, prefix=settings.sandbox_prefix)
    book = campaign()
    topics = settings.topics()

    async def collected() -> int:
        counts = await sandbox.campaign_counts("killed")
        return sum(c.get("collected", 0) for c in counts.values())

    try:
        worker.start()
        await write_campaigns(bootstrap, topics, unique + ".t", book.log)
        loop = asyncio.get_running_loop()
        for kill in range(KILLS):
            # Kill once captures are under way again, at a random point of the run.
            baseline = await collected()
            wanted = baseline + rng.randint(20, 80)
            deadline = loop.time() + 90
            while await collected() < wanted:
                assert loop.time() < deadline, (
                    f"no progress before kill {kill + 1}\n{worker.logs()}"
                )
                assert worker.alive(), worker.logs()
                await asyncio.sleep(0.02)
            worker.kill()
            worker.start()
        deadline = loop.time() + 240
        settled: list[CampaignSettled] = []
        while not settled:
            assert loop.time() < deadline, f"not settled in time\n{worker.logs()}"
            await asyncio.sleep(0.5)
            events = await read_stream(bootstrap, topics, "settlement", "killed")
            settled = [e.payload for e in events if isinstance(e.payload, CampaignSettled)]
        worker.stop()
        assert worker.starts == KILLS + 1

        # Exactly one collection per pledge at the sandbox, none for the declined cards.
        counts = await sandbox.campaign_counts("killed")
        for i in range(PLEDGES):
            expected = 0 if token(i) == "tok_declined" else 1
            assert counts[f"p{i}"].get("collected", 0) == expected, (i, counts[f"p{i}"])

        # The same settlement and ledger as an undisturbed run of the pure domain.
        calm = campaign()
        settle(
            calm, MemoryGateway(), policy=Policy(retry_schedule=settings.policy().retry_schedule)
        )
        assert calm.state.settled is not None
        [got] = settled
        fields = (
            "outcome", "gross", "commission", "fees", "payout", "captured_count",
            "failed_count", "refunded_count", "ledger_debits_minor", "ledger_credits_minor",
        )  # fmt: skip
        assert {f: getattr(got, f) for f in fields} == {
            f: getattr(calm.state.settled, f) for f in fields
        }
        events = await read_stream(bootstrap, topics, "settlement", "killed")
        lines = [line for e in events for line in getattr(e.payload, "ledger", ())]
        calm_lines = [
            line
            for e in calm.log
            if e.stream == "settlement"
            for line in getattr(e.payload, "ledger", ())
        ]
        assert balances(lines) == balances(calm_lines)

        campaign_events = await read_stream(bootstrap, topics, "campaign", "killed")
        assert audit_findings(campaign_events + events) == []
    finally:
        worker.stop()
        await sandbox.forget()
        await sandbox.aclose()
