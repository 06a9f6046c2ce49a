"""The processor's decisions on commands, read from the read model (for ``Prefer: wait``).

The projector writes ``rm:d:<command_id>`` when it applies a command's first event; a waiting
request polls it. The reads share the API's :class:`AutoPipeline` connection (one round trip
for every request polling in the same loop iteration) but only read the read model: they are
the API's :class:`~services.pledge.api.ports.DecisionReader`, not part of the ingest gate.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.pledge.adapters.redis_pipeline import AutoPipeline
from services.pledge.adapters.redis_readmodel import Keys

__all__ = ["RedisDecisions"]


class RedisDecisions:
    """``decision(command_id)`` from the read model of one namespace."""

    def __init__(self, pipeline: AutoPipeline, keys: Keys) -> None:
        self.pipeline = pipeline
        self.keys = keys

    async def decision(self, command_id: str) -> dict[str, Any] | None:
        raw = await self.pipeline.execute("GET", self.keys.decision(command_id))
        if raw is None:
            return None
        decision: dict[str, Any] = orjson.loads(raw)
        return decision
