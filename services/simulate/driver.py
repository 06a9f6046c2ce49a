"""Plays a :class:`~services.simulate.scenario.Scenario` against a running API, through the
typed client (:class:`services.client.PledgeflowClient`), and keeps the tally.

The load is open-loop: each request starts at its scheduled time whatever the earlier ones
are doing (up to ``max_in_flight`` at once; beyond that the schedule slips, which the pledges/s
figure shows). Pledges ask ``Prefer: wait`` so each answer says accepted or refused; a pledge
still undecided when the wait ends (202) is counted pending and read back at the end. A
retried pledge is sent again with the same Idempotency-Key and must get the same answer.

Reading what happened (campaigns closing, goals reached, settlement) goes through the API
too; settlement through :func:`read_settlement` (``GET .../settlement``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from services.client import (
    NotFound,
    PledgeflowClient,
    PledgeflowError,
    Refused,
    Unavailable,
    ValidationFailed,
)
from services.notify.domain import WEBHOOK_EVENT_TYPES as NOTIFY_WEBHOOK_EVENT_TYPES
from services.pledge.api.models import CampaignView, PledgeDecided
from services.settlement.api_models import SettlementView
from services.simulate.receiver import WebhookReceiver
from services.simulate.scenario import (
    CampaignPlan,
    CancelAction,
    CloseAction,
    InvalidAction,
    PledgeAction,
    Scenario,
)

__all__ = ["Driver", "SettlementView", "Tally", "read_settlement"]

#: Event types the simulation's webhook endpoint subscribes to (what a platform would want):
#: every type notify can send but ``PledgeRejected``.
WEBHOOK_EVENT_TYPES = tuple(t for t in NOTIFY_WEBHOOK_EVENT_TYPES if t != "PledgeRejected")
ENDPOINT_NAME = "sim"


async def read_settlement(api: PledgeflowClient, campaign_id: str) -> SettlementView | None:
    """The campaign's settlement (``GET /v1/campaigns/{id}/settlement``), or None when the
    API has none for it yet (or a deployment without the settlement read model)."""
    try:
        return await api.get_settlement(campaign_id)
    except (NotFound, Unavailable):  # Unavailable: its read model is being rebuilt
        return None


@dataclass
class Tally:
    """Everything counted so far (read by the live display, reported at the end)."""

    started: float = 0.0
    requests: int = 0
    accepted: set[tuple[str, str]] = field(default_factory=set)
    pending: set[tuple[str, str]] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    replayed: int = 0
    cancelled: int = 0
    cancel_refused: Counter[str] = field(default_factory=Counter)
    called_off: int = 0
    #: Answers that broke what the API promises (an invalid request accepted, a retry
    #: answered differently, a 5xx after the client's own retries...).
    unexpected: list[str] = field(default_factory=list)
    goals_reached: set[str] = field(default_factory=set)
    closed: dict[str, str] = field(default_factory=dict)
    settled: set[str] = field(default_factory=set)
    settlement_available: bool | None = None
    recent: deque[float] = field(default_factory=deque)

    def sent(self, now: float, *, pledge: bool = True) -> None:
        self.requests += 1
        if pledge:
            self.recent.append(now)

    def rate(self, now: float, window: float = 5.0) -> float:
        """Pledge requests (valid or not, retries included) per second over the last
        ``window`` seconds."""
        while self.recent and self.recent[0] < now - window:
            self.recent.popleft()
        span = min(window, max(now - self.started, 1e-3))
        return len(self.recent) / span


class Driver:
    """One scenario against one API; ``clock`` is monotonic seconds (injected)."""

    def __init__(
        self,
        api: PledgeflowClient,
        scenario: Scenario,
        *,
        receiver: WebhookReceiver | None = None,
        wait_seconds: int = 5,
        max_in_flight: int = 256,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.scenario = scenario
        self.receiver = receiver
        self.wait_seconds = wait_seconds
        self.tally = Tally()
        self.endpoint_id: str | None = None
        self.notes: list[str] = []
        self._slots = asyncio.Semaphore(max_in_flight)
        self._clock = clock
        self._wall = wall
        self._tasks: set[asyncio.Task[None]] = set()
        self.campaigns: dict[str, CampaignView] = {}
        self.settlements: dict[str, SettlementView] = {}
        self.deadlines: dict[str, datetime] = {}

    # --- set-up ------------------------------------------------------------------------------

    async def register(self) -> None:
        """The webhook endpoint (at the receiver) and every backer's and creator's contact."""
        if self.receiver is not None:
            try:
                response = await self.api.request(
                    "POST",
                    "/v1/webhook-endpoints",
                    body={
                        "url": self.receiver.url(ENDPOINT_NAME),
                        "event_types": list(WEBHOOK_EVENT_TYPES),
                    },
                    idempotency_key=f"{self.scenario.run_id}:webhook-endpoint",
                )
                created = response.json()
                self.receiver.secrets[ENDPOINT_NAME] = created["secret"]
                self.endpoint_id = str(created["id"])
            except PledgeflowError as exc:
                self.notes.append(f"webhook endpoint not registered: {exc}")
        people = [("backers", p) for p in self.scenario.backers]
        people += [("creators", p) for p in self.scenario.creators]

        async def put(kind: str, person_id: str, email: str, locale: str) -> None:
            async with self._slots:
                await self.api.request(
                    "PUT", f"/v1/{kind}/{person_id}", body={"email": email, "locale": locale}
                )

        await asyncio.gather(*(put(k, p.person_id, p.email, p.locale) for k, p in people))

    async def launch(self, start: datetime) -> None:
        """Every campaign, deadlines counted from ``start`` (wall clock, UTC)."""

        async def one(plan: CampaignPlan) -> None:
            deadline = start + timedelta(seconds=plan.deadline_after)
            self.deadlines[plan.campaign_id] = deadline
            iso = deadline.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            await self.api.launch_campaign(
                plan.launch_body(iso),
                wait=10,
                idempotency_key=f"{self.scenario.run_id}:launch:{plan.campaign_id}",
            )

        await asyncio.gather(*(one(plan) for plan in self.scenario.campaigns))

    # --- the load ----------------------------------------------------------------------------

    async def play(self) -> None:
        """Every action at its time (seconds after this call), then wait for the last ones."""
        self.tally.started = self._clock()
        for action in self.scenario.actions:
            delay = self.tally.started + action.at - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._slots.acquire()
            task = asyncio.create_task(self._run(action))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def _run(self, action: PledgeAction | CancelAction | InvalidAction | CloseAction) -> None:
        try:
            match action:
                case PledgeAction():
                    await self._pledge(action)
                case CancelAction():
                    await self._cancel(action)
                case InvalidAction():
                    await self._invalid(action)
                case CloseAction():
                    await self._close(action)
        except (PledgeflowError, httpx.HTTPError) as exc:
            self.tally.unexpected.append(f"{type(action).__name__} {action.idempotency_key}: {exc}")
        finally:
            self._slots.release()

    async def _pledge_once(self, action: PledgeAction) -> str:
        self.tally.sent(self._clock())
        try:
            answer = await self.api.make_pledge(
                action.campaign_id,
                action.body(),
                wait=self.wait_seconds,
                idempotency_key=action.idempotency_key,
            )
        except Refused as refused:
            return f"refused:{refused.reason}"
        return "accepted" if isinstance(answer, PledgeDecided) else "pending"

    async def _pledge(self, action: PledgeAction) -> None:
        outcome = await self._pledge_once(action)
        key = (action.campaign_id, action.pledge_id)
        if outcome == "accepted":
            self.tally.accepted.add(key)
        elif outcome == "pending":
            self.tally.pending.add(key)
        else:
            self.tally.refused[outcome.removeprefix("refused:")] += 1
        for _ in range(action.retries):
            self.tally.retries += 1
            again = await self._pledge_once(action)
            if again == outcome or (outcome == "pending" and again == "accepted"):
                self.tally.replayed += 1
            else:
                self.tally.unexpected.append(
                    f"retry of {action.pledge_id} answered {again}, first {outcome}"
                )

    async def _cancel(self, action: CancelAction) -> None:
        self.tally.sent(self._clock(), pledge=False)
        try:
            await self.api.cancel_pledge(
                action.campaign_id,
                action.pledge_id,
                {"reason": "backer_request"},
                wait=self.wait_seconds,
                idempotency_key=action.idempotency_key,
            )
        except Refused as refused:
            self.tally.cancel_refused[refused.reason or "refused"] += 1
            return
        except NotFound:
            self.tally.cancel_refused["not_found"] += 1
            return
        self.tally.cancelled += 1

    async def _close(self, action: CloseAction) -> None:
        self.tally.sent(self._clock(), pledge=False)
        await self.api.close_campaign(
            action.campaign_id,
            {"reason": action.reason},
            wait=self.wait_seconds,
            idempotency_key=action.idempotency_key,
        )
        self.tally.called_off += 1

    async def _invalid(self, action: InvalidAction) -> None:
        self.tally.sent(self._clock())
        try:
            await self.api.make_pledge(
                action.campaign_id,
                action.body,
                wait=self.wait_seconds,
                idempotency_key=action.idempotency_key,
            )
            got = "accepted"
        except ValidationFailed:
            got = "invalid"
        except NotFound:
            got = "not_found"
        except Refused:
            got = "refused"
        if got == action.expect:
            self.tally.invalid[action.flaw] += 1
        else:
            self.tally.unexpected.append(f"{action.flaw}: answered {got}, expected {action.expect}")

    # --- reading back ------------------------------------------------------------------------

    async def observe(self) -> None:
        """Read every campaign (and its settlement once closed) once."""

        async def one(campaign_id: str) -> None:
            view = await self.api.get_campaign(campaign_id)
            self.campaigns[campaign_id] = view
            if view.goal_reached_at is not None:
                self.tally.goals_reached.add(campaign_id)
            if view.status == "closed":
                self.tally.closed[campaign_id] = view.outcome or "?"
                if campaign_id not in self.tally.settled:
                    settlement = await read_settlement(self.api, campaign_id)
                    if settlement is not None:
                        self.tally.settlement_available = True
                        self.settlements[campaign_id] = settlement
                        if settlement.status == "settled":
                            self.tally.settled.add(campaign_id)

        await asyncio.gather(*(one(p.campaign_id) for p in self.scenario.campaigns))

    async def watch(self, every: float = 1.0) -> None:
        """:meth:`observe` every ``every`` seconds, until cancelled (a read that fails is a
        note, not the end of the run)."""
        while True:
            try:
                await self.observe()
            except (PledgeflowError, httpx.HTTPError) as exc:
                self.notes.append(f"reading campaigns: {exc}")
            await asyncio.sleep(every)

    async def settle(self, within: float, every: float = 1.0) -> bool:
        """Wait until every campaign is closed and, where the API serves settlements, settled;
        False when ``within`` seconds pass first."""
        give_up = self._clock() + within
        closed_at: float | None = None
        ids = [p.campaign_id for p in self.scenario.campaigns]
        while True:
            try:
                await self.observe()
            except (PledgeflowError, httpx.HTTPError) as exc:
                self.notes.append(f"reading campaigns: {exc}")
            now = self._clock()
            if len(self.tally.closed) == len(ids):
                closed_at = closed_at or now
                if len(self.tally.settled) == len(ids):
                    return True
                # No settlement answered within a while of closing: this API has none.
                if not self.tally.settlement_available and now - closed_at > 10:
                    self.tally.settlement_available = False
                    return True
            if now > give_up:
                return False
            await asyncio.sleep(every)

    async def resolve_pending(self) -> None:
        """Pledges answered 202: accepted or refused by now, read back one by one."""
        for campaign_id, pledge_id in sorted(self.tally.pending):
            view = await self.api.get_pledge(campaign_id, pledge_id)
            if view.status in ("accepted", "cancelled"):
                self.tally.accepted.add((campaign_id, pledge_id))
            elif view.status == "rejected":
                self.tally.refused[view.reason or "rejected"] += 1
            else:
                continue
            self.tally.pending.discard((campaign_id, pledge_id))

    async def webhooks_quiet(self, quiet: float = 2.0, within: float = 20.0) -> None:
        """Wait until no new webhook arrived for ``quiet`` seconds (or ``within`` passed)."""
        if self.receiver is None:
            return
        give_up = self._clock() + within
        seen, since = self.receiver.delivered, self._clock()
        while self._clock() < give_up:
            await asyncio.sleep(0.25)
            if self.receiver.delivered != seen:
                seen, since = self.receiver.delivered, self._clock()
            elif self._clock() - since >= quiet:
                return
