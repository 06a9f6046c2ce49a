"""In-memory fakes of the ingest API's ports (``services.pledge.api.ports``).

They keep the real adapters' rules, so a handler behaves against them as against Kafka and
Redis: the gate is a token bucket per API key, then campaign ownership (from the read model's
campaign rows), then the Idempotency-Key (pending / done with the stored response / another
fingerprint / retryable after an unacknowledged append), all in one step as the Lua script
does; completing stores the response and writes pending pledge rows that a decided row is
not overwritten by. ``down`` makes the fake Redis unreachable (redis-py's
``ConnectionError``), ``failure`` makes the log refuse appends, ``hold`` keeps appends waiting
(a request in flight).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError

from services.pledge.adapters.redis_readmodel import CampaignRow, PledgeRow
from services.pledge.api.ports import GateResult, IngestPorts, PendingPledge
from services.settlement.api_ports import SettlementPorts


class FakeCommandLog:
    """The command topic as a list of ``(campaign_id, command bytes)``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.failure: Exception | None = None
        self.hold: asyncio.Event | None = None
        #: set once an append waits on ``hold``
        self.holding = asyncio.Event()

    async def _append(self, commands: Sequence[tuple[str, bytes]]) -> None:
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        if self.failure is not None:
            raise self.failure
        self.sent.extend(commands)

    async def send(self, campaign_id: str, value: bytes) -> None:
        await self._append([(campaign_id, value)])

    async def send_all(self, commands: Sequence[tuple[str, bytes]]) -> None:
        await self._append(commands)

    async def ready(self) -> bool:
        return self.failure is None


@dataclass
class FakeReadModel:
    """Campaign and pledge rows, as the projector (and the API's pending rows) left them."""

    campaigns: dict[str, CampaignRow] = field(default_factory=dict)
    pledges: dict[tuple[str, str], PledgeRow] = field(default_factory=dict)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: campaign id -> seq -> the event's public JSON
    events: dict[str, dict[int, bytes]] = field(default_factory=dict)
    #: (campaign id, pledge id) -> payment record, read beside a page's rows (as the real
    #: store's page script does); shared with the settlement fake's records by FakePorts.
    payments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    down: bool = False

    def launched(self, campaign_id: str, tenant_id: str) -> None:
        """A campaign the projector has shown as open, owned by ``tenant_id``."""
        self.campaigns[campaign_id] = CampaignRow(
            seq=1,
            tenant_id=tenant_id,
            doc={"campaign_id": campaign_id, "status": "open", "seq": 1},
        )

    def _reach(self) -> None:
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Refused.")

    async def campaign(self, campaign_id: str) -> CampaignRow | None:
        self._reach()
        return self.campaigns.get(campaign_id)

    async def pledge(self, campaign_id: str, pledge_id: str) -> PledgeRow | None:
        self._reach()
        return self.pledges.get((campaign_id, pledge_id))

    async def decision(self, command_id: str) -> dict[str, Any] | None:
        self._reach()
        return self.decisions.get(command_id)

    async def campaign_page(
        self, tenant_id: str, status: str, after: str, limit: int
    ) -> tuple[list[CampaignRow], str | None]:
        self._reach()
        ids = sorted(
            campaign_id
            for campaign_id, row in self.campaigns.items()
            if row.tenant_id == tenant_id
            and row.doc is not None
            and status in ("all", row.doc.get("status"))
            and campaign_id > after
        )
        more = ids[limit - 1] if len(ids) > limit else None
        return [self.campaigns[c] for c in ids[:limit]], more

    async def pledge_page(
        self, campaign_id: str, status: str, after: str, limit: int
    ) -> tuple[list[PledgeRow], str | None]:
        self._reach()
        ids = sorted(
            pledge_id
            for (owner, pledge_id), row in self.pledges.items()
            if owner == campaign_id and status in ("all", row.status) and pledge_id > after
        )
        more = ids[limit - 1] if len(ids) > limit else None
        rows = [
            replace(self.pledges[(campaign_id, p)], payment=self.payments.get((campaign_id, p)))
            for p in ids[:limit]
        ]
        return rows, more

    async def event_page(
        self, campaign_id: str, after_seq: int, limit: int
    ) -> tuple[list[bytes], int | None]:
        self._reach()
        found = [(seq, raw) for seq, raw in sorted(self.events.get(campaign_id, {}).items())]
        found = [(seq, raw) for seq, raw in found if seq > after_seq]
        more = found[limit - 1][0] if len(found) > limit else None
        return [raw for _seq, raw in found[:limit]], more


