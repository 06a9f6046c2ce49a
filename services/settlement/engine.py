"""The settlement worker's core, without Kafka: folded states, gateway calls in flight, decisions.

The worker (``app.py``) feeds it envelopes (:meth:`SettlementEngine.apply`) and commands, asks
it to :meth:`~SettlementEngine.launch` the gateway calls the domain plans, and
:meth:`~SettlementEngine.drain` s the answers into events, which the worker stamps, folds
back (through ``apply``) and writes. Level-triggered: what to call is always re-derived from
the states (``domain.plan``), minus the keys in flight, so a lost task or a restart only
means the call is derived again with the same idempotency key.

Bounded: at most ``max_in_flight`` calls overall and ``max_in_flight_per_campaign`` per
campaign (a big campaign cannot starve the others, and memory stays bounded by the in-flight
calls); an unreachable gateway backs a key off instead of spinning on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.envelope import Envelope
from schemas.events import Event
from schemas.settlement_commands import RefundPledge, ReportRevenue, UpdatePaymentMethod
from services.settlement.domain import (
    GatewayCall,
    GatewayResult,
    Policy,
    Tick,
    decide,
    plan,
)
from services.settlement.gateway import GatewayUnavailable, PaymentGateway, call_gateway
from services.settlement.state import SettlementState, evolve

__all__ = ["Decision", "Emit", "EngineHooks", "SettlementEngine"]

log = logging.getLogger("pledgeflow.settlement")

SettlementCommand = RefundPledge | UpdatePaymentMethod | ReportRevenue


@dataclass(frozen=True, slots=True)
class Decision:
    """Events to append to one campaign's settlement stream, and what caused them."""

    campaign_id: str
    events: list[Event]
    causation_id: str
    correlation_id: str


#: Stamps a decision's events, folds them back through ``apply`` and queues them for the
#: transaction (the worker's; tests may just stamp and fold).
Emit = Callable[[Decision], None]


@dataclass
class EngineHooks:
    """Observation points for metrics (all optional)."""

    on_result: Callable[[GatewayResult, float], None] | None = None
    on_unavailable: Callable[[GatewayCall], None] | None = None


