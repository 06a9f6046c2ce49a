"""Adapters of the registration ports: compacted topics (Kafka), endpoint view (Redis)."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from services.notify.directory import endpoint_value, parse_endpoint
from services.notify.domain import WebhookEndpoint

__all__ = ["KafkaRegistrationLog", "RedisEndpointView"]


class KafkaRegistrationLog:
    """Writes registration records with the caller's (idempotent, acks=all) producer."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def put(self, topic: str, key: str, value: bytes | None) -> None:
        await self._producer.send_and_wait(topic, key=key.encode(), value=value)


class RedisEndpointView:
    """One hash per tenant: endpoint id -> endpoint record (the topic's value)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "") -> None:
        self._r = client
        self._key = f"{prefix}notify:endpoints:"

    async def save(self, endpoint: WebhookEndpoint) -> None:
        await self._r.hset(
            self._key + endpoint.tenant_id, endpoint.endpoint_id, endpoint_value(endpoint)
        )

    async def remove(self, tenant_id: str, endpoint_id: str) -> None:
        await self._r.hdel(self._key + tenant_id, endpoint_id)

    async def all(self, tenant_id: str) -> list[WebhookEndpoint]:
        values = await self._r.hvals(self._key + tenant_id)
        return sorted((parse_endpoint(v) for v in values), key=lambda e: e.endpoint_id)

    async def get(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        value = await self._r.hget(self._key + tenant_id, endpoint_id)
        return parse_endpoint(value) if value is not None else None
