"""Settings of the API process (env prefix ``PLEDGEFLOW_``; the same variable names as before).

Extends the stream processes' :class:`~services.streams.config.StreamSettings` (Kafka, Redis,
topic prefix, partitions). Built once at the entry point and passed down. ``create_app`` also
accepts the service-wide ``PledgeSettings`` (tests and older callers build that) and keeps the
fields it needs.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from services.streams.config import StreamSettings

__all__ = ["ApiSettings", "api_settings"]


class ApiSettings(StreamSettings):
    """What the ingest API process needs to know about its surroundings."""

    #: ``tenant:key`` pairs, comma separated; keys are hashed (SHA-256) when loaded.
    api_keys: str = ""
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    #: uvicorn worker processes of ``pledgeflow api run``.
    api_workers: int = Field(default=1, ge=1)
    #: ASGI server of ``pledgeflow api run``: ``uvicorn`` (uvloop + httptools) or ``granian``.
    api_server: Literal["uvicorn", "granian"] = "uvicorn"
    #: Largest request body accepted (bytes); larger answers 413.
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Token bucket per API key: sustained requests per second and burst size.
    api_rate_per_second: float = Field(default=20_000.0, gt=0)
    api_rate_burst: int = Field(default=40_000, ge=1)
    #: How long a finished request's response is replayed for the same Idempotency-Key.
    api_idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    #: How long an in-flight request holds its Idempotency-Key (a crashed request frees it).
    api_idempotency_lock_seconds: int = Field(default=30, ge=1)
    #: Longest wait for the broker's acknowledgement of a command: past it the write answers
    #: 503 with Retry-After and keeps its Idempotency-Key for a retry of the same request.
    api_send_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    #: A pledge still pending this long after its command was appended is shown ``expired``
    #: (``reason: no_decision``): the processor recorded no decision for it in time. It turns
    #: into the decision if one comes later.
    api_pending_expiry_seconds: int = Field(default=3600, ge=1)
    #: Upper bound of ``Prefer: wait=N``.
    api_max_wait_seconds: int = Field(default=10, ge=0, le=60)
    #: Least time between two produce requests of one API process (ms). 0 (the default) is
    #: group commit: a command is sent at once when no produce request is in flight, else it
    #: joins the next one, sent as soon as the one in flight is acknowledged (one in flight at
    #: a time, so the rate is bounded by the broker's latency). A floor above 0 caps the
    #: produce-request rate further, at the cost of latency: with 4 ms, closed-loop req/s at 64
    #: connections was a median 15% lower (0 won 11 of 15 interleaved pairs) and p99 higher,
    #: but at a fixed 2,000 req/s 4 ms cost less API CPU per request (more records share each
    #: produce request): see bench/README.md.
    api_produce_interval_ms: float = Field(default=0.0, ge=0, le=1000)
    #: Most items in one ``POST /v1/pledges/batch``.
    api_batch_max_items: int = Field(default=1000, ge=1)
    #: Key of the listing cursors' HMAC; every replica must share it. Unset: derived from
    #: ``api_keys`` (already a secret every replica shares).
    api_cursor_secret: SecretStr | None = None

    def cursor_key(self) -> bytes:
        """The HMAC key of listing cursors."""
        if self.api_cursor_secret is not None:
            return self.api_cursor_secret.get_secret_value().encode()
        return hashlib.sha256(b"pledgeflow listing cursors\n" + self.api_keys.encode()).digest()


def api_settings(settings: BaseModel | None = None) -> ApiSettings:
    """``settings`` as :class:`ApiSettings`: read from the environment when None, taken as
    is when already one, else its same-named fields (e.g. of ``PledgeSettings``)."""
    if settings is None:
        return ApiSettings()
    if isinstance(settings, ApiSettings):
        return settings
    values = settings.model_dump(include=set(ApiSettings.model_fields))
    return ApiSettings(**values)
