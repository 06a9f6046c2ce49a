"""The ports of the ingest API: what its handlers need from the outside, as small protocols.

The handlers (:mod:`services.pledge.api.ingest`) see only these. Production plugs in the
Kafka and Redis adapters (``services.pledge.adapters``); unit tests plug in in-memory fakes
(``tests/unit/pledge/api/fakes.py``), so every handler rule is tested without servers, and
the integration tests prove the real adapters. A protocol costs nothing per call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.pledge.adapters.redis_readmodel import CampaignRow, PledgeRow
from services.settlement.api_ports import SettlementPorts

__all__ = [
    "CommandLog",
    "DecisionReader",
    "GateResult",
    "IngestGate",
    "IngestPorts",
    "PaymentTokenStore",
    "PendingPledge",
    "ReadModelReader",
]


@dataclass(frozen=True, slots=True)
class GateResult:
    """What the gate decided: ``ok`` (reserved), ``replay``, ``in_progress``, ``mismatch``,
    ``not_found``, ``rate_limited``, ``rebuilding`` (a campaign is missing while the read model is
    not whole: 503, not a false 404)."""

    outcome: str
    #: ``replay``: the stored response (3-digit status + body).
    stored: bytes = b""
    #: ``rate_limited``: milliseconds until a token is available.
    retry_after_ms: int = 0
    #: ``ok`` with ``many``: 0-based positions of the campaigns that do not exist for the
    #: caller's tenant (never launched, or another tenant's: the same answer).
    foreign: tuple[int, ...] = ()


#: A pending pledge row to write with a stored response: campaign id, pledge id, row JSON.
PendingPledge = tuple[str, str, bytes]


class CommandLog(Protocol):
    """Appends commands to ``pledge-commands`` durably (``acks=all``); key = campaign id."""

    async def send(self, campaign_id: str, value: bytes) -> None:
        """Append one command; returns once every in-sync replica has it."""
        ...

    async def send_all(self, commands: Sequence[tuple[str, bytes]]) -> None:
        """Append many commands (each whole or not at all); raises the first error."""
        ...

    async def ready(self) -> bool:
        """True when the log answers."""
        ...


class PaymentTokenStore(Protocol):
    """Where a pledge's payment token goes instead of the immutable log: an erasable store
    keyed by the pledge (``<tenant>/<campaign>/<pledge>``), read by settlement."""

    async def put(self, tokens: Sequence[tuple[str, str]]) -> None:
        """Store ``(pledge key, token)`` pairs durably; raises if any is not stored."""
        ...

    def stage(self, tokens: Sequence[tuple[str, str]]) -> Awaitable[Any]:
        """Start storing ``(pledge key, token)`` pairs now and return what to await for their
        acknowledgement (raises, if any is not stored): a command sent before the caller next
        yields shares their Kafka round trip. Raises at once, having sent nothing, when the
        store is known to be unable to take them."""
        ...


class IngestGate(Protocol):
    """The per-request gate of writes (rate limit, campaign ownership, Idempotency-Key
    reservation, atomically) and the stored responses replayed to retries."""

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
        """Rate limit (``cost`` tokens) + existence + reservation. Every campaign must exist
        for ``tenant_id`` (projected as its own, or its launch accepted) or the answer is
        ``not_found``; ``many``: missing campaigns are reported in ``foreign`` instead;
        ``launch``: nothing needs to exist, and the campaigns are marked as launched."""
        ...

    async def charge(self, *, key_hash: str, cost: int = 1) -> int:
        """Take ``cost`` tokens of the key's bucket (a read, or a request refused before the
        gate): 0, or the milliseconds until they are available."""
        ...

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
        """Store the response for replays and write the pending pledge rows (a row already
        decided is left alone). Queued, not awaited: the command is already in the log."""
        ...

    async def unsent(self, *, tenant_id: str, idempotency_key: str, fingerprint: str) -> None:
        """Mark a reservation whose command was not acknowledged as retryable: a retry with
        the same fingerprint is let through at once (it re-sends the same command), another
        fingerprint is still a mismatch. Kept for the idempotency TTL."""
        ...

    async def ready(self) -> bool:
        """True when the store answers."""
        ...


class DecisionReader(Protocol):
    """The read model's record of what the processor decided on a command (``Prefer: wait``)."""

    async def decision(self, command_id: str) -> dict[str, Any] | None:
        """``{"outcome": "accepted"|"refused", "seq", ...}``, or None while undecided."""
        ...


class ReadModelReader(Protocol):
    """The read model's rows behind the GET routes and the listings (whose order never
    changes under a cursor: ids sort lexically, events by seq)."""

    async def campaign(self, campaign_id: str) -> CampaignRow | None: ...

    async def pledge(self, campaign_id: str, pledge_id: str) -> PledgeRow | None: ...

    async def campaign_page(
        self, tenant_id: str, status: str, after: str, limit: int
    ) -> tuple[list[CampaignRow], str | None]:
        """The tenant's campaigns with ``status`` (or ``all``) after id ``after``, in id
        order, and the id to resume after (None: no more)."""
        ...

    async def pledge_page(
        self, campaign_id: str, status: str, after: str, limit: int
    ) -> tuple[list[PledgeRow], str | None]:
        """The campaign's pledges with ``status`` (or ``all``) after id ``after``, in id
        order, and the id to resume after (None: no more)."""
        ...

    async def event_page(
        self, campaign_id: str, after_seq: int, limit: int
    ) -> tuple[list[bytes], int | None]:
        """The campaign's events after ``after_seq`` as stored JSON, in seq order, and the
        seq to resume after (None: no more yet)."""
        ...


@dataclass(frozen=True, slots=True)
class IngestPorts:
    """Everything the handlers talk to."""

    bus: CommandLog
    gate: IngestGate
    decisions: DecisionReader
    reads: ReadModelReader
    #: None: tokens travel inside the commands and events (before issue 12; tests only).
    tokens: PaymentTokenStore | None = None
    #: The settlement routes' command log and read model (None: those routes answer 503).
    settlement: SettlementPorts | None = None
