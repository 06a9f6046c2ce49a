"""Settings of the settlement worker: one pydantic-settings class, env prefix ``PLEDGEFLOW_``,
built once at the entry point and passed down."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from services.settlement.domain import Policy
from services.streams import StreamSettings

__all__ = ["SettlementSettings", "parse_schedule"]

_STEP = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}


def parse_schedule(text: str) -> tuple[timedelta, ...]:
    """``"1d,3d,7d"`` -> offsets; units ms, s, m, h, d; ValueError names the bad step."""
    steps: list[timedelta] = []
    for part in text.split(","):
        match = _STEP.match(part)
        if match is None:
            raise ValueError(f"retry schedule step {part.strip()!r} is not <number><ms|s|m|h|d>")
        steps.append(int(match.group(1)) * _UNITS[match.group(2)])
    return tuple(steps)


class SettlementSettings(StreamSettings):
    """Everything the settlement worker needs to know about its surroundings (Kafka, Redis,
    topic prefix, partitions and the metrics server come from :class:`StreamSettings`)."""

    #: Consumer group (and transactional id prefix) of the settlement worker.
    settlement_group: str = "settlement"
    #: ``sandbox`` (Redis, test tokens; the default of ``make run`` and the tests) or
    #: ``stripe`` (the official SDK; needs ``stripe_api_key``).
    gateway: Literal["sandbox", "stripe"] = "sandbox"
    #: Simulated latency of every sandbox call, and the extra delay of ``tok_slow``.
    sandbox_latency_ms: float = Field(default=0.0, ge=0)
    sandbox_slow_ms: float = Field(default=2000.0, ge=0)
    #: Key prefix of the sandbox's Redis state.
    sandbox_prefix: str = "pledgeflow:sandbox:"
    stripe_api_key: str = ""
    #: Stripe API base URL (stripe-mock locally); empty = Stripe's.
    stripe_api_base: str = ""
    #: Retries after a failed capture, from the first failure (``PLEDGEFLOW_SETTLEMENT_
    #: RETRY_SCHEDULE=10s,30s,1m`` shortens it for demos).
    settlement_retry_schedule: str = "1d,3d,7d"
    #: Gateway calls in flight, overall and per campaign (bounded memory, fair share).
    settlement_max_in_flight: int = Field(default=512, ge=1)
    settlement_max_in_flight_per_campaign: int = Field(default=64, ge=1)
    #: Longest wait of one loop turn (also how late a due retry may start).
    settlement_tick_seconds: float = Field(default=0.2, gt=0)
    #: Static group membership id of this worker (e.g. the pod name): a restarted worker takes
    #: its partitions back at once instead of after a session timeout and a rebalance. Two
    #: workers must never share one.
    settlement_instance_id: str | None = None
    #: Consumer group session timeout (how soon a dead or frozen worker's partitions move).
    settlement_session_timeout_ms: int = Field(default=10_000, ge=1000)

    #: Consumer group of the settlement read-model projector (``pledgeflow settlement
    #: readmodel run``) on the settlement stream.
    settlement_readmodel_group: str = "settlement-readmodel"
    #: How long the projector keeps a settlement command's decision for ``Prefer: wait``.
    settlement_decision_ttl_seconds: int = Field(default=600, ge=1)
    #: Static group membership id of the read-model projector (e.g. the pod name), as
    #: ``settlement_instance_id``; ``settlement readmodel rebuild`` joins without it.
    settlement_readmodel_instance_id: str | None = None
    #: Its consumer group session timeout.
    settlement_readmodel_session_timeout_ms: int = Field(default=10_000, ge=1000)

    @field_validator("settlement_retry_schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        Policy(retry_schedule=parse_schedule(value))
        return value

    def policy(self) -> Policy:
        """The domain's policy from these settings."""
        return Policy(retry_schedule=parse_schedule(self.settlement_retry_schedule))