class FakeIngestGate:
    """The gate and the stored responses, over a :class:`FakeReadModel` (one Redis)."""

    def __init__(
        self, readmodel: FakeReadModel, *, rate_per_second: float = 1e9, burst: int = 10**9
    ) -> None:
        self.readmodel = readmodel
        self.rate = rate_per_second
        self.burst = burst
        #: key hash -> (tokens, at)
        self.buckets: dict[str, tuple[float, float]] = {}
        #: (campaign, tenant) of the launches the gate accepted
        self.launched: set[tuple[str, str]] = set()
        #: (tenant, key) -> ("P" | "R" | "D", fingerprint, stored response)
        self.keys: dict[tuple[str, str], tuple[str, str, bytes]] = {}

    async def gate(
        self,
        *,
        key_hash: str,
        tenant_id: str,
        idempotency_key: str,
        fingerprint: str,
        campaign_ids: list[str],
        many: bool = False,
        cost: int = 1,
        launch: bool = False,
    ) -> GateResult:
        self.readmodel._reach()
        wait_ms = self._take(key_hash, cost)
        if wait_ms:
            return GateResult("rate_limited", retry_after_ms=wait_ms)
        foreign = (
            ()
            if launch
            else tuple(
                i
                for i, campaign_id in enumerate(campaign_ids)
                if not self._exists(campaign_id, tenant_id)
            )
        )
        if foreign and not many:
            return GateResult("not_found")
        current = self.keys.get((tenant_id, idempotency_key))
        if current is not None:
            state, stored_fingerprint, stored = current
            if stored_fingerprint != fingerprint:
                return GateResult("mismatch")
            if state == "D":
                return GateResult("replay", stored=stored)
            if state == "P":
                return GateResult("in_progress")
            # "R": the command was not acknowledged; the retry sends it again
        self.keys[(tenant_id, idempotency_key)] = ("P", fingerprint, b"")
        if launch:
            self.launched.update((c, tenant_id) for c in campaign_ids)
        return GateResult("ok", foreign=foreign)

    def _exists(self, campaign_id: str, tenant_id: str) -> bool:
        row = self.readmodel.campaigns.get(campaign_id)
        if row is not None and row.tenant_id:
            return row.tenant_id == tenant_id
        return (campaign_id, tenant_id) in self.launched

    def _take(self, key_hash: str, cost: int) -> int:
        """Take ``cost`` tokens: 0, or ms until there are enough."""
        now = time.monotonic()
        tokens, at = self.buckets.get(key_hash, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < cost:
            self.buckets[key_hash] = (tokens, now)
            return max(1, math.ceil((min(cost, self.burst) - tokens) * 1000 / self.rate))
        self.buckets[key_hash] = (tokens - cost, now)
        return 0

    async def charge(self, *, key_hash: str, cost: int = 1) -> int:
        self.readmodel._reach()
        return self._take(key_hash, cost)

    def complete(
        self,
        *,
        tenant_id: str,
        idempotency_key: str,
        fingerprint: str,
        status: int,
        body: bytes,
        pending_pledges: Sequence[PendingPledge] = (),
    ) -> None:
        self.keys[(tenant_id, idempotency_key)] = ("D", fingerprint, b"%03d" % status + body)
        for campaign_id, pledge_id, doc in pending_pledges:
            if (campaign_id, pledge_id) not in self.readmodel.pledges:
                self.readmodel.pledges[(campaign_id, pledge_id)] = PledgeRow(
                    status="pending",
                    doc=orjson.loads(doc),
                    refusal=None,
                    pending_since=int(time.time() * 1000),
                )

    async def unsent(self, *, tenant_id: str, idempotency_key: str, fingerprint: str) -> None:
        self.readmodel._reach()
        if self.keys.get((tenant_id, idempotency_key)) == ("P", fingerprint, b""):
            self.keys[(tenant_id, idempotency_key)] = ("R", fingerprint, b"")

    async def ready(self) -> bool:
        return not self.readmodel.down


@dataclass
class FakePaymentTokens:
    """The erasable token store: ``pledge key -> token``."""

    tokens: dict[str, str] = field(default_factory=dict)
    #: known down before anything is sent: every append raises at once
    down: bool = False
    #: the next ``lost`` appends are sent but never acknowledged (their commands may be)
    lost: int = 0
    #: set: an append is acknowledged only once it is set (the commands are not held)
    hold: asyncio.Event | None = None
    #: every append, acknowledged or not, in order (a retry appends the same pairs again)
    appends: list[list[tuple[str, str]]] = field(default_factory=list)
    _settling: set[asyncio.Future[None]] = field(default_factory=set, repr=False)

    async def put(self, tokens: Sequence[tuple[str, str]]) -> None:
        await self.stage(tokens)

    def stage(self, tokens: Sequence[tuple[str, str]]) -> asyncio.Future[None]:
        if self.down:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")
        pairs = list(tokens)
        self.appends.append(pairs)
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lost = self.lost > 0
        if lost:
            self.lost -= 1

        async def settle() -> None:
            if self.hold is not None:
                await self.hold.wait()
            if lost:
                acked.set_exception(TimeoutError("the broker did not acknowledge the token"))
            else:
                self.tokens.update(pairs)
                acked.set_result(None)

        if self.hold is None and not lost:
            self.tokens.update(pairs)
            acked.set_result(None)
        else:
            self._settling.add(asyncio.ensure_future(settle()))
        return acked


@dataclass
class FakeSettlementReads:
    """The settlement read model: summaries, payment records, decisions on commands."""

    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: False: the projector is rebuilding the read model (its epoch marker is absent).
    is_whole: bool = True

    async def summary(self, campaign_id: str) -> dict[str, Any] | None:
        return self.summaries.get(campaign_id)

    async def payment(self, campaign_id: str, pledge_id: str) -> dict[str, Any] | None:
        return self.payments.get((campaign_id, pledge_id))

    async def decision(self, command_id: str) -> dict[str, Any] | None:
        return self.decisions.get(command_id)

    async def whole(self) -> bool:
        return self.is_whole


@dataclass
class FakePorts:
    """One set of fakes sharing one "Redis"; :meth:`opened` is ``create_app``'s ``ports``."""

    readmodel: FakeReadModel = field(default_factory=FakeReadModel)
    bus: FakeCommandLog = field(default_factory=FakeCommandLog)
    tokens: FakePaymentTokens = field(default_factory=FakePaymentTokens)
    settlement_bus: FakeCommandLog = field(default_factory=FakeCommandLog)
    settlement: FakeSettlementReads = field(default_factory=FakeSettlementReads)
    gate: FakeIngestGate = field(init=False)

    def __post_init__(self) -> None:
        self.gate = FakeIngestGate(self.readmodel)
        self.readmodel.payments = self.settlement.payments

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[IngestPorts]:
        yield IngestPorts(
            bus=self.bus,
            gate=self.gate,
            decisions=self.readmodel,
            reads=self.readmodel,
            tokens=self.tokens,
            settlement=SettlementPorts(commands=self.settlement_bus, reads=self.settlement),
        )