class SettlementEngine:
    """Folded states of the campaigns a worker owns, and the gateway calls it has running."""

    def __init__(
        self,
        gateway: PaymentGateway,
        policy: Policy,
        *,
        max_in_flight: int = 512,
        max_in_flight_per_campaign: int = 64,
        unavailable_backoff: timedelta = timedelta(seconds=2),
        hooks: EngineHooks | None = None,
    ) -> None:
        if max_in_flight < 1 or max_in_flight_per_campaign < 1:
            raise ValueError("in-flight bounds must be >= 1")
        self.gateway = gateway
        self.policy = policy
        self.max_in_flight = max_in_flight
        self.per_campaign = max_in_flight_per_campaign
        self.unavailable_backoff = unavailable_backoff
        self.hooks = hooks or EngineHooks()
        self.states: dict[str, SettlementState] = {}
        #: Campaigns whose state changed since they were last planned.
        self._dirty: set[str] = set()
        #: Campaigns with work that time may make due (retries) or calls left unlaunched.
        self._waiting: set[str] = set()
        self._in_flight: dict[str, asyncio.Task[GatewayResult]] = {}
        self._campaign_of: dict[str, str] = {}
        self._per_campaign: dict[str, int] = {}
        #: Verifications done by this process (they write no event; see domain.plan).
        self._verified: set[str] = set()
        self._backoff: dict[str, datetime] = {}
        self._done: asyncio.Event = asyncio.Event()

    # --- folding -------------------------------------------------------------------------

    def state(self, campaign_id: str) -> SettlementState:
        """The campaign's state (created empty on first use)."""
        state = self.states.get(campaign_id)
        if state is None:
            state = self.states[campaign_id] = SettlementState(campaign_id)
        return state

    def apply(self, envelope: Envelope) -> None:
        """Fold one envelope (campaign or settlement stream, in seq order)."""
        evolve(self.state(envelope.campaign_id), envelope)
        self._dirty.add(envelope.campaign_id)

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the campaigns for which ``keep`` is false (a revoked partition); their calls
        in flight are left to finish and their answers ignored."""
        for campaign_id in [c for c in self.states if not keep(c)]:
            del self.states[campaign_id]
            self._dirty.discard(campaign_id)
            self._waiting.discard(campaign_id)

    # --- calling the gateway -------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Gateway calls running now."""
        return len(self._in_flight)

    def launch(self, now: datetime) -> int:
        """Start the calls the domain plans for changed or waiting campaigns, within the
        bounds; return how many were started."""
        started = 0
        todo = self._dirty | self._waiting
        self._dirty = set()
        for campaign_id in todo:
            state = self.states.get(campaign_id)
            if state is None or state.terms is None:
                continue
            skip = _Skip(self._in_flight, self._verified, self._backoff, now)
            calls = plan(state, now, self.policy, skip=skip)
            if not calls:
                if not self._has_future_work(state):
                    self._waiting.discard(campaign_id)
                continue
            self._waiting.add(campaign_id)
            for call in calls:
                if len(self._in_flight) >= self.max_in_flight:
                    return started
                if self._per_campaign.get(campaign_id, 0) >= self.per_campaign:
                    break
                self._start(call)
                started += 1
        return started

    @staticmethod
    def _has_future_work(state: SettlementState) -> bool:
        # Retries wait for their time; an unsettled closed campaign waits for answers.
        if state.closed is not None and state.settled is None:
            return True
        return any(p.status == "failed" for p in state.pledges.values())

    def _start(self, call: GatewayCall) -> None:
        campaign_id = call.campaign_id
        self._per_campaign[campaign_id] = self._per_campaign.get(campaign_id, 0) + 1
        task = asyncio.ensure_future(self._call(call))
        self._in_flight[call.key] = task
        self._campaign_of[call.key] = campaign_id

    async def _call(self, call: GatewayCall) -> GatewayResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            result = await call_gateway(self.gateway, call)
        finally:
            self._done.set()
        if self.hooks.on_result is not None:
            self.hooks.on_result(result, loop.time() - started)
        return result

    async def wait(self, seconds: float) -> None:
        """Until a call finishes or ``seconds`` pass."""
        if any(task.done() for task in self._in_flight.values()):
            return
        self._done.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), seconds)

    def drain(self, now: datetime, emit: Emit) -> int:
        """Turn finished calls into decisions (``emit`` folds each before the next is decided)
        and settle the campaigns that became ready; return the decisions emitted."""
        emitted = 0
        finished = [key for key, task in self._in_flight.items() if task.done()]
        touched: set[str] = set()
        for key in finished:
            task = self._in_flight.pop(key)
            campaign_id = self._campaign_of.pop(key)
            self._per_campaign[campaign_id] = self._per_campaign.get(campaign_id, 1) - 1
            touched.add(campaign_id)
            self._dirty.add(campaign_id)
            exc = task.exception()
            if exc is not None:
                if not isinstance(exc, GatewayUnavailable):
                    log.error("gateway call %s failed: %r", key, exc, exc_info=exc)
                else:
                    log.warning("gateway unavailable for %s: %s", key, exc)
                self._backoff[key] = now + self.unavailable_backoff
                continue
            self._backoff.pop(key, None)
            result = task.result()
            state = self.states.get(campaign_id)
            if state is None:
                continue  # the partition was revoked meanwhile
            if result.call.kind == "authorize":
                self._verified.add(key)
                continue
            events = decide(state, result, now, self.policy)
            if events:
                emit(Decision(campaign_id, events, key, key))
                emitted += 1
        for campaign_id in touched:
            emitted += self.settle(campaign_id, now, emit)
        return emitted

    def settle(self, campaign_id: str, now: datetime, emit: Emit) -> int:
        """Emit ``CampaignSettled`` for the campaign if it is ready (1) or not (0)."""
        state = self.states.get(campaign_id)
        if state is None:
            return 0
        events = decide(state, Tick(), now, self.policy)
        if not events:
            return 0
        cause = f"{campaign_id}/settle"
        emit(Decision(campaign_id, events, cause, cause))
        return 1

    def command(self, command: SettlementCommand, now: datetime, emit: Emit) -> int:
        """Decide a settlement command (its events, or its refusal); return decisions."""
        state = self.state(command.campaign_id)
        events = decide(state, command, now, self.policy)
        if not events:
            return 0
        emit(Decision(command.campaign_id, events, command.command_id, command.correlation_id))
        self._dirty.add(command.campaign_id)
        return 1

    def settle_ready(self, now: datetime, emit: Emit) -> int:
        """Settle every waiting campaign that is ready (after a batch of campaign events)."""
        return sum(self.settle(c, now, emit) for c in list(self._waiting | self._dirty))

    async def aclose(self) -> None:
        """Cancel the calls in flight (their keys make them safe to make again)."""
        for task in self._in_flight.values():
            task.cancel()
        for task in self._in_flight.values():
            # Cancelled or failed: the call is derived again later, with its key.
            with contextlib.suppress(BaseException):
                await task
        self._in_flight.clear()
        self._campaign_of.clear()
        self._per_campaign.clear()


class _Skip:
    """Keys :func:`plan` must not return now: in flight, verified, or backing off."""

    __slots__ = ("_backoff", "_in_flight", "_now", "_verified")

    def __init__(
        self,
        in_flight: Mapping[str, object],
        verified: set[str],
        backoff: dict[str, datetime],
        now: datetime,
    ) -> None:
        self._in_flight = in_flight
        self._verified = verified
        self._backoff = backoff
        self._now = now

    def __contains__(self, key: object) -> bool:
        if key in self._in_flight or key in self._verified:
            return True
        until = self._backoff.get(key)  # type: ignore[call-overload]
        return until is not None and self._now < until
