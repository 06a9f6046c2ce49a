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
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from schemas.envelope import Envelope
from schemas.events import CampaignClosed, CampaignSettled, Event, PledgeCaptureFailed
from schemas.settlement_commands import RefundPledge, ReportRevenue, UpdatePaymentMethod
from services.settlement.domain import (
    GatewayCall,
    GatewayResult,
    Policy,
    Tick,
    decide,
    plan_pledge,
)
from services.settlement.gateway import GatewayUnavailable, PaymentGateway, call_gateway
from services.settlement.state import SettlementState, evolve

__all__ = ["Decision", "Emit", "EngineHooks", "SettlementEngine"]

log = logging.getLogger("pledgeflow.settlement")

SettlementCommand = RefundPledge | UpdatePaymentMethod | ReportRevenue

#: The calls that use the pledge's payment token.
_TOKEN_KINDS = frozenset({"authorize", "capture", "charge"})


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
    """Folded states of the campaigns a worker owns, and the gateway calls it has running.

    Only what changed is re-planned: each campaign keeps a queue of pledges that may owe a
    call (every pledge when the campaign itself changed, e.g. it closed; one pledge when one
    of its events was folded or its call finished), and campaigns waiting for retries are
    swept every ``sweep_every`` of the clock. So a big campaign costs O(1) per capture, not a
    scan of its pledge book.
    """

    def __init__(
        self,
        gateway: PaymentGateway,
        policy: Policy,
        *,
        max_in_flight: int = 512,
        max_in_flight_per_campaign: int = 64,
        unavailable_backoff: timedelta = timedelta(seconds=2),
        sweep_every: timedelta = timedelta(seconds=1),
        hooks: EngineHooks | None = None,
        token_of: Callable[[str, str], str | None] | None = None,
    ) -> None:
        if max_in_flight < 1 or max_in_flight_per_campaign < 1:
            raise ValueError("in-flight bounds must be >= 1")
        self.gateway = gateway
        self.policy = policy
        self.max_in_flight = max_in_flight
        self.per_campaign = max_in_flight_per_campaign
        self.unavailable_backoff = unavailable_backoff
        self.sweep_every = sweep_every
        self.hooks = hooks or EngineHooks()
        #: ``(campaign, pledge) -> token`` for pledges whose events carry none (tokens travel
        #: on the erasable payment-tokens topic, never on the log).
        self.token_of = token_of
        self.states: dict[str, SettlementState] = {}
        #: ``campaign -> pledges that may owe a call`` (an ordered set).
        self._queue: dict[str, dict[str, None]] = {}
        #: Campaigns whose every pledge must be re-planned (the campaign itself changed).
        self._full: set[str] = set()
        #: Campaigns with work the clock may make due (retries) until they are settled.
        self._waiting: set[str] = set()
        #: Campaigns to try settling once they are idle.
        self._settle_check: set[str] = set()
        self._next_sweep: datetime | None = None
        self._in_flight: dict[str, asyncio.Task[GatewayResult]] = {}
        self._calls: dict[str, GatewayCall] = {}
        self._per_campaign: dict[str, int] = {}
        #: Verifications done by this process (they write no event; see domain.plan).
        self._verified: set[str] = set()
        self._backoff: dict[str, datetime] = {}
        self._done: asyncio.Event = asyncio.Event()
        #: Keys of calls held back once for a missing token (see :meth:`_with_token`).
        self._token_held: set[str] = set()
        #: Pledges the last :meth:`launch` held back for a missing token: the worker reads
        #: the token topic to its end and launches again.
        self.awaiting_tokens = 0

    # --- folding -------------------------------------------------------------------------

    def state(self, campaign_id: str) -> SettlementState:
        """The campaign's state (created empty on first use)."""
        state = self.states.get(campaign_id)
        if state is None:
            state = self.states[campaign_id] = SettlementState(campaign_id)
        return state

    def apply(self, envelope: Envelope) -> None:
        """Fold one envelope (campaign or settlement stream, in seq order)."""
        campaign_id = envelope.campaign_id
        state = self.state(campaign_id)
        last = state.campaign_seq if envelope.stream == "campaign" else state.settlement_seq
        if envelope.seq <= last:
            return  # already folded (a replay and the reader may both hand it over)
        evolve(state, envelope)
        payload = envelope.payload
        pledge_id = getattr(payload, "pledge_id", None)
        if isinstance(payload, CampaignClosed | PledgeCaptureFailed):
            self._waiting.add(campaign_id)
        elif isinstance(payload, CampaignSettled):
            self._waiting.discard(campaign_id)
        if isinstance(pledge_id, str):
            self._queue.setdefault(campaign_id, {})[pledge_id] = None
        else:
            self._full.add(campaign_id)
        self._settle_check.add(campaign_id)

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the campaigns for which ``keep`` is false (a revoked partition); their calls
        in flight are left to finish and their answers ignored."""
        for campaign_id in [c for c in self.states if not keep(c)]:
            del self.states[campaign_id]
            for held in (self._full, self._waiting, self._settle_check):
                held.discard(campaign_id)
            self._queue.pop(campaign_id, None)

    # --- calling the gateway -------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Gateway calls running now."""
        return len(self._in_flight)

    @property
    def retries_pending(self) -> int:
        """Pledges of waiting campaigns whose capture failed (a gauge; O(pledges))."""
        return sum(
            1
            for campaign_id in self._waiting
            for pledge in self.state(campaign_id).pledges.values()
            if pledge.status == "failed"
        )

    def launch(self, now: datetime) -> int:
        """Start the calls owed by the queued pledges, within the bounds; return how many."""
        if self._next_sweep is None or now >= self._next_sweep:
            self._full |= self._waiting
            self._next_sweep = now + self.sweep_every
        for campaign_id in self._full:
            state = self.states.get(campaign_id)
            if state is not None:
                self._queue.setdefault(campaign_id, {}).update(dict.fromkeys(state.pledges))
        self._full.clear()
        started = 0
        skip = _Skip(self._in_flight, self._verified, self._backoff, now)
        held: list[tuple[str, str]] = []
        try:
            for campaign_id, queue in list(self._queue.items()):
                state = self.states.get(campaign_id)
                if state is None or state.terms is None:
                    del self._queue[campaign_id]
                    continue
                while queue:
                    if len(self._in_flight) >= self.max_in_flight:
                        return started
                    if self._per_campaign.get(campaign_id, 0) >= self.per_campaign:
                        break
                    pledge_id = next(iter(queue))
                    del queue[pledge_id]
                    for call in plan_pledge(state, pledge_id, now, self.policy, skip):
                        token_call = self._with_token(call)
                        if token_call is None:
                            held.append((campaign_id, pledge_id))
                            continue
                        self._start(token_call)
                        started += 1
                if not queue:
                    del self._queue[campaign_id]
            return started
        finally:
            # Re-planned at the next launch, once the worker has read the token topic.
            self.awaiting_tokens = len(held)
            for campaign_id, pledge_id in held:
                self._queue.setdefault(campaign_id, {})[pledge_id] = None

    def _with_token(self, call: GatewayCall) -> GatewayCall | None:
        """``call`` with the pledge's token from ``token_of`` (its events carry none); None:
        the token is missing and the call is held back once, so that the worker reads the
        token topic to its end before it is made (the API appends a token in the same round
        as its command, and may append it again milliseconds after the command; see
        docs/settlement.md). A call held once is made with whatever is found next time."""
        if call.payment_token is not None or self.token_of is None:
            return call
        token = self.token_of(call.campaign_id, call.pledge_id)
        if token is not None:
            self._token_held.discard(call.key)
            return replace(call, payment_token=token)
        if call.kind in _TOKEN_KINDS and call.key not in self._token_held:
            if len(self._token_held) > 100_000:  # keys whose pledges vanished: bounded
                self._token_held.clear()
            self._token_held.add(call.key)
            return None
        self._token_held.discard(call.key)
        return call

    def _start(self, call: GatewayCall) -> None:
        campaign_id = call.campaign_id
        self._per_campaign[campaign_id] = self._per_campaign.get(campaign_id, 0) + 1
        self._in_flight[call.key] = asyncio.ensure_future(self._call(call))
        self._calls[call.key] = call

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
        for key in finished:
            task = self._in_flight.pop(key)
            call = self._calls.pop(key)
            campaign_id = call.campaign_id
            self._per_campaign[campaign_id] -= 1
            self._settle_check.add(campaign_id)
            exc = task.exception()
            if exc is not None:
                if isinstance(exc, GatewayUnavailable):
                    log.warning("gateway unavailable for %s: %s", key, exc)
                    if self.hooks.on_unavailable is not None:
                        self.hooks.on_unavailable(call)
                else:
                    log.error("gateway call %s failed: %r", key, exc, exc_info=exc)
                self._backoff[key] = now + self.unavailable_backoff
                self._waiting.add(campaign_id)  # the sweep asks again after the back-off
                continue
            self._backoff.pop(key, None)
            state = self.states.get(campaign_id)
            if state is None:
                continue  # the partition was revoked meanwhile
            if call.kind == "authorize":
                self._verified.add(key)
                continue
            result = task.result()
            events = decide(state, result, now, self.policy)
            if events:
                emit(Decision(campaign_id, events, key, key))
                emitted += 1
            elif not result.ok:
                # A refused void or refund records nothing: ask again after the back-off.
                log.warning("gateway refused %s: %s %s", key, result.code, result.detail)
                self._backoff[key] = now + self.unavailable_backoff
                self._waiting.add(campaign_id)
        return emitted + self.settle_ready(now, emit)

    def settle_ready(self, now: datetime, emit: Emit) -> int:
        """Settle the idle campaigns (nothing queued or in flight) that are ready."""
        emitted = 0
        for campaign_id in list(self._settle_check):
            if self._queue.get(campaign_id) or self._per_campaign.get(campaign_id, 0):
                continue
            self._settle_check.discard(campaign_id)
            if campaign_id in self._full:
                continue
            emitted += self.settle(campaign_id, now, emit)
        return emitted

    def settle(self, campaign_id: str, now: datetime, emit: Emit) -> int:
        """Emit ``CampaignSettled`` for the campaign if it is ready (1) or not (0)."""
        state = self.states.get(campaign_id)
        if state is None or state.closed is None or state.settled is not None:
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
        return 1

    async def aclose(self) -> None:
        """Cancel the calls in flight (their keys make them safe to make again)."""
        for task in self._in_flight.values():
            task.cancel()
        for task in self._in_flight.values():
            # Cancelled or failed: the call is derived again later, with its key.
            with contextlib.suppress(BaseException):
                await task
        self._in_flight.clear()
        self._calls.clear()
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
