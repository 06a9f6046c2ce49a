"""The worker's core with the in-memory gateway: a whole campaign settles through the injected
clock, calls stay within their bounds, answers lost to a restart are asked again safely."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from schemas.canonical import GENESIS_HASH
from schemas.envelope import stamp
from schemas.events import CampaignSettled, PledgeCaptured, PledgeReleased
from services.settlement.adapters.memory_gateway import MemoryGateway
from services.settlement.domain import GatewayCall, GatewayResult, Policy
from services.settlement.engine import Decision, SettlementEngine
from services.settlement.gateway import GatewayUnavailable
from tests.support.settlement import T0, CampaignBook


class Log:
    """Stamps decisions after the settlement chain's head and folds them into the engine."""

    def __init__(self, engine: SettlementEngine) -> None:
        self.engine = engine
        self.heads: dict[str, tuple[int, str]] = {}
        self.events: list[object] = []
        self.now = T0

    def emit(self, decision: Decision) -> None:
        seq, prev = self.heads.get(decision.campaign_id, (0, GENESIS_HASH))
        for index, event in enumerate(decision.events):
            seq += 1
            envelope = stamp(
                event, campaign_id=decision.campaign_id, seq=seq, prev_hash=prev,
                occurred_at=self.now, causation_id=decision.causation_id,
                correlation_id=decision.correlation_id, index=index,
            )  # fmt: skip
            prev = envelope.hash
            self.engine.apply(envelope)
            self.events.append(event)
        self.heads[decision.campaign_id] = (seq, prev)


def campaign(pledges: int) -> CampaignBook:
    book = CampaignBook(goal_minor=1_000).launch()
    for i in range(pledges):
        token = "tok_declined" if i % 33 == 0 else "tok_fail_once" if i % 50 == 1 else "tok_ok"
        book.pledge(f"p{i}", 1_000 + i, token)
    book.close("funded")
    return book


async def run(engine: SettlementEngine, log: Log, until: datetime, step: timedelta) -> None:
    while log.now <= until:
        engine.launch(log.now)
        await engine.wait(0.01)
        engine.drain(log.now, log.emit)
        engine.settle_ready(log.now, log.emit)
        if engine.in_flight == 0 and not engine.launch(log.now):
            log.now += step
        if any(isinstance(e, CampaignSettled) for e in log.events):
            return


async def test_a_funded_campaign_settles_through_retries_and_drops() -> None:
    gateway = MemoryGateway()
    engine = SettlementEngine(gateway, Policy(), max_in_flight_per_campaign=16)
    log = Log(engine)
    for envelope in campaign(200).log:
        engine.apply(envelope)
    await run(engine, log, T0 + timedelta(days=8), timedelta(hours=6))
    captured = [e for e in log.events if isinstance(e, PledgeCaptured)]
    dropped = [e for e in log.events if isinstance(e, PledgeReleased) and e.reason == "dropped"]
    [settled] = [e for e in log.events if isinstance(e, CampaignSettled)]
    declined = len(range(0, 200, 33))
    assert (len(captured), len(dropped)) == (200 - declined, declined)
    assert sorted(c.attempt for c in captured if c.attempt > 1) == [2] * len(range(1, 200, 50))
    assert settled.payout.amount_minor == (
        settled.gross.amount_minor - settled.commission.amount_minor - settled.fees.amount_minor
    )
    assert all(count == 1 for count in gateway.collected.values())
    assert log.now >= T0 + timedelta(days=7)  # the last try waited for its day


