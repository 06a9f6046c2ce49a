"""Settlement captures per second, against the sandbox gateway on the real Redis.

What is measured: the settlement worker's core (``SettlementEngine``: plan, gateway calls with
bounded concurrency, decide, stamp the events on the hash chain, fold them back) settling
funded campaigns against ``SandboxGateway`` (one atomic Lua call per capture on Redis). Writing
the stamped events to Kafka is not included (the stream runtime's transactional writer
batches them; see bench_processor for its rate).

1. **0 ms gateway latency**: captures/s of the engine (target >= 5,000/s), with CPU seconds
   per capture; baseline: the naive loop (await each capture in turn, same gateway) in the
   same run.
2. **50 ms simulated latency**: the engine (at most 64 calls in flight per campaign) against the
   naive loop: target >= 20x.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from bench.harness import Stopwatch, Target, redis_url, write_result
from schemas.canonical import GENESIS_HASH
from schemas.envelope import stamp_chain
from schemas.events import PledgeCaptured
from services.settlement.adapters.sandbox_gateway import SandboxGateway
from services.settlement.domain import GatewayResult, Policy, decide, plan
from services.settlement.engine import Decision, SettlementEngine
from services.settlement.gateway import call_gateway
from tests.support.settlement import T0, CampaignBook

CAMPAIGNS = 4
PLEDGES = 5_000  # per campaign at 0 ms
SLOW_PLEDGES = 1_000  # per campaign at 50 ms
NAIVE_FAST = 2_000
NAIVE_SLOW = 60


def books(count: int, pledges: int, tag: str) -> list[CampaignBook]:
    out = []
    for c in range(count):
        book = CampaignBook(campaign_id=f"bench-{tag}-{c}", goal_minor=1_000).launch()
        for i in range(pledges):
            book.pledge(f"p{i}", 2_500)
        book.close("funded")
        out.append(book)
    return out


class Chain:
    """Stamps decisions as the worker does and folds them back into the engine."""

    def __init__(self, engine: SettlementEngine) -> None:
        self.engine = engine
        self.heads: dict[str, tuple[int, str]] = {}
        self.captured = 0

    def emit(self, decision: Decision) -> None:
        seq, prev = self.heads.get(decision.campaign_id, (0, GENESIS_HASH))
        stamped = stamp_chain(
            decision.events, campaign_id=decision.campaign_id, seq=seq + 1, prev_hash=prev,
            occurred_at=T0, causation_id=decision.causation_id,
            correlation_id=decision.correlation_id, stream="settlement",
        )  # fmt: skip
        for envelope, _, _ in stamped:
            self.engine.apply(envelope)
            if isinstance(envelope.payload, PledgeCaptured):
                self.captured += 1
        last = stamped[-1][0]
        self.heads[decision.campaign_id] = (last.seq, last.hash)


async def engine_rate(
    gateway: SandboxGateway, campaigns: list[CampaignBook]
) -> tuple[float, float, int]:
    """(captures/s, CPU seconds per capture, peak in flight) of the engine settling them."""
    engine = SettlementEngine(gateway, Policy(), max_in_flight=512, max_in_flight_per_campaign=64)
    for book in campaigns:
        for envelope in book.log:
            engine.apply(envelope)
    chain = Chain(engine)
    wanted = sum(len(b.state.pledges) for b in campaigns)
    peak = 0
    cpu = time.process_time()
    with Stopwatch() as sw:
        while chain.captured < wanted:
            now = datetime.now(UTC)
            engine.launch(now)
            peak = max(peak, engine.in_flight)
            await engine.wait(0.05)
            engine.drain(now, chain.emit)
    cpu = time.process_time() - cpu
    engine.launch(T0)  # the last captures' pledges: nothing more owed
    engine.settle_ready(T0, chain.emit)
    assert all(engine.states[b.campaign_id].settled for b in campaigns), "every campaign settles"
    return wanted / sw.seconds, cpu / wanted, peak


async def naive_rate(gateway: SandboxGateway, book: CampaignBook, count: int) -> float:
    """Captures/s of a loop that awaits each capture, then decides and stamps it, in turn."""
    state = book.state
    calls = plan(state, T0, Policy())[:count]
    prev, seq = GENESIS_HASH, 0
    with Stopwatch() as sw:
        for call in calls:
            result: GatewayResult = await call_gateway(gateway, call)
            events = decide(state, result, T0, Policy())
            stamped = stamp_chain(
                events, campaign_id=state.campaign_id, seq=seq + 1, prev_hash=prev,
                occurred_at=T0, causation_id=call.key, correlation_id=call.key,
            )  # fmt: skip
            seq, prev = stamped[-1][0].seq, stamped[-1][0].hash
    return len(calls) / sw.seconds


async def main() -> None:
    run = uuid.uuid4().hex[:8]
    fast = SandboxGateway.from_url(redis_url(), prefix=f"bench-{run}:fast:")
    slow = SandboxGateway.from_url(
        redis_url(), prefix=f"bench-{run}:slow:", latency_seconds=0.05, max_connections=256
    )
    try:
        naive_fast = await naive_rate(fast, books(1, NAIVE_FAST, "naive")[0], NAIVE_FAST)
        rate, cpu, peak = await engine_rate(fast, books(CAMPAIGNS, PLEDGES, "fast"))
        print(
            f"0 ms: engine {rate:,.0f} captures/s ({cpu * 1e6:,.0f} us CPU each, "
            f"peak {peak} in flight), naive loop {naive_fast:,.0f}/s"
        )
        write_result(
            "settlement_captures",
            "captures/s, sandbox gateway at 0 ms (engine: plan, call, decide, stamp, fold)",
            "captures/s",
            rate,
            baseline=("naive loop awaiting each capture", naive_fast),
            target=Target(value=5_000),
            extra={
                "captures": CAMPAIGNS * PLEDGES,
                "campaigns": CAMPAIGNS,
                "cpu_seconds_per_capture": round(cpu, 7),
                "peak_in_flight": peak,
                "kafka_writes_included": False,
            },
        )
        naive_slow = await naive_rate(slow, books(1, NAIVE_SLOW, "naive-slow")[0], NAIVE_SLOW)
        rate_slow, cpu_slow, peak_slow = await engine_rate(
            slow, books(CAMPAIGNS, SLOW_PLEDGES, "slow")
        )
        print(
            f"50 ms: engine {rate_slow:,.0f} captures/s (peak {peak_slow} in flight), "
            f"naive loop {naive_slow:,.1f}/s: {rate_slow / naive_slow:,.1f}x"
        )
        write_result(
            "settlement_captures_latency",
            "captures/s, sandbox gateway at 50 ms latency, <= 64 in flight per campaign",
            "captures/s",
            rate_slow,
            baseline=("naive loop awaiting each capture", naive_slow),
            target=Target(ratio=20.0),
            extra={
                "captures": CAMPAIGNS * SLOW_PLEDGES,
                "campaigns": CAMPAIGNS,
                "cpu_seconds_per_capture": round(cpu_slow, 7),
                "peak_in_flight": peak_slow,
                "latency_seconds": 0.05,
            },
        )
    finally:
        await fast.forget()
        await slow.forget()
        await fast.aclose()
        await slow.aclose()


if __name__ == "__main__":
    asyncio.run(main())
