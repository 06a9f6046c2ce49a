"""The ports the API's settlement routes need, as small protocols (Kafka and Redis adapters in
production, in-memory fakes in the unit tests). Imports nothing of the API package, so
``services.pledge.api.ports`` can carry them in ``IngestPorts.settlement``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["SettlementCommandLog", "SettlementPorts", "SettlementReads"]


class SettlementCommandLog(Protocol):
    """Appends commands to ``settlement-commands`` durably (``acks=all``); key = campaign."""

    async def send(self, campaign_id: str, value: bytes) -> None: ...

    async def send_all(self, commands: Sequence[tuple[str, bytes]]) -> None: ...

    async def ready(self) -> bool: ...


class SettlementReads(Protocol):
    """The settlement read model (``services.settlement.adapters.redis_readmodel``)."""

    async def summary(self, campaign_id: str) -> dict[str, Any] | None:
        """The campaign's settlement summary, or None before its first settlement event."""
        ...

    async def payment(self, campaign_id: str, pledge_id: str) -> dict[str, Any] | None:
        """The pledge's payment record, or None while settlement has recorded nothing."""
        ...

    async def whole(self) -> bool:
        """False while the read model is being rebuilt (its projector's epoch marker is
        absent): a missing summary then means "not projected yet", not "none"."""
        ...

    async def decision(self, command_id: str) -> dict[str, Any] | None:
        """The worker's decision on a settlement command (``Prefer: wait``), or None."""
        ...


@dataclass(frozen=True, slots=True)
class SettlementPorts:
    """What the settlement routes talk to."""

    commands: SettlementCommandLog
    reads: SettlementReads