class Slow(MemoryGateway):
    """Answers after a pause, counting how many calls run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = self.peak = 0

    async def capture(self, call: GatewayCall) -> GatewayResult:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.001)
        self.running -= 1
        return self.answer(call)


async def test_calls_in_flight_stay_within_the_per_campaign_bound() -> None:
    gateway = Slow()
    engine = SettlementEngine(gateway, Policy(), max_in_flight_per_campaign=8)
    log = Log(engine)
    book = CampaignBook(goal_minor=1_000).launch()
    for i in range(100):
        book.pledge(f"p{i}", 2_000)
    book.close("funded")
    for envelope in book.log:
        engine.apply(envelope)
    await run(engine, log, T0, timedelta(hours=1))
    assert sum(isinstance(e, PledgeCaptured) for e in log.events) == 100
    assert 1 < gateway.peak <= 8


class Flaky(MemoryGateway):
    """Unreachable for the first ``outages`` calls."""

    def __init__(self, outages: int) -> None:
        super().__init__()
        self.outages = outages

    async def capture(self, call: GatewayCall) -> GatewayResult:
        if self.outages > 0:
            self.outages -= 1
            raise GatewayUnavailable("down")
        return self.answer(call)


async def test_an_unavailable_gateway_is_retried_with_the_same_key() -> None:
    gateway = Flaky(outages=3)
    engine = SettlementEngine(gateway, Policy(), unavailable_backoff=timedelta(seconds=1))
    log = Log(engine)
    book = CampaignBook(goal_minor=1_000).launch()
    book.pledge("p1", 2_000)
    book.close("funded")
    for envelope in book.log:
        engine.apply(envelope)
    await run(engine, log, T0 + timedelta(minutes=1), timedelta(seconds=1))
    [captured] = [e for e in log.events if isinstance(e, PledgeCaptured)]
    assert captured.attempt == 1  # an outage is not a failed capture
    assert [c.key for c in gateway.executed] == ["camp-1/p1/capture/1"]


async def test_a_restarted_engine_asks_again_and_the_gateway_replays_its_answer() -> None:
    gateway = MemoryGateway()
    first = SettlementEngine(gateway, Policy())
    book = CampaignBook(goal_minor=1_000).launch()
    book.pledge("p1", 2_000)
    book.close("funded")
    for envelope in book.log:
        first.apply(envelope)
    first.launch(T0)
    await first.wait(0.1)
    await first.aclose()  # dies after the gateway call, before writing the event
    second = SettlementEngine(gateway, Policy())
    log = Log(second)
    for envelope in book.log:
        second.apply(envelope)
    await run(second, log, T0, timedelta(hours=1))
    assert sum(isinstance(e, PledgeCaptured) for e in log.events) == 1
    assert gateway.collected["camp-1/p1"] == 1
    assert len(gateway.executed) == 1  # the second ask was answered from the key


def test_an_envelope_folded_twice_is_applied_once() -> None:
    # A rebuild's replay and the ordered reader may both hand over the same event.
    engine = SettlementEngine(MemoryGateway(), Policy())
    book = CampaignBook(goal_minor=10**9).launch()
    book.pledge("p1", 2_000)
    book.cancel("p1")
    for envelope in book.log + book.log[:2]:
        engine.apply(envelope)
    state = engine.states["camp-1"]
    assert state.pledges["p1"].cancelled  # the second PledgeMade did not reset it
    assert state.campaign_seq == len(book.log)


def funded_book(token: str | None = None) -> CampaignBook:
    book = CampaignBook(goal_minor=1_000).launch()
    book.pledge("p1", 2_000, token)
    book.close("funded")
    return book


async def test_a_capture_whose_token_is_missing_waits_for_the_token_topic_to_be_read() -> None:
    # The API appends a pledge's token in the same Kafka round as its command (and again if
    # that round lost it): the worker may fold the PledgeMade before its token reader has it.
    tokens: dict[str, str] = {}
    gateway = MemoryGateway()
    engine = SettlementEngine(
        gateway, Policy(), token_of=lambda campaign, pledge: tokens.get(f"{campaign}/{pledge}")
    )
    for envelope in funded_book().log:
        engine.apply(envelope)
    assert engine.launch(T0) == 0  # held back: the worker reads the token topic to its end
    assert engine.awaiting_tokens == 1
    assert gateway.executed == []
    tokens["camp-1/p1"] = "tok_visa"  # what that read found
    assert engine.launch(T0) == 1
    assert engine.awaiting_tokens == 0
    await engine.wait(0.1)
    [call] = gateway.executed
    assert (call.kind, call.payment_token) == ("capture", "tok_visa")


async def test_a_token_still_missing_after_the_read_holds_the_call_back_only_once() -> None:
    gateway = MemoryGateway()
    engine = SettlementEngine(gateway, Policy(), token_of=lambda campaign, pledge: None)
    for envelope in funded_book().log:
        engine.apply(envelope)
    assert engine.launch(T0) == 0
    assert engine.launch(T0) == 1  # made without a token (the gateway decides)
    assert engine.awaiting_tokens == 0
    await engine.wait(0.1)
    [call] = gateway.executed
    assert (call.kind, call.payment_token) == ("capture", None)


async def test_a_pledge_whose_events_carry_its_token_is_never_held_back() -> None:
    gateway = MemoryGateway()
    engine = SettlementEngine(gateway, Policy(), token_of=lambda campaign, pledge: None)
    for envelope in funded_book("tok_ok").log:
        engine.apply(envelope)
    assert engine.launch(T0) == 1
    assert engine.awaiting_tokens == 0
